"""The note schema: times in seconds and beats agree with the tempo; bars follow the time signatures."""

from __future__ import annotations

import numpy as np
from symusic import Tempo, TimeSignature

from lyria.data.notes import notes_from_score
from tests_support import make_score


def test_seconds_and_beats_follow_the_tempo_map():
    score = make_score([60, 62, 64, 65, 67, 69, 71, 72])
    score.tempos = [Tempo(0, qpm=120), Tempo(4 * 480, qpm=60)]
    piece = notes_from_score(score)
    assert list(piece.notes["pitch"]) == [60, 62, 64, 65, 67, 69, 71, 72]
    np.testing.assert_allclose(piece.notes["start_beats"], np.arange(8))
    # 4 beats at 0.5 s, then 1 s per beat
    np.testing.assert_allclose(piece.notes["start"], [0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(piece.notes["end"] - piece.notes["start"], [0.5] * 4 + [1.0] * 4)


def test_bar_starts_follow_time_signature_changes():
    score = make_score(list(range(60, 70)))
    score.time_signatures = [TimeSignature(0, 3, 4), TimeSignature(6 * 480, 2, 4)]
    piece = notes_from_score(score)
    np.testing.assert_allclose(piece.bar_starts_beats[:4], [0, 3, 6, 8])
    assert piece.time_signatures == [(0.0, 3, 4), (6.0, 2, 4)]


def test_content_hash_ignores_track_layout_but_not_pitches():
    a = make_score([60, 64, 67])
    b = make_score([60, 64, 67])
    b.tracks[0].name = "renamed"
    c = make_score([60, 64, 68])
    assert notes_from_score(a).content_hash() == notes_from_score(b).content_hash()
    assert notes_from_score(a).content_hash() != notes_from_score(c).content_hash()
