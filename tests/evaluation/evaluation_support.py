"""Helpers the evaluation tests import: pieces built note by note, varied synthetic sets, sample folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from symusic import Note, Score, Tempo, TimeSignature, Track

from lyria.data.notes import PieceNotes, notes_from_score
from lyria.evaluation.base import PieceSet
from lyria.evaluation.features import FeatureSettings

DATA = Path(__file__).resolve().parent / "data"
TPQ = 480
SCALE = np.array([0, 2, 4, 5, 7, 9, 11])


def score_of(notes: list[tuple[float, float, int]], numerator: int = 4, drums: list[tuple[float, float, int]] = ()) -> Score:
    """A score from (start beat, duration in beats, pitch) notes, with an optional drum track."""
    score = Score(TPQ)
    for is_drum, chosen in ((False, notes), (True, drums)):
        if not chosen:
            continue
        track = Track("drums" if is_drum else "melody", 0, is_drum)
        for start, duration, pitch in chosen:
            track.notes.append(Note(int(round(start * TPQ)), int(round(duration * TPQ)), int(pitch), 80))
        score.tracks.append(track)
    score.time_signatures.append(TimeSignature(0, numerator, 4))
    score.tempos.append(Tempo(0, qpm=120))
    return score


def piece_of(notes: list[tuple[float, float, int]], numerator: int = 4, drums: list[tuple[float, float, int]] = ()) -> PieceNotes:
    return notes_from_score(score_of(notes, numerator, drums))


def melody(pitches: list[int], beats_per_note: float = 1.0) -> PieceNotes:
    return piece_of([(i * beats_per_note, beats_per_note, p) for i, p in enumerate(pitches)])


def random_piece(seed: int, n_notes: int = 64, root: int = 60, chords: bool = False) -> PieceNotes:
    """A seeded diatonic tune with mixed durations (two voices with `chords`)."""
    rng = np.random.default_rng(seed)
    notes, time = [], 0.0
    for _ in range(n_notes):
        duration = float(rng.choice([0.5, 1.0, 2.0]))
        pitch = root + int(SCALE[rng.integers(0, 7)]) + 12 * int(rng.integers(0, 2))
        notes.append((time, duration, pitch))
        if chords:
            notes.append((time, duration, pitch - 12))
        time += duration
    return piece_of(notes)


def varied_set(label: str, count: int, seed: int) -> PieceSet:
    """`count` different tunes in several keys, rhythms and textures (a stand-in for real music)."""
    pieces = [
        random_piece(seed * 1000 + i, n_notes=40 + 8 * (i % 5), root=55 + (i * 5) % 12, chords=i % 3 == 0) for i in range(count)
    ]
    return PieceSet(label, [f"{label}_{i}" for i in range(count)], pieces, [None] * count)


def settings() -> FeatureSettings:
    return FeatureSettings()


def write_samples(
    folder: Path, pieces: list[PieceNotes], styles: list[str | None] | None = None, extra: dict | None = None
) -> Path:
    """sample_NNN.mid files and an index.json as lyria-generate writes them (plus fields a later version may add)."""
    from lyria.data.notes import score_from_notes

    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i, piece in enumerate(pieces):
        name = f"sample_{i:03d}.mid"
        score_from_notes(piece).dump_midi(str(folder / name))
        entry = {"index": i, "files": {"midi": name}, "n_tokens": 100, "stop_reason": "eos", "future_field": {"x": 1}}
        if styles is not None:
            entry["style"] = styles[i]
        samples.append(entry)
    index = {"checkpoint": None, "settings": {"seed": 0}, "samples": samples, "failures": []} | (extra or {})
    (folder / "index.json").write_text(json.dumps(index))
    return folder
