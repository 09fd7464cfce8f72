"""Note-level F1 between two note arrays through mir_eval's transcription matching.

Times are given to mir_eval in beats (so tempo does not matter) and matched on onset and pitch only
(`offset_ratio=None`): two notes match when their onsets lie within `onset_tolerance` beats and their
pitches agree (mir_eval's 50-cent tolerance on the MIDI pitch converted to Hz). Drum notes are left out.
"""

from __future__ import annotations

import warnings

import mir_eval
import numpy as np

from lyria.evaluation.base import PieceNotes

ONSET_TOLERANCE_BEATS = 0.05


def note_arrays(notes: np.ndarray, start_beats: float = 0.0, transpose: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(intervals in beats relative to `start_beats`, pitches in Hz) of pitched notes, as mir_eval takes them."""
    notes = notes[~notes["is_drum"]]
    begin = notes["start_beats"] - start_beats
    end = np.maximum(notes["end_beats"] - start_beats, begin + 1e-3)  # mir_eval rejects empty intervals
    pitches = np.clip(notes["pitch"].astype(np.float64) + transpose, 0, 127)
    return np.stack([begin, end], axis=1), mir_eval.util.midi_to_hz(pitches)


def note_f1(
    reference: tuple[np.ndarray, np.ndarray],
    estimate: tuple[np.ndarray, np.ndarray],
    onset_tolerance: float = ONSET_TOLERANCE_BEATS,
) -> float:
    """mir_eval's note F1 (onset + pitch) of `estimate` against `reference`, each from `note_arrays`; 0 if either is empty."""
    if not len(reference[1]) or not len(estimate[1]):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval warns on empty arrays, handled above
        _, _, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
            reference[0], reference[1], estimate[0], estimate[1], onset_tolerance=onset_tolerance, offset_ratio=None
        )
    return float(f1)


def window(notes: np.ndarray, start_beats: float, end_beats: float) -> np.ndarray:
    """The notes whose onsets fall in [start_beats, end_beats)."""
    return notes[(notes["start_beats"] >= start_beats) & (notes["start_beats"] < end_beats)]


def piece_f1(first: PieceNotes, second: PieceNotes, onset_tolerance: float = ONSET_TOLERANCE_BEATS) -> float:
    return note_f1(note_arrays(first.notes), note_arrays(second.notes), onset_tolerance)
