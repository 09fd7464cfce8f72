"""Helpers the renderer tests import: small scores from (onset, duration, pitch) triples."""

from __future__ import annotations

import os

import pytest
from symusic import Note, Score, Tempo, TimeSignature, Track

TPQ = 480


def score_of(*tracks: Track, qpm: float = 120.0, numerator: int = 4) -> Score:
    score = Score(TPQ)
    score.tracks.extend(list(tracks))
    score.tempos.append(Tempo(0, qpm=qpm))
    score.time_signatures.append(TimeSignature(0, numerator, 4))
    return score


def track_of(notes: list[tuple[float, float, int]], program: int = 0, name: str = "", velocity: int = 90, is_drum: bool = False) -> Track:
    """A track from (onset beats, duration beats, pitch) triples."""
    track = Track(name, program, is_drum)
    for onset, duration, pitch in notes:
        track.notes.append(Note(round(onset * TPQ), round(duration * TPQ), pitch, velocity))
    return track


def skip_or_fail(reason: str) -> None:
    """A system package a test needs is absent: skip locally, fail in CI (where `CI` is set), which installs it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it (scripts/install_system_deps.sh)")
    pytest.skip(reason)
