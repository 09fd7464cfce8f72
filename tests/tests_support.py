"""Helpers the tests import: small synthetic scores."""

from __future__ import annotations

from symusic import Note, Score, Tempo, TimeSignature, Track


def make_score(pitches: list[int], tpq: int = 480, numerator: int = 4, beats_per_note: float = 1.0) -> Score:
    """A one-track score with one note per beat (or per `beats_per_note`)."""
    score = Score(tpq)
    track = Track("melody", 0, False)
    step = int(tpq * beats_per_note)
    for i, pitch in enumerate(pitches):
        track.notes.append(Note(i * step, step, pitch, 80))
    score.tracks.append(track)
    score.time_signatures.append(TimeSignature(0, numerator, 4))
    score.tempos.append(Tempo(0, qpm=120))
    return score
