"""The `fluidsynth` audio backend: the system's FluidSynth plays each piece through a General MIDI SoundFont."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import soundfile
from symusic import Score

from lyria.config import ConfigError
from lyria.render.audio import AUDIO_BACKENDS, AudioBackend

# Where Debian's fluid-soundfont-gm (and the sound-font alternatives system) put a GM SoundFont.
DEFAULT_SOUNDFONTS = ("/usr/share/sounds/sf2/default-GM.sf2", "/usr/share/sounds/sf2/FluidR3_GM.sf2")
INSTALL_HINT = "install it with scripts/install_system_deps.sh (Debian packages fluidsynth, fluid-soundfont-gm)"


def find_soundfont(soundfont: str | None = None) -> Path | None:
    """The given SoundFont when it exists, else the first system GM SoundFont found, else None."""
    candidates = [soundfont] if soundfont else DEFAULT_SOUNDFONTS
    return next((Path(path) for path in candidates if Path(path).is_file()), None)


@AUDIO_BACKENDS.register("fluidsynth")
class FluidSynth(AudioBackend):
    def __init__(self, sample_rate: int = 44100, soundfont: str | None = None, gain: float = 0.5, timeout_s: float = 300) -> None:
        program = shutil.which("fluidsynth")
        if program is None:
            raise ConfigError(f"render.backend=fluidsynth: the fluidsynth program is not on PATH; {INSTALL_HINT}, or use render.backend=synth")
        found = find_soundfont(soundfont)
        if found is None:
            where = f"render.fluidsynth.soundfont={soundfont}: no such file" if soundfont else f"no General MIDI SoundFont in {list(DEFAULT_SOUNDFONTS)}"
            raise ConfigError(f"{where}; {INSTALL_HINT}, or give render.fluidsynth.soundfont=FILE.sf2")
        self.program, self.soundfont = program, found
        self.sample_rate, self.gain, self.timeout_s = sample_rate, gain, timeout_s

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> FluidSynth:
        return cls(sample_rate=settings["sample_rate"], **settings["fluidsynth"])

    def synthesize(self, scores: Sequence[Score]) -> list[np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="lyria-fluidsynth-") as folder:
            return [self._play(score, Path(folder) / f"piece{i}") for i, score in enumerate(scores)]

    def _play(self, score: Score, stem: Path) -> np.ndarray:
        midi, wav = stem.with_suffix(".mid"), stem.with_suffix(".wav")
        score.dump_midi(str(midi))
        command = [self.program, "-ni", "-q", "-g", str(self.gain), "-r", str(self.sample_rate), "-T", "wav", "-F", str(wav), str(self.soundfont), str(midi)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"fluidsynth took longer than render.fluidsynth.timeout_s={self.timeout_s}") from err
        if done.returncode != 0 or not wav.is_file():
            detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"fluidsynth exited with {done.returncode} and no WAV: {' | '.join(detail)}")
        wave, rate = soundfile.read(str(wav), dtype="float32")
        if rate != self.sample_rate:
            raise RuntimeError(f"fluidsynth wrote {rate} Hz, not the {self.sample_rate} Hz asked for")
        return wave
