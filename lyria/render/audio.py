"""The `wav` format: an audio backend (`render.backend`: synth, fluidsynth) makes the sound; this module
normalises it to `render.peak_db` and writes 16-bit WAV files with soundfile."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import soundfile
from symusic import Score

from lyria.config import ConfigError
from lyria.render.base import FORMATS, Registry, Renderer, check_length

AUDIO_BACKENDS = Registry("render.backend")


class AudioBackend(ABC):
    """Turns Scores into waveforms at `sample_rate`."""

    sample_rate: int

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> AudioBackend: ...

    @abstractmethod
    def synthesize(self, scores: Sequence[Score]) -> list[np.ndarray]:
        """One float waveform per score, (samples,) or (samples, channels), at any level (normalised later)."""


def normalise(wave: np.ndarray, peak_db: float) -> np.ndarray:
    """Scales `wave` so that its peak sits at `peak_db` dBFS; silence stays silent."""
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak == 0.0 or not np.isfinite(peak):
        return np.zeros_like(wave, dtype=np.float32)
    return (wave * (10 ** (peak_db / 20) / peak)).astype(np.float32)


@FORMATS.register("wav")
class WavRenderer(Renderer):
    suffix = ".wav"

    def __init__(self, backend: AudioBackend, peak_db: float = -1.0, max_seconds: float = 900.0) -> None:
        if peak_db > 0:
            raise ConfigError(f"render.peak_db={peak_db}: a peak above 0 dBFS would clip; use a value <= 0")
        self.backend = backend
        self.peak_db = peak_db
        self.max_seconds = max_seconds

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> WavRenderer:
        backend = AUDIO_BACKENDS.get(settings["backend"], "render.backend").from_settings(settings)
        return cls(backend, peak_db=settings["peak_db"], max_seconds=settings["max_seconds"])

    def write(self, score: Score, path: Path) -> None:
        self.write_batch([score], [path])

    def write_batch(self, scores: Sequence[Score], paths: Sequence[Path]) -> None:
        for score in scores:
            check_length(score, self.max_seconds)
        for wave, path in zip(self.backend.synthesize(scores), paths):
            soundfile.write(str(path), normalise(wave, self.peak_db), self.backend.sample_rate, subtype="PCM_16")
