"""Fixtures for the renderer tests."""

from __future__ import annotations

import pytest
from render_support import TPQ, score_of, track_of
from symusic import KeySignature, Score, Tempo, TimeSignature


@pytest.fixture
def duet() -> Score:
    """Two named tracks (piano melody, bass), 3/4 for four bars then 2/4, D major, 66 bpm slowing to 50."""
    melody = track_of([(beat, 1.0, 62 + (beat * 2) % 12) for beat in range(16)], program=0, name="Melody")
    bass = track_of([(beat, 3.0 if beat < 12 else 2.0, 38 + beat % 5) for beat in (0, 3, 6, 9, 12, 14)], program=32, name="Bass")
    score = score_of(melody, bass, qpm=66, numerator=3)
    score.time_signatures.append(TimeSignature(12 * TPQ, 2, 4))
    score.tempos.append(Tempo(12 * TPQ, qpm=50))
    score.key_signatures.append(KeySignature(0, 2, 0))
    return score
