"""The fill-in-the-middle layout: prefix, one FILL per missing bar, suffix, SEP, the missing bars, SEP.

Training moves a span of bars to the end behind FILL / SEP; generation writes the span after the same
prompt; `time_order` puts the segments back. The bar tracker follows the segments (each FILL is a bar, time
goes back to the span at the first SEP), so bar ids mean the same in training and in generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class InfillingLayout:
    """One sequence in the layout; `prompt_length` steps (through the first SEP) are the task, the rest the span."""

    ids: np.ndarray
    loss_mask: np.ndarray  # False at the steps the task gives (FILLs, the first SEP): no loss on predicting them
    prompt_length: int


def _first(ids: np.ndarray) -> np.ndarray:
    return ids[:, 0] if ids.ndim == 2 else ids


def infilling_layout(
    ids: np.ndarray, bar_ids: np.ndarray, span: tuple[int, int], fill: np.ndarray, sep: np.ndarray, head: int = 0
) -> InfillingLayout:
    """Moves the bars `span` = [first, end) of a time-ordered sequence behind FILL / SEP.

    `head` leading steps (BOS, a style token) stay in front whatever their bar id; `fill` and `sep`
    are one step each (`tokenizer.step_ids`). The bars of the span need not hold tokens. Bar ids of the
    result come from the tokenizer's bar tracker (`tokenizer.bar_ids`), as in generation.
    """
    first, end = span
    if end <= first:
        raise ValueError(f"an infilled span needs at least one bar, got bars [{first}, {end})")
    body = np.arange(len(ids)) >= head
    before = ~body | (bar_ids < first)
    inside = body & (bar_ids >= first) & (bar_ids < end)
    after = body & (bar_ids >= end)
    fills = np.repeat(fill[None], end - first, axis=0)
    out = np.concatenate([ids[before], fills, ids[after], sep[None], ids[inside], sep[None]])
    n_before = int(before.sum())
    prompt_length = n_before + len(fills) + int(after.sum()) + 1
    loss_mask = np.ones(len(out), dtype=bool)
    loss_mask[n_before : n_before + len(fills)] = False
    loss_mask[prompt_length - 1] = False
    return InfillingLayout(out, loss_mask, prompt_length)


def time_order(ids: np.ndarray, fill_id: int, sep_id: int) -> np.ndarray:
    """A sequence in the infilling layout with its segments back in time order: prefix, span, suffix.

    Sequences with no FILL come back unchanged; the span may be unfinished (no closing SEP).
    """
    first = _first(ids)
    fills = np.flatnonzero(first == fill_id)
    if not len(fills):
        return ids
    seps = np.flatnonzero(first == sep_id)
    opening = seps[seps > fills[-1]]
    if not len(opening):
        raise ValueError("an infilling sequence needs a SEP after its FILL tokens")
    start = int(opening[0])
    closing = seps[seps > start]
    stop = int(closing[0]) if len(closing) else len(ids)
    return np.concatenate([ids[: fills[0]], ids[start + 1 : stop], ids[fills[-1] + 1 : start]])
