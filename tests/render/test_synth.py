"""The built-in synthesizer, checked by analysing what it plays: pitch, onsets, silence, level, determinism."""

from __future__ import annotations

import mir_eval
import numpy as np
import pytest
import soundfile
import torch
from render_support import score_of, track_of
from symusic import Tempo

from lyria.config import ConfigError
from lyria.render import synth as synth_module
from lyria.render.audio import WavRenderer
from lyria.render.synth import DRUM_VOICES, FAMILY_VOICES, Synthesizer, voice_ids
from lyria.data.notes import notes_from_score

RATE = 16000  # low enough to keep the tests quick, high enough for every pitch checked here


@pytest.fixture(scope="module")
def dry():
    return Synthesizer(sample_rate=RATE, reverb=0.0)


def spectrum(wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.fft.rfftfreq(len(wave), 1 / RATE), np.abs(np.fft.rfft(wave))


def detect_onsets(wave: np.ndarray, window: float = 0.01, hop: int = 8) -> np.ndarray:
    """Onsets (s) from the waveform alone: peaks of the energy novelty, the log ratio of the energy in the
    window after a point to the energy in the window before it."""
    size = int(window * RATE)
    cumulative = np.concatenate([[0.0], np.cumsum(wave.astype(np.float64) ** 2)])
    points = np.arange(size, len(wave) - size, hop)
    before = cumulative[points] - cumulative[points - size]
    after = cumulative[points + size] - cumulative[points]
    novelty = 10 * np.log10((after + 1e-12) / (before + 1e-12))
    audible = after > 1e-6 * after.max()
    peaks = [i for i in range(1, len(points) - 1) if audible[i] and novelty[i] > 20 and novelty[i] >= novelty[i - 1] and novelty[i] > novelty[i + 1]]
    return points[peaks] / RATE


@pytest.mark.parametrize("family", list(FAMILY_VOICES))
def test_a4_sounds_at_440_hz_in_every_program_family(dry, family):
    program = list(FAMILY_VOICES).index(family) * 8
    wave = dry.synthesize([score_of(track_of([(0, 4, 69)], program=program))])[0]
    frequencies, magnitude = spectrum(wave[: 2 * RATE])
    assert abs(frequencies[magnitude.argmax()] - 440.0) <= frequencies[1], family


def test_no_partial_at_or_above_nyquist_aliases_back(dry):
    """C7 (2093 Hz) at 16 kHz: only harmonics 1-3 fit under 8 kHz; any other would fold back between them."""
    wave = dry.synthesize([score_of(track_of([(0, 4, 96)], program=80))])[0]  # a square-ish synth lead, rich in partials
    frequencies, magnitude = spectrum(wave[RATE // 2 : 3 * RATE // 2] * np.hanning(RATE))  # a steady second
    f0 = 440.0 * 2 ** ((96 - 69) / 12)
    near_harmonic = np.abs(frequencies / f0 - np.round(frequencies / f0)) * f0 < 20
    assert magnitude[~near_harmonic].max() < 1e-5 * magnitude.max()  # below -100 dB


def test_onsets_found_on_the_waveform_sit_where_the_midi_says(dry):
    onsets_beats = [0.5, 1.37, 2.0, 3.11, 4.0, 5.5, 6.25]
    melody = track_of([(beat, 0.3, 60 + 3 * i) for i, beat in enumerate(onsets_beats)], program=0)
    score = score_of(melody, qpm=100)
    score.tempos.append(Tempo(4 * 480, qpm=75))  # the synthesizer follows the tempo map
    expected = notes_from_score(score).notes["start"]
    assert expected[-1] == pytest.approx(4 * 0.6 + 2.25 * 0.8)
    detected = detect_onsets(dry.synthesize([score])[0])
    f_measure, _, _ = mir_eval.onset.f_measure(expected, detected, window=0.005)
    assert f_measure == 1.0, (expected, detected)
    assert np.abs(detected - expected).max() < 0.005


def test_silence_is_silent(dry):
    score = score_of(track_of([(1, 0.5, 60), (8, 0.5, 64)], program=0))  # notes at 0.5 s and 4 s
    wave = dry.synthesize([score])[0]
    assert np.all(wave[: int(0.5 * RATE) - 1] == 0.0)
    gap = wave[int(1.5 * RATE) : int(3.9 * RATE)]  # after the first note's 0.25 s release
    assert np.sqrt(np.mean(gap**2)) < 1e-4 * np.abs(wave).max()
    empty = score_of(track_of([]))
    assert dry.synthesize([empty])[0].size == 0


def test_reverb_tail_fades_to_silence():
    synth = Synthesizer(sample_rate=RATE, reverb=0.5, reverb_seconds=0.5)
    wave = synth.synthesize([score_of(track_of([(0, 0.5, 60)]))])[0]
    end_of_note = int((0.25 + 0.25) * RATE)
    tail = wave[end_of_note:]
    assert len(tail) == pytest.approx(0.51 * RATE, abs=2)  # the impulse response, pre-delay included
    assert np.abs(tail[: int(0.1 * RATE)]).max() > 1e-3 * np.abs(wave).max()  # the reverb is heard
    assert np.abs(tail[-int(0.05 * RATE) :]).max() < 3e-3 * np.abs(wave).max()  # and dies away


def test_written_wav_is_normalised_and_never_clips(tmp_path, dry):
    cluster = track_of([(0, 2, pitch) for pitch in range(36, 96)], velocity=127)  # sixty notes at full velocity
    path = tmp_path / "loud.wav"
    WavRenderer(dry, peak_db=-1.0).write(score_of(cluster, track_of([(0, 1, 36)], is_drum=True)), path)
    samples, rate = soundfile.read(str(path), dtype="int16")
    assert rate == RATE
    peak = np.abs(samples.astype(np.int32)).max()
    assert peak == pytest.approx(32767 * 10 ** (-1 / 20), abs=2)
    assert peak < 32767


def test_same_scores_same_samples_and_batching_changes_nothing(dry, duet):
    drums = score_of(track_of([(beat / 2, 0.25, (36, 42, 38, 46)[beat % 4]) for beat in range(16)], is_drum=True))
    first = dry.synthesize([duet, drums])
    again = dry.synthesize([duet, drums])
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    alone = dry.synthesize([drums])[0]
    assert len(alone) == len(first[1])
    np.testing.assert_allclose(alone, first[1], atol=1e-6)


def test_long_batches_are_split_without_changing_the_sound(dry, duet, monkeypatch):
    pieces = [duet, score_of(track_of([(0, 2, 57)])), duet]
    together = dry.synthesize(pieces)
    monkeypatch.setattr(synth_module, "BATCH_SECONDS", 35.0)  # the duet lasts about 16 s: two fit, three do not
    assert [len(batch) for batch in dry._batches([notes_from_score(p) for p in pieces])] == [2, 1]
    for whole, split in zip(together, dry.synthesize(pieces)):
        np.testing.assert_allclose(split, whole, atol=1e-6)


def test_louder_velocities_play_louder(dry):
    levels = [np.abs(dry.synthesize([score_of(track_of([(0, 1, 60)], velocity=v))])[0]).max() for v in (30, 70, 120)]
    assert levels[0] < levels[1] < levels[2]


@pytest.mark.parametrize("key,band", [(36, (0, 400)), (42, (4000, 8000))], ids=["kick", "closed_hat"])
def test_drums_are_noise_bursts_in_their_band(dry, key, band):
    wave = dry.synthesize([score_of(track_of([(0, 0.25, key)], is_drum=True))])[0]
    frequencies, magnitude = spectrum(wave)
    in_band = (frequencies >= band[0]) & (frequencies < band[1])
    assert (magnitude[in_band] ** 2).sum() > 0.8 * (magnitude**2).sum()
    assert len(wave) < RATE  # a short burst whatever the note's length


def test_every_drum_key_and_program_has_a_voice():
    notes = notes_from_score(score_of(track_of([(0, 1, p) for p in range(128)]), track_of([(0, 1, p) for p in range(128)], is_drum=True))).notes
    voices = voice_ids(notes)
    assert set(voices[~notes["is_drum"]]) == {0}
    assert set(voices[notes["is_drum"]]) == set(range(len(FAMILY_VOICES), len(FAMILY_VOICES) + len(DRUM_VOICES)))


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="render.sample_rate=4000"):
        Synthesizer(sample_rate=4000)
    with pytest.raises(ConfigError, match="reverb=1.5"):
        Synthesizer(reverb=1.5)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="render.device=cuda"):
            Synthesizer(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_gpu_plays_what_the_cpu_plays(duet):
    cpu = Synthesizer(sample_rate=RATE).synthesize([duet])[0]
    gpu = Synthesizer(sample_rate=RATE, device="cuda").synthesize([duet])[0]
    assert len(cpu) == len(gpu)
    np.testing.assert_allclose(gpu, cpu, atol=1e-4 * np.abs(cpu).max())
