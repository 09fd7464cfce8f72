"""The one note schema every stage that reads music uses (data, rendering, evaluation).

A piece is a structured array of notes with times in seconds and in beats (a beat is a quarter note,
the MIDI convention), plus its bar starts and time signatures.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from symusic import Note, Score, Tempo, TimeSignature, Track

NOTE_DTYPE = np.dtype(
    [
        ("pitch", np.int16),
        ("start", np.float64),
        ("end", np.float64),
        ("start_beats", np.float64),
        ("end_beats", np.float64),
        ("velocity", np.int16),
        ("program", np.int16),
        ("is_drum", np.bool_),
        ("track", np.int16),
    ]
)


@dataclass
class PieceNotes:
    """All notes of one piece, sorted by (start, pitch), with its metrical grid."""

    notes: np.ndarray
    bar_starts_beats: np.ndarray
    bar_starts: np.ndarray
    time_signatures: list[tuple[float, int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.notes)

    @property
    def duration_beats(self) -> float:
        return float(self.notes["end_beats"].max()) if len(self.notes) else 0.0

    def content_hash(self) -> str:
        """Identity of the music itself (pitches, onsets, durations in beats), for exact-duplicate removal."""
        n = self.notes
        key = np.stack(
            [n["pitch"].astype(np.float64), np.round(n["start_beats"], 4), np.round(n["end_beats"] - n["start_beats"], 4)],
            axis=1,
        )
        key = key[np.lexsort((key[:, 0], key[:, 1]))]
        return hashlib.sha1(np.ascontiguousarray(key).tobytes()).hexdigest()


def notes_from_score(score: Score) -> PieceNotes:
    """Reads a symusic Score (any time unit) into the note schema."""
    ticks = score if score.ttype == "Tick" else score.to("tick")
    seconds = ticks.to("second")
    tpq = ticks.ticks_per_quarter
    rows = []
    for track_index, (tt, ts) in enumerate(zip(ticks.tracks, seconds.tracks)):
        nt, ns = tt.notes.numpy(), ts.notes.numpy()
        count = len(nt["time"])
        if count == 0:
            continue
        block = np.zeros(count, dtype=NOTE_DTYPE)
        block["pitch"] = nt["pitch"]
        block["start_beats"] = nt["time"] / tpq
        block["end_beats"] = (nt["time"] + nt["duration"]) / tpq
        block["start"] = ns["time"]
        block["end"] = ns["time"] + ns["duration"]
        block["velocity"] = nt["velocity"]
        block["program"] = tt.program
        block["is_drum"] = tt.is_drum
        block["track"] = track_index
        rows.append(block)
    notes = np.concatenate(rows) if rows else np.zeros(0, dtype=NOTE_DTYPE)
    notes = notes[np.lexsort((notes["pitch"], notes["start_beats"]))]
    downbeats = np.asarray(ticks.get_downbeats(), dtype=np.float64) if len(notes) else np.zeros(0)
    bar_starts_beats = downbeats / tpq
    bar_starts = _ticks_to_seconds(ticks, downbeats)
    time_signatures = [(ts.time / tpq, int(ts.numerator), int(ts.denominator)) for ts in ticks.time_signatures]
    return PieceNotes(notes, bar_starts_beats, bar_starts, time_signatures)


def score_from_notes(piece: PieceNotes, ticks_per_quarter: int = 480, qpm: float = 120.0) -> Score:
    """The inverse of `notes_from_score` on the beat grid: one track per (track, program, is_drum), the
    piece's time signatures, one tempo. Seconds are not read back; the tempo only sets them when played."""
    score = Score(ticks_per_quarter)
    notes = piece.notes
    keys = np.unique(np.stack([notes["track"], notes["program"], notes["is_drum"].astype(np.int16)], axis=1), axis=0)
    for track_index, program, is_drum in keys.tolist():
        chosen = notes[(notes["track"] == track_index) & (notes["program"] == program) & (notes["is_drum"] == bool(is_drum))]
        starts = np.round(chosen["start_beats"] * ticks_per_quarter).astype(np.int32)
        ends = np.maximum(np.round(chosen["end_beats"] * ticks_per_quarter).astype(np.int32), starts + 1)
        track = Track(f"track{track_index}", int(program), bool(is_drum))
        track.notes = Note.from_numpy(
            time=starts, duration=ends - starts, pitch=chosen["pitch"].astype(np.int8), velocity=chosen["velocity"].astype(np.int8)
        )
        score.tracks.append(track)
    for beat, numerator, denominator in piece.time_signatures:
        score.time_signatures.append(TimeSignature(int(round(beat * ticks_per_quarter)), numerator, denominator))
    score.tempos.append(Tempo(0, qpm=qpm))
    return score


def _ticks_to_seconds(score: Score, ticks: np.ndarray) -> np.ndarray:
    """Maps tick positions to seconds through the score's tempo map (120 qpm where none is given)."""
    tpq = score.ticks_per_quarter
    tempos = sorted((t.time, t.qpm) for t in score.tempos) or [(0, 120.0)]
    if tempos[0][0] > 0:
        tempos.insert(0, (0, 120.0))
    change_ticks = np.array([t for t, _ in tempos], dtype=np.float64)
    qpm = np.array([q for _, q in tempos], dtype=np.float64)
    seconds_per_tick = 60.0 / (qpm * tpq)
    change_seconds = np.concatenate([[0.0], np.cumsum(np.diff(change_ticks) * seconds_per_tick[:-1])])
    seg = np.searchsorted(change_ticks, ticks, side="right") - 1
    seg = np.clip(seg, 0, len(change_ticks) - 1)
    return change_seconds[seg] + (ticks - change_ticks[seg]) * seconds_per_tick[seg]
