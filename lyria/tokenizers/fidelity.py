"""Round-trip fidelity: does encode -> decode keep a piece's notes? Note-level F1 with mir_eval, onsets only.

The reference is the original piece with its onsets quantized to the tokenizer's grid (1/`max_num_pos_per_beat`
of the beat of each time-signature section), not MidiTok's preprocessed copy, so whatever MidiTok's
preprocessing drops counts as lost. Both sides are timed with the original tempo map, so a tokenizer
without tempo tokens is not blamed for tempo. Notes of the same pitch and onset (voices in unison,
merged into one track) are counted separately: the F1 compares distinct (pitch, onset) notes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from symusic import Score

from lyria.data.notes import _ticks_to_seconds


@dataclass
class RoundTrip:
    """Counts for one piece or summed over many (`+`)."""

    n_ref: int = 0
    n_est: int = 0
    matched: int = 0
    unisons_ref: int = 0  # notes that double another of the same pitch and onset in the reference
    unisons_kept: int = 0  # ... and how many of those doubles the decoded piece still has
    pieces: int = 0

    def __add__(self, other: "RoundTrip") -> "RoundTrip":
        return RoundTrip(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))

    @property
    def precision(self) -> float:
        return self.matched / self.n_est if self.n_est else 1.0

    @property
    def recall(self) -> float:
        return self.matched / self.n_ref if self.n_ref else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def unisons_lost(self) -> int:
        return self.unisons_ref - self.unisons_kept


def reference_notes(tokenizer, score: Score) -> tuple[np.ndarray, np.ndarray]:
    """(pitches, onset ticks) of the original piece, onsets on the tokenizer's grid, in the piece's ticks."""
    keep_drums = tokenizer.tok.config.use_programs
    tracks = [t for t in score.tracks if keep_drums or not t.is_drum]
    pitches = np.concatenate([t.notes.numpy()["pitch"] for t in tracks] or [np.zeros(0)]).astype(np.int64)
    onsets = np.concatenate([t.notes.numpy()["time"] for t in tracks] or [np.zeros(0)]).astype(np.float64)
    return pitches, tokenizer.quantize_times(score, onsets)


def _distinct(pitches: np.ndarray, onsets_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    keys = np.stack([pitches.astype(np.float64), np.round(onsets_s, 6)], axis=1)
    unique = np.unique(keys, axis=0) if len(keys) else keys.reshape(0, 2)
    return unique[:, 0], unique[:, 1], len(keys) - len(unique)


def compare(tokenizer, original: Score, decoded: Score, onset_tolerance: float = 0.05) -> RoundTrip:
    """Note-level matching of `decoded` against the quantized `original` (mir_eval, offsets ignored)."""
    from mir_eval.transcription import match_notes
    from mir_eval.util import midi_to_hz

    ref_pitch, ref_ticks = reference_notes(tokenizer, original)
    ref_seconds = _ticks_to_seconds(original, ref_ticks)
    est = [n for t in decoded.tracks for n in t.notes]
    est_pitch = np.array([n.pitch for n in est], dtype=np.int64)
    # decoded ticks -> the original's ticks, so that the original's tempo map times both
    est_ticks = np.array([n.time for n in est], dtype=np.float64) * original.ticks_per_quarter / decoded.ticks_per_quarter
    est_seconds = _ticks_to_seconds(original, est_ticks)
    ref_pitch, ref_on, ref_unisons = _distinct(ref_pitch, ref_seconds)
    est_pitch, est_on, est_unisons = _distinct(est_pitch, est_seconds)
    matched = 0
    if len(ref_on) and len(est_on):
        ref_iv = np.stack([ref_on, ref_on + 1.0], axis=1)  # offsets are ignored: any positive length
        est_iv = np.stack([est_on, est_on + 1.0], axis=1)
        matched = len(
            match_notes(ref_iv, midi_to_hz(ref_pitch), est_iv, midi_to_hz(est_pitch), onset_tolerance=onset_tolerance, offset_ratio=None)
        )
    return RoundTrip(
        n_ref=len(ref_on),
        n_est=len(est_on),
        matched=matched,
        unisons_ref=ref_unisons,
        unisons_kept=min(est_unisons, ref_unisons),
        pieces=1,
    )


def round_trip(tokenizer, score: Score, onset_tolerance: float = 0.05) -> RoundTrip:
    """Encodes and decodes `score` with `tokenizer` and compares the result with the quantized original."""
    return compare(tokenizer, score, tokenizer.decode(tokenizer.encode(score).ids), onset_tolerance)
