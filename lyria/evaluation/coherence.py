"""Whether a piece holds together over bars: the `coherence` family.

Bars come from the piece's own bar starts. A bar is described by its duration-weighted pitch-class
histogram and its onset pattern (`groove_positions` slots per bar); the bar-level self-similarity
matrix S holds the cosine similarity of those descriptions (each half normalised).
- `structureness`: max over lags d >= 2 of the mean of S's d-th diagonal, minus the mean of all
  off-diagonal entries: how much the most repeated period (a returning section) stands out. 0 for a
  piece whose bars are all alike or all unrelated.
- `similarity_error`: mean over lags 1..max_lag of |mean S diagonal at that lag - the reference set's|
  (after Wu & Yang 2020): how far the piece's repetition profile is from real music's.
- `key_consistency`: the mean `mir_eval.key.weighted_score` over all pairs of `key_window_bars`-bar
  windows of their Krumhansl-Schmuckler key estimates (correlation of the duration-weighted pitch-class
  histogram with the 24 rotated Krumhansl-Kessler profiles); 1 when every window is in one key.
- `pitch_class_entropy_1bar` / `_4bar`: mean entropy (bits) of the duration-weighted pitch-class
  histogram over 1- and 4-bar windows (Wu & Yang's H1 and H4).
- `grooving_similarity`: mean over all pairs of bars of 1 - Hamming(onset patterns) / groove_positions
  (Wu & Yang's GS).
- `nll_position.<a>-<b>` (with a checkpoint): the model's mean NLL of targets at token positions [a, b)
  of held-out pieces, and `context_gain`: NLL over [T/8, T/4) minus NLL over [T/2, T), T the context
  length; positive when later tokens, which see more context, are predicted better.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Callable

import mir_eval
import numpy as np

from lyria.evaluation.base import (
    EvalInputs,
    Family,
    FamilyResult,
    PieceNotes,
    check_metric_names,
    nanmean,
    piece_metric,
    register_family,
)
from lyria.evaluation.features import PITCH_CLASS_LABELS, bar_beats, entropy_bits

FAMILY = "coherence"

KRUMHANSL_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KRUMHANSL_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
KEY_NAMES = [f"{pc} major" for pc in PITCH_CLASS_LABELS] + [f"{pc} minor" for pc in PITCH_CLASS_LABELS]


@dataclass(frozen=True)
class CoherenceSettings:
    groove_positions: int = 16
    key_window_bars: int = 4
    max_lag: int = 32


def _zscore_rows(matrix: np.ndarray) -> np.ndarray:
    centred = matrix - matrix.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(centred, axis=-1, keepdims=True)
    return centred / np.where(norm > 0, norm, 1.0)


KEY_PROFILES = _zscore_rows(
    np.stack([np.roll(KRUMHANSL_MAJOR, root) for root in range(12)] + [np.roll(KRUMHANSL_MINOR, root) for root in range(12)])
)


@functools.lru_cache(maxsize=1)
def key_score_table() -> np.ndarray:
    """mir_eval.key.weighted_score for every (reference, estimate) pair of the 24 keys."""
    return np.array([[mir_eval.key.weighted_score(a, b) for b in KEY_NAMES] for a in KEY_NAMES])


def estimate_keys(pitch_class_weights: np.ndarray) -> np.ndarray:
    """Krumhansl-Schmuckler: index into KEY_NAMES of the profile best correlated with each row (-1 for an empty row)."""
    correlation = _zscore_rows(pitch_class_weights) @ KEY_PROFILES.T
    keys = correlation.argmax(axis=1)
    return np.where(pitch_class_weights.sum(axis=1) > 0, keys, -1)


@dataclass
class Bars:
    """A piece cut into bars: per bar its duration-weighted pitch-class histogram and onset pattern."""

    pitch_classes: np.ndarray  # (bars, 12)
    onsets: np.ndarray  # (bars, groove_positions) bool

    def __len__(self) -> int:
        return len(self.pitch_classes)


def bar_starts(piece: PieceNotes) -> np.ndarray:
    """The piece's bar starts in beats, extended to cover its last note (bars of the first time signature's length)."""
    starts = np.asarray(piece.bar_starts_beats, dtype=np.float64)
    if not len(starts):
        starts = np.zeros(1)
    end = piece.duration_beats
    length = float(np.diff(starts)[-1]) if len(starts) > 1 else bar_beats(piece)
    if starts[-1] + length < end:
        starts = np.concatenate([starts, starts[-1] + length * np.arange(1, math.ceil((end - starts[-1]) / length) + 1)])
    return starts[starts < max(end, starts[0] + 1e-9)] if end > starts[0] else starts[:1]


def bars_of(piece: PieceNotes, groove_positions: int) -> Bars:
    starts = bar_starts(piece)
    ends = np.append(starts[1:], max(piece.duration_beats, starts[-1] + bar_beats(piece)))
    notes = piece.notes
    bar = np.clip(np.searchsorted(starts, notes["start_beats"] + 1e-9, side="right") - 1, 0, len(starts) - 1)
    pitch_classes = np.zeros((len(starts), 12))
    pitched = ~notes["is_drum"]
    np.add.at(pitch_classes, (bar[pitched], notes["pitch"][pitched] % 12), (notes["end_beats"] - notes["start_beats"])[pitched])
    length = ends - starts
    slot = np.clip(
        ((notes["start_beats"] - starts[bar]) / length[bar] * groove_positions).astype(np.int64), 0, groove_positions - 1
    )
    onsets = np.zeros((len(starts), groove_positions), dtype=bool)
    onsets[bar, slot] = True
    return Bars(pitch_classes, onsets)


def self_similarity(bars: Bars) -> np.ndarray:
    """Cosine similarity of bar descriptions: pitch-class and onset halves each normalised, then the whole."""

    def unit(matrix: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.where(norm > 0, norm, 1.0)

    description = unit(np.concatenate([unit(bars.pitch_classes), unit(bars.onsets.astype(np.float64))], axis=1))
    return description @ description.T


def lag_profile(similarity: np.ndarray, max_lag: int) -> np.ndarray:
    """Mean of the d-th diagonal for d = 1..max_lag (NaN past the piece's length)."""
    return np.array([similarity.diagonal(d).mean() if d < len(similarity) else np.nan for d in range(1, max_lag + 1)])


# the coherence metrics as functions of a piece's bars, so that the family cuts each piece into bars once
BAR_METRICS: dict[str, Callable[[Bars, CoherenceSettings], float]] = {}


def bar_metric(fn: Callable[[Bars, CoherenceSettings], float]) -> Callable[[PieceNotes, CoherenceSettings], float]:
    """Registers `fn(bars, settings)` as the per-piece coherence metric of its name, computed on the piece's bars."""
    BAR_METRICS[fn.__name__] = fn

    @functools.wraps(fn)
    def on_piece(piece: PieceNotes, settings: CoherenceSettings) -> float:
        return fn(bars_of(piece, settings.groove_positions), settings)

    return piece_metric(FAMILY)(on_piece)


@bar_metric
def structureness(bars: Bars, settings: CoherenceSettings) -> float:
    """max over lags d >= 2 of the mean d-th diagonal of the bar self-similarity matrix, minus its off-diagonal mean."""
    similarity = self_similarity(bars)
    n = len(similarity)
    if n < 3:
        return math.nan
    profile = lag_profile(similarity, min(settings.max_lag, n - 1))
    off_diagonal = similarity[~np.eye(n, dtype=bool)].mean()
    return float(np.nanmax(profile[1:]) - off_diagonal)


def _window_histograms(bars: Bars, size: int) -> np.ndarray:
    count = -(-len(bars) // size)
    padded = np.zeros((count * size, 12))
    padded[: len(bars)] = bars.pitch_classes
    histograms = padded.reshape(count, size, 12).sum(axis=1)
    return histograms[histograms.sum(axis=1) > 0]


@bar_metric
def key_consistency(bars: Bars, settings: CoherenceSettings) -> float:
    """Mean mir_eval.key.weighted_score over all pairs of the Krumhansl-Schmuckler keys of key_window_bars-bar windows."""
    keys = estimate_keys(_window_histograms(bars, settings.key_window_bars))
    if len(keys) < 2:
        return math.nan
    table = key_score_table()
    return float(np.mean([table[a, b] for a, b in combinations(keys.tolist(), 2)]))


def _windowed_entropy(bars: Bars, size: int) -> float:
    histograms = _window_histograms(bars, size)
    return nanmean(np.array([entropy_bits(h) for h in histograms])) if len(histograms) else math.nan


@bar_metric
def pitch_class_entropy_1bar(bars: Bars, settings: CoherenceSettings) -> float:
    """Mean entropy (bits) of the duration-weighted pitch-class histogram of each bar (Wu & Yang's H1)."""
    return _windowed_entropy(bars, 1)


@bar_metric
def pitch_class_entropy_4bar(bars: Bars, settings: CoherenceSettings) -> float:
    """Mean entropy (bits) of the duration-weighted pitch-class histogram of each 4 bars (Wu & Yang's H4)."""
    return _windowed_entropy(bars, 4)


@bar_metric
def grooving_similarity(bars: Bars, settings: CoherenceSettings) -> float:
    """Mean over all pairs of bars of 1 - Hamming(onset patterns) / groove_positions (Wu & Yang's GS)."""
    onsets = bars.onsets.astype(np.float64)
    n = len(onsets)
    if n < 2:
        return math.nan
    # Hamming distance of every pair from dot products: |a xor b| = |a| + |b| - 2 a.b
    counts = onsets.sum(axis=1)
    hamming = counts[:, None] + counts[None, :] - 2 * onsets @ onsets.T
    upper = np.triu_indices(n, 1)
    return float(1.0 - hamming[upper].mean() / onsets.shape[1])


@dataclass
class ModelInputs:
    """A checkpoint's model with held-out pieces in its own tokens: (ids, bar ids, style id) per piece."""

    model: object
    layout: object  # lyria.data.datamodule.SequenceLayout
    pieces: list[tuple[np.ndarray, np.ndarray, int]]


def nll_by_position(inputs: ModelInputs, max_len: int, batch_size: int = 8) -> np.ndarray:
    """Mean NLL (nats, summed over a compound token's fields) of the target at each position 1..max_len - 1,
    over held-out pieces framed as in training (BOS, piece, EOS); NaN where no piece is that long."""
    import torch
    import torch.nn.functional as F

    from lyria.data.datamodule import IGNORE_INDEX, collate

    model, layout = inputs.model, inputs.layout
    totals, counts = np.zeros(max_len - 1), np.zeros(max_len - 1)
    framed = []
    for ids, bar_ids, style in inputs.pieces:
        tokens, bars = layout.frame(np.asarray(ids), np.asarray(bar_ids), int(style))
        framed.append({"tokens": tokens[:max_len], "bar_ids": bars[:max_len] - bars[0], "style_id": int(style)})
    model.eval()
    with torch.inference_mode():
        for begin in range(0, len(framed), batch_size):
            batch = collate(framed[begin : begin + batch_size], layout.pad_id)
            logits, _ = model(batch["tokens"], bar_ids=batch["bar_ids"], cond={"style": batch["style"]})
            targets = batch["targets"] if batch["targets"].dim() == 3 else batch["targets"][..., None]
            fields = logits if isinstance(logits, list) else [logits]
            nll = sum(
                F.cross_entropy(f.float().transpose(1, 2), targets[..., i], ignore_index=IGNORE_INDEX, reduction="none")
                for i, f in enumerate(fields)
            )
            valid = targets[..., 0] != IGNORE_INDEX
            width = nll.shape[1]
            totals[:width] += (nll * valid).sum(0).numpy()
            counts[:width] += valid.sum(0).numpy()
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def position_buckets(nll: np.ndarray) -> dict[str, float]:
    """Mean NLL per power-of-two range of target positions [1, 2), [2, 4), ... and the context gain."""
    positions = np.arange(1, len(nll) + 1)
    out = {}
    low = 1
    while low <= len(nll):
        high = low * 2
        out[f"nll_position.{low}-{high}"] = nanmean(nll[(positions >= low) & (positions < high)])
        low = high
    context = len(nll) + 1
    early = nll[(positions >= context // 8) & (positions < context // 4)]
    late = nll[positions >= context // 2]
    out["context_gain"] = nanmean(early) - nanmean(late)
    return out


@register_family
class Coherence(Family):
    name = FAMILY

    def __init__(
        self,
        metrics: list[str] | None = None,
        groove_positions: int = 16,
        key_window_bars: int = 4,
        max_lag: int = 32,
        nll_pieces: int = 64,
    ) -> None:
        self.metrics = check_metric_names(FAMILY, metrics, "eval.families.coherence.metrics")
        self.groove_positions = int(groove_positions)
        self.key_window_bars = int(key_window_bars)
        self.max_lag = int(max_lag)
        self.nll_pieces = int(nll_pieces)

    @property
    def coherence_settings(self) -> CoherenceSettings:
        return CoherenceSettings(self.groove_positions, self.key_window_bars, self.max_lag)

    def compute(self, inputs: EvalInputs) -> FamilyResult:
        settings = self.coherence_settings
        result = FamilyResult()
        generated_bars = [bars_of(p, self.groove_positions) for p in inputs.generated.pieces]
        for name in self.metrics:
            values = np.array([BAR_METRICS[name](bars, settings) for bars in generated_bars], dtype=np.float64)
            result.per_piece[name] = values
            result.set(name, nanmean(values), f"no piece is long enough for {name}")
        generated_profiles = self.profiles(generated_bars)
        reference_profile = inputs.reference.cached(
            f"coherence/lag_profile/{asdict(settings)}",
            lambda: np.array([nanmean(c) for c in self.profiles([bars_of(p, self.groove_positions) for p in inputs.reference.pieces]).T]),
        )
        error = np.abs(generated_profiles - reference_profile[None, :])
        per_piece_error = np.array([nanmean(row) for row in error])
        result.per_piece["similarity_error"] = per_piece_error
        result.set("similarity_error", nanmean(per_piece_error), "no piece has two bars")
        result.artifacts = {
            "generated_profile": np.array([nanmean(c) for c in generated_profiles.T]),
            "reference_profile": reference_profile,
        }
        if inputs.model is not None and inputs.role == "generated":
            self._nll(result, inputs.model)
        return result

    def profiles(self, bars: list[Bars]) -> np.ndarray:
        """Each piece's repetition profile (mean bar similarity per lag), pieces x max_lag."""
        return np.array([lag_profile(self_similarity(b), self.max_lag) for b in bars]).reshape(len(bars), self.max_lag)

    def _nll(self, result: FamilyResult, model_inputs: ModelInputs) -> None:
        if not model_inputs.pieces:
            result.set("context_gain", None, "the checkpoint's data has no held-out pieces")
            return
        held_out = ModelInputs(model_inputs.model, model_inputs.layout, model_inputs.pieces[: self.nll_pieces])
        nll = nll_by_position(held_out, model_inputs.model.max_seq_len + 1)
        for name, value in position_buckets(nll).items():
            result.set(name, value, "no held-out piece reaches these positions")
        result.artifacts["nll_by_position"] = nll
