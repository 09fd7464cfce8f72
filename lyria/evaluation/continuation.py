"""Continuation and infilling against the ground truth: the `continuation` family.

A generated sample that continues the first bars of a real piece (lyria-generate prompt=FILE prompt_bars=N)
or fills some of its bars (infill=FILE bars=5-8; see sets._sample_entries for the index.json fields) is
compared with the real piece over the generated bars only: the `horizon_bars` bars after the prompt, or the filled
bars. Per piece: mir_eval note F1 against the real bars and the absolute difference of each scalar feature;
the set values are their means.
"""

from __future__ import annotations

import numpy as np

from lyria.evaluation.base import EvalInputs, Family, FamilyResult, PieceNotes, nanmean, register_family
from lyria.evaluation.coherence import bar_starts
from lyria.evaluation.features import compute_table
from lyria.evaluation.matching import ONSET_TOLERANCE_BEATS, note_arrays, note_f1, window


def generated_bars(entry: dict, horizon_bars: int) -> tuple[int, int] | None:
    """[first, end) bars the model wrote for this sample, or None when it continued or filled nothing."""
    if entry.get("infill_bars") is not None:
        first, end = entry["infill_bars"]
        return int(first), int(end)
    prompt_bars = entry.get("prompt_bars")
    if prompt_bars is None:
        return None
    return int(prompt_bars), int(prompt_bars) + horizon_bars


def bar_span(piece: PieceNotes, first: int, end: int) -> tuple[float, float] | None:
    """[start, end) in beats of bars first..end-1 of the piece, or None when the piece has no bar `first`."""
    starts = bar_starts(piece)
    if first >= len(starts):
        return None
    stop = starts[end] if end < len(starts) else piece.duration_beats + 1.0
    return float(starts[first]), float(stop)


def clip_piece(piece: PieceNotes, start: float, end: float) -> PieceNotes:
    notes = window(piece.notes, start, end).copy()
    for column in ("start_beats", "end_beats"):
        notes[column] -= start
    bars = piece.bar_starts_beats[(piece.bar_starts_beats >= start) & (piece.bar_starts_beats < end)] - start
    return PieceNotes(notes, bars, bars, piece.time_signatures[:1])


@register_family
class Continuation(Family):
    name = "continuation"
    baseline = False

    def __init__(self, horizon_bars: int = 8, onset_tolerance: float = ONSET_TOLERANCE_BEATS) -> None:
        self.horizon_bars = int(horizon_bars)
        self.onset_tolerance = float(onset_tolerance)

    def compute(self, inputs: EvalInputs) -> FamilyResult:
        generated = inputs.generated
        truths = inputs.ground_truth or [None] * len(generated)
        pairs = []
        for i, (entry, truth) in enumerate(zip(generated.entries, truths)):
            bars = generated_bars(entry, self.horizon_bars)
            span = bar_span(truth, *bars) if truth is not None and bars is not None else None
            if span is not None:
                pairs.append((i, clip_piece(generated.pieces[i], *span), clip_piece(truth, *span)))
        if not pairs:
            return FamilyResult.not_available(
                "no generated sample continues or fills a real piece (index.json needs `prompt` with `prompt_bars`, or "
                "`infill_bars`, and the prompt file must be readable)"
            )
        result = FamilyResult()
        f1 = np.full(len(generated), np.nan)
        for i, made, real in pairs:
            f1[i] = note_f1(note_arrays(real.notes), note_arrays(made.notes), self.onset_tolerance)
        result.per_piece["note_f1"] = f1
        result.set("note_f1", nanmean(f1))
        made_table = compute_table([made for _, made, _ in pairs], inputs.feature_settings)
        real_table = compute_table([real for _, _, real in pairs], inputs.feature_settings)
        for column, name in enumerate(made_table.scalar_names):
            difference = np.abs(made_table.scalars[:, column] - real_table.scalars[:, column])
            result.set(f"{name}.abs_difference", nanmean(difference), f"{name} is undefined on the compared bars")
        result.set("n_pieces", len(pairs))
        return result
