"""The `synth` audio backend: note events -> frame-rate controls -> band-limited harmonic oscillators (noise bursts
for drums) -> ADSR -> biquad filters -> FFT reverb, batched over pieces and notes as tensors on any device."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from symusic import Score

from lyria.config import ConfigError
from lyria.data.notes import PieceNotes, notes_from_score
from lyria.render.audio import AUDIO_BACKENDS, AudioBackend

SIXTY_DB = math.log(1000.0)  # time constants to fall by 60 dB
VIBRATO_HZ = 5.5
VIBRATO_DELAY_S = 0.25  # vibrato fades in over this long after a delay of the same length, as players do


@dataclass(frozen=True)
class Voice:
    """How one General MIDI program family (or one drum class) sounds; each voice has its own filter bus."""

    attack: float  # seconds from silence to full level
    decay: float  # time constant (s) of the fall from full level towards `sustain`
    sustain: float  # level held while the key is down, 0-1
    release: float  # seconds from key-up to -60 dB
    filter: Callable[..., torch.Tensor]  # a torchaudio.functional biquad: (waveform, sample_rate, freq, Q)
    cutoff: float  # the filter's cutoff or centre frequency, Hz
    q: float = 0.707
    rolloff: float = 1.0  # harmonic k has amplitude k ** -rolloff, so the fundamental is always the strongest
    even_gain: float = 1.0  # even harmonics scaled by this: 0 gives odd harmonics only (clarinet, square lead)
    vibrato_cents: float = 0.0
    noise: bool = False  # a one-shot noise burst (drums): the note's length does not matter


LOW, HIGH, BAND = AF.lowpass_biquad, AF.highpass_biquad, AF.bandpass_biquad

# One voice per GM program family (program // 8), in GM order.
FAMILY_VOICES: dict[str, Voice] = {
    "piano": Voice(0.003, 1.0, 0.0, 0.25, LOW, 5000, rolloff=1.5),
    "chromatic_percussion": Voice(0.002, 0.6, 0.0, 0.3, LOW, 8000, rolloff=2.5),
    "organ": Voice(0.01, 0.05, 1.0, 0.08, LOW, 6000, rolloff=1.0),
    "guitar": Voice(0.003, 0.9, 0.1, 0.2, LOW, 4000, rolloff=1.6),
    "bass": Voice(0.005, 0.6, 0.4, 0.1, LOW, 1500, rolloff=1.8),
    "strings": Voice(0.08, 0.2, 0.85, 0.3, LOW, 5000, rolloff=1.0, vibrato_cents=8),
    "ensemble": Voice(0.1, 0.3, 0.8, 0.4, LOW, 3500, rolloff=1.3, vibrato_cents=6),
    "brass": Voice(0.04, 0.15, 0.8, 0.15, LOW, 3500, rolloff=0.9),
    "reed": Voice(0.03, 0.1, 0.85, 0.1, LOW, 4000, rolloff=1.2, even_gain=0.3, vibrato_cents=4),
    "pipe": Voice(0.04, 0.1, 0.9, 0.12, LOW, 5000, rolloff=2.2, even_gain=0.5, vibrato_cents=5),
    "synth_lead": Voice(0.005, 0.1, 0.8, 0.1, LOW, 6000, rolloff=1.0, even_gain=0.0),
    "synth_pad": Voice(0.3, 0.5, 0.8, 0.8, LOW, 2500, rolloff=1.4),
    "synth_effects": Voice(0.1, 0.4, 0.6, 0.6, LOW, 4000, rolloff=1.2),
    "ethnic": Voice(0.003, 0.7, 0.1, 0.2, LOW, 5000, rolloff=1.4),
    "percussive": Voice(0.002, 0.3, 0.0, 0.15, LOW, 6000, rolloff=2.0),
    "sound_effects": Voice(0.02, 0.3, 0.5, 0.3, LOW, 4000, rolloff=1.5),
}

# Drums (GM channel 10) by key: filtered noise bursts.
DRUM_VOICES: dict[str, tuple[Voice, tuple[int, ...]]] = {
    "kick": (Voice(0.001, 0.08, 0.0, 0.0, LOW, 150, noise=True), (35, 36)),
    "snare": (Voice(0.001, 0.06, 0.0, 0.0, BAND, 1800, q=0.8, noise=True), (37, 38, 39, 40)),
    "tom": (Voice(0.001, 0.1, 0.0, 0.0, BAND, 300, q=1.2, noise=True), (41, 43, 45, 47, 48, 50)),
    "closed_hat": (Voice(0.001, 0.02, 0.0, 0.0, HIGH, 7000, noise=True), (42, 44)),
    "open_hat": (Voice(0.001, 0.12, 0.0, 0.0, HIGH, 7000, noise=True), (46,)),
    "crash": (Voice(0.001, 0.35, 0.0, 0.0, HIGH, 5000, noise=True), (49, 52, 55, 57)),
    "ride": (Voice(0.001, 0.2, 0.0, 0.0, HIGH, 6000, noise=True), (51, 53, 59)),
    "other_percussion": (Voice(0.001, 0.04, 0.0, 0.0, BAND, 3000, noise=True), ()),  # every other key
}

VOICES: list[Voice] = list(FAMILY_VOICES.values()) + [voice for voice, _ in DRUM_VOICES.values()]
VOICE_NAMES: list[str] = list(FAMILY_VOICES) + list(DRUM_VOICES)


def _drum_voice_of_key() -> np.ndarray:
    lookup = np.full(128, VOICE_NAMES.index("other_percussion"), dtype=np.int64)
    for name, (_, keys) in DRUM_VOICES.items():
        lookup[list(keys)] = VOICE_NAMES.index(name)
    return lookup


DRUM_VOICE_OF_KEY = _drum_voice_of_key()


def voice_ids(notes: np.ndarray) -> np.ndarray:
    """The voice of every note (NOTE_DTYPE rows): its program family, or its drum class on drum tracks."""
    family = np.clip(notes["program"].astype(np.int64), 0, 127) // 8
    drum = DRUM_VOICE_OF_KEY[np.clip(notes["pitch"].astype(np.int64), 0, 127)]
    return np.where(notes["is_drum"], drum, family)


def _fast_fft_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: FFTs of such lengths are several times faster than of an arbitrary one."""
    best = 1 << max(n - 1, 0).bit_length()
    power5 = 1
    while power5 < best:
        odd = power5
        while odd < best:
            candidate = odd
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            odd *= 3
        power5 *= 5
    return best


