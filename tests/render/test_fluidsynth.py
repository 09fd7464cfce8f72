"""`render.backend=fluidsynth`: the system's FluidSynth with a GM SoundFont (scripts/install_system_deps.sh)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile
from render_support import score_of, skip_or_fail, track_of

from lyria.config import ConfigError
from lyria.render.audio import WavRenderer
from lyria.render.fluidsynth import FluidSynth, find_soundfont

RATE = 22050


@pytest.fixture
def installed():
    if shutil.which("fluidsynth") is None or find_soundfont() is None:
        skip_or_fail("FluidSynth or a GM SoundFont is not installed (scripts/install_system_deps.sh installs both)")


def test_fluidsynth_plays_a4_at_440_hz_and_a_late_note_late(installed, tmp_path):
    score = score_of(track_of([(0, 2, 69), (8, 1, 60)], program=0))  # A4 at 0 s, C4 at 4 s
    path = tmp_path / "piece.wav"
    WavRenderer(FluidSynth(sample_rate=RATE), peak_db=-3.0).write(score, path)
    wave, rate = soundfile.read(str(path))
    assert rate == RATE and wave.ndim == 2  # stereo, as FluidSynth plays it
    assert np.abs(wave).max() == pytest.approx(10 ** (-3 / 20), abs=1e-3)
    mono = wave.mean(1)
    first = mono[: RATE] * np.hanning(RATE)
    frequencies = np.fft.rfftfreq(RATE, 1 / RATE)
    assert abs(frequencies[np.abs(np.fft.rfft(first)).argmax()] - 440.0) <= 1.0
    gap, second = mono[int(3.5 * RATE) : int(3.99 * RATE)], mono[int(4.0 * RATE) : int(4.5 * RATE)]
    assert np.sqrt(np.mean(second**2)) > 10 * np.sqrt(np.mean(gap**2))


def test_missing_program_or_soundfont_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="fluidsynth program is not on PATH.*install_system_deps.sh"):
        FluidSynth()
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/fluidsynth")
    with pytest.raises(ConfigError, match=r"render.fluidsynth.soundfont=.*missing.sf2: no such file"):
        FluidSynth(soundfont=str(tmp_path / "missing.sf2"))