BATCH_SECONDS = 600.0  # audio per batch, padded: bounds memory (about 0.1 GB per buffer at 44.1 kHz)
WAVETABLE_SIZE = 2048  # samples per period: linear interpolation error stays near -70 dB for the 48th harmonic
VOICE_PARAMETERS = ("attack", "decay", "sustain", "release", "vibrato_cents")


@dataclass
class _Rows:
    """The notes of a batch of pieces, one row per note: where it goes and the parameters of its controls."""

    start: np.ndarray  # onset, in samples
    length: np.ndarray  # samples, release or decay tail included
    held: np.ndarray  # seconds the key is down
    hz: np.ndarray
    gain: np.ndarray
    brightness: np.ndarray
    pitch: np.ndarray
    voice: np.ndarray
    bus: np.ndarray  # row of the filter bus (one per piece and voice) it is mixed into


@AUDIO_BACKENDS.register("synth")
class Synthesizer(AudioBackend):
    """A small additive synthesizer. On the CPU the same scores give the same samples, bit for bit (CUDA adds
    overlapping notes with atomics, in no fixed order)."""

    def __init__(
        self,
        sample_rate: int = 44100,
        device: str | torch.device = "cpu",
        hop_length: int = 64,
        harmonics: int = 48,
        reverb: float = 0.2,
        reverb_seconds: float = 1.2,
        chunk_samples: int = 1 << 21,
    ) -> None:
        if sample_rate < 8000:
            raise ConfigError(f"render.sample_rate={sample_rate}: use at least 8000 Hz")
        if min(hop_length, harmonics, chunk_samples) < 1:
            raise ConfigError(
                f"render.synth: hop_length={hop_length}, harmonics={harmonics} and chunk_samples={chunk_samples} must be >= 1"
            )
        if not 0.0 <= reverb <= 1.0 or reverb_seconds <= 0:
            raise ConfigError(f"render.synth: reverb={reverb} must lie in [0, 1] and reverb_seconds={reverb_seconds} be > 0")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"render.device={device}: no CUDA device is available here; use cpu")
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.reverb = reverb
        self.chunk_samples = chunk_samples
        self.voice_parameters = torch.tensor([[getattr(v, p) for p in VOICE_PARAMETERS] for v in VOICES], device=self.device)
        k = torch.arange(1, harmonics + 1, dtype=torch.float64)
        table = torch.stack([k**-v.rolloff * torch.where(k % 2 == 0, v.even_gain, 1.0) for v in VOICES])
        self.harmonic_amplitudes = (table / table.sum(1, keepdim=True)).float().to(self.device)  # (voices, K)
        generator = torch.Generator().manual_seed(0)
        longest_burst = max(v.attack + v.decay * SIXTY_DB for v in VOICES if v.noise)
        self.noise = (torch.rand(int(2 * longest_burst * sample_rate), generator=generator) * 2 - 1).to(self.device)
        self.impulse_response = self._impulse_response(reverb_seconds, generator).to(self.device)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Synthesizer:
        return cls(sample_rate=settings["sample_rate"], device=settings["device"], **settings["synth"])

    def _impulse_response(self, seconds: float, generator: torch.Generator) -> torch.Tensor:
        """Exponentially decaying noise reaching -60 dB at `seconds`, after a 10 ms pre-delay; unit energy."""
        t = torch.arange(int(seconds * self.sample_rate)) / self.sample_rate
        tail = (torch.rand(len(t), generator=generator) * 2 - 1) * torch.exp(-SIXTY_DB * t / seconds)
        response = torch.cat([torch.zeros(int(0.01 * self.sample_rate)), tail])
        return response / response.norm()

    def synthesize(self, scores: Sequence[Score]) -> list[np.ndarray]:
        return self.synthesize_notes([notes_from_score(score) for score in scores])

    @torch.inference_mode()
    def synthesize_notes(self, pieces: Sequence[PieceNotes]) -> list[np.ndarray]:
        """Mono float32 waveforms, one per piece, each as long as its last sound (reverb tail included)."""
        waves: list[np.ndarray] = []
        for batch in self._batches(pieces):
            waves.extend(self._synthesize_batch(batch))
        return waves

    def _batches(self, pieces: Sequence[PieceNotes]) -> list[Sequence[PieceNotes]]:
        """Consecutive pieces grouped so that each group, padded to its longest piece, holds at most
        BATCH_SECONDS of audio: memory stays bounded whatever the number and length of the pieces."""
        seconds = [float(piece.notes["end"].max()) if len(piece) else 0.0 for piece in pieces]
        batches, first, longest = [], 0, 0.0
        for i, length in enumerate(seconds):
            if i > first and (i - first + 1) * max(longest, length) > BATCH_SECONDS:
                batches.append(pieces[first:i])
                first, longest = i, 0.0
            longest = max(longest, length)
        return batches + [pieces[first:]] if len(pieces) else batches

    def _synthesize_batch(self, pieces: Sequence[PieceNotes]) -> list[np.ndarray]:
        rows, piece_of_bus, voice_of_bus = self._rows(pieces)
        ends = np.zeros(len(pieces), dtype=np.int64)
        np.maximum.at(ends, piece_of_bus[rows.bus], rows.start + rows.length)
        if not len(rows.start):
            return [np.zeros(0, dtype=np.float32) for _ in pieces]
        width = int(rows.start.max() + rows.length.max()) + self.hop_length  # room for any row padded to whole frames
        loudest = np.bincount(rows.bus, weights=rows.gain, minlength=len(piece_of_bus))  # no note is louder than its gain
        mix = torch.zeros(len(pieces), width, device=self.device)
        for voice_id in np.unique(voice_of_bus):  # one voice at a time: its buses (one per piece) are the only other buffer
            buses = np.flatnonzero(voice_of_bus == voice_id)
            members = np.flatnonzero(rows.voice == voice_id)
            bus_of_row = np.searchsorted(buses, rows.bus)  # meaningful for this voice's rows only
            signal = torch.zeros(len(buses), width, device=self.device)
            for chunk in self._chunks(members, rows.length):
                self._add_notes(signal, rows, chunk, bus_of_row[chunk], VOICES[voice_id].noise, width)
            self._filter(signal, VOICES[voice_id], loudest[buses])
            mix.index_add_(0, torch.from_numpy(piece_of_bus[buses]).to(self.device), signal)
        if self.reverb > 0:
            mix = self._add_reverb(mix)
            ends += len(self.impulse_response) - 1
        mix = mix.cpu().numpy()
        return [mix[i, :end].copy() for i, end in enumerate(ends)]

    def _rows(self, pieces: Sequence[PieceNotes]) -> tuple[_Rows, np.ndarray, np.ndarray]:
        """The note rows, and the piece and voice of each bus."""
        notes = np.concatenate([piece.notes for piece in pieces])
        piece_of = np.concatenate([np.full(len(piece), i, dtype=np.int64) for i, piece in enumerate(pieces)])
        voice = voice_ids(notes)
        attack, decay, release = (np.array([getattr(v, name) for v in VOICES])[voice] for name in ("attack", "decay", "release"))
        held = np.maximum(notes["end"] - notes["start"], 0.0)
        tail = np.where(np.array([v.noise for v in VOICES])[voice], attack + decay * SIXTY_DB, held + release)
        velocity = notes["velocity"] / 127.0
        buses, bus = np.unique(piece_of * len(VOICES) + voice, return_inverse=True)
        rows = _Rows(
            start=np.round(notes["start"] * self.sample_rate).astype(np.int64),
            length=np.maximum(np.ceil(tail * self.sample_rate), 1).astype(np.int64),
            held=held,
            hz=440.0 * 2 ** ((notes["pitch"] - 69) / 12),
            gain=velocity**2,  # velocity 64 sounds about 12 dB below 127, as on most GM synthesizers
            brightness=0.7 + 0.3 * velocity,  # louder notes have stronger upper harmonics
            pitch=notes["pitch"].astype(np.int64),
            voice=voice,
            bus=bus.reshape(-1),
        )
        return rows, buses // len(VOICES), buses % len(VOICES)

    def _chunks(self, members: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        """`members` sorted by length, grouped so that each group padded to its longest row stays under chunk_samples."""
        order = members[np.argsort(lengths[members], kind="stable")]
        chunks, first = [], 0
        for i in range(1, len(order) + 1):
            if i == len(order) or (i - first + 1) * lengths[order[i]] > self.chunk_samples:
                chunks.append(order[first:i])
                first = i
        return chunks

    def _column(self, values: np.ndarray, chunk: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(values[chunk], dtype=torch.float32, device=self.device)[:, None]

    def _controls(self, rows: _Rows, chunk: np.ndarray, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pitch (Hz) and amplitude (ADSR driven by the gate, times the velocity gain) at the control frame rate."""
        attack, decay, sustain, release, vibrato_cents = self.voice_parameters[torch.as_tensor(rows.voice[chunk], device=self.device)].T[..., None]
        held = self._column(rows.held, chunk)
        time = torch.arange(frames, device=self.device, dtype=torch.float32)[None] * (self.hop_length / self.sample_rate)

        def level_while_held(t: torch.Tensor) -> torch.Tensor:
            falling = sustain + (1 - sustain) * torch.exp(-(t - attack).clamp(min=0) / decay)
            return torch.where(t < attack, t / attack, falling)

        gate = time < held
        after_release = level_while_held(held) * torch.exp(-SIXTY_DB * (time - held).clamp(min=0) / release.clamp(min=1e-3))
        envelope = torch.where(gate, level_while_held(time), after_release)
        envelope = envelope * (time < self._column(rows.length, chunk) / self.sample_rate)  # silent past the -60 dB point
        fade_in = ((time - VIBRATO_DELAY_S) / VIBRATO_DELAY_S).clamp(0, 1)
        cents = vibrato_cents * fade_in * torch.sin(2 * math.pi * VIBRATO_HZ * time)
        return self._column(rows.hz, chunk) * torch.exp2(cents / 1200), envelope * self._column(rows.gain, chunk)

    def _add_notes(self, signal: torch.Tensor, rows: _Rows, chunk: np.ndarray, bus_rows: np.ndarray, noise: bool, width: int) -> None:
        """Renders one chunk of note rows, whole control frames long, and adds each into its bus at its onset."""
        frames = -(-int(rows.length[chunk].max()) // self.hop_length) + 1
        span = (frames - 1) * self.hop_length
        hz, level = self._controls(rows, chunk, frames)

        def to_audio_rate(control: torch.Tensor) -> torch.Tensor:
            # controls are smooth, so linear interpolation (not a band-limited resampler) brings them to audio rate
            return F.interpolate(control[:, None], size=span + 1, mode="linear", align_corners=True)[:, 0, :span]

        wave = self._noise_bursts(rows, chunk, span) if noise else self._harmonics(hz, rows, chunk, to_audio_rate)
        start = torch.as_tensor(rows.start[chunk], device=self.device)
        bus = torch.as_tensor(bus_rows, device=self.device)
        index = (bus * width + start)[:, None] + torch.arange(span, device=self.device)[None]
        signal.view(-1).index_add_(0, index.reshape(-1), wave.mul_(to_audio_rate(level)).reshape(-1))

    def _harmonics(self, hz: torch.Tensor, rows: _Rows, chunk: np.ndarray, to_audio_rate: Callable) -> torch.Tensor:
        """Band-limited wavetable oscillators: each note's table holds harmonics 1..K with its voice's amplitudes,
        none at or above Nyquist whatever the vibrato; the phase advances by the pitch control at every sample."""
        k = torch.arange(1, self.harmonic_amplitudes.shape[1] + 1, device=self.device, dtype=torch.float32)
        brightness = self._column(rows.brightness, chunk)
        amplitudes = self.harmonic_amplitudes[torch.as_tensor(rows.voice[chunk], device=self.device)] * brightness ** (k - 1)
        amplitudes = amplitudes * (k * hz.amax(dim=1, keepdim=True) < self.sample_rate / 2)  # linear interpolation never overshoots
        # irfft of -i * N/2 * a_k at bin k is sum_k a_k sin(2 pi k n / N): one period of the note's waveform
        spectrum = torch.zeros(len(chunk), WAVETABLE_SIZE // 2 + 1, dtype=torch.complex64, device=self.device)
        spectrum[:, 1 : len(k) + 1] = -0.5j * WAVETABLE_SIZE * amplitudes
        table = torch.fft.irfft(spectrum, n=WAVETABLE_SIZE)
        table = torch.cat([table, table[:, :1]], dim=1)  # the wrap-around point, for interpolating past the end
        position = self._phase(to_audio_rate(hz * (WAVETABLE_SIZE / self.sample_rate)))
        below = position.long().clamp_(max=WAVETABLE_SIZE - 1)  # a phase a hair below N may round up to N in float32
        return torch.lerp(table.gather(1, below), table.gather(1, below + 1), position - below)

    def _phase(self, steps: torch.Tensor) -> torch.Tensor:
        """The oscillator phase in wavetable samples, wrapped to [0, N), from the steps it advances per sample:
        summed in float32 within each control frame, frame totals carried in float64, so that long notes keep
        their pitch and phase resolution."""
        rows, span = steps.shape
        within = steps.view(rows, -1, self.hop_length).cumsum(-1)
        before = F.pad(within[..., -1].double().cumsum(-1)[:, :-1], (1, 0)).remainder_(WAVETABLE_SIZE).float()
        return within.add_(before[..., None]).remainder_(WAVETABLE_SIZE).view(rows, span)

    def _noise_bursts(self, rows: _Rows, chunk: np.ndarray, length: int) -> torch.Tensor:
        """A slice of a fixed noise table per note, at an offset set by the note itself, so batching does not change it."""
        offsets = (rows.start[chunk] * 7919 + rows.pitch[chunk] * 104729) % max(len(self.noise) - length, 1)
        index = torch.as_tensor(offsets, device=self.device)[:, None] + torch.arange(length, device=self.device)[None]
        return self.noise[index]

    def _filter(self, buses: torch.Tensor, voice: Voice, loudest: np.ndarray) -> None:
        """The voice's biquad on its buses, in float64. lfilter clamps its output to [-1, 1], so each bus is
        filtered divided by a bound on its level (`loudest`, the sum of its notes' gains, times 4 for any
        overshoot of the filter) and scaled back; floating point keeps its precision at any scale."""
        scale = torch.as_tensor(4 * np.maximum(loudest, 1e-12), dtype=torch.float64, device=self.device)[:, None]
        frequency = min(voice.cutoff, 0.45 * self.sample_rate)
        buses.copy_(voice.filter(buses.double().div_(scale), self.sample_rate, frequency, voice.q).mul_(scale))

    def _add_reverb(self, mix: torch.Tensor) -> torch.Tensor:
        response = self.impulse_response
        full = mix.shape[1] + len(response) - 1
        padded = F.pad(mix, (0, _fast_fft_length(full) - full))
        out = AF.fftconvolve(padded, response[None])[:, :full].mul_(self.reverb)
        out[:, : mix.shape[1]] += mix
        return out
