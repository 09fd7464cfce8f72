"""Leaderboard statistics: hierarchical bootstrap intervals (seeds, then pieces), a paired test, Holm's correction.

Pure numpy/scipy on plain arrays; the random generator is passed in, so a seeded call gives the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import wilcoxon

TEST_NAME = "Wilcoxon signed-rank test (two-sided, paired)"

# Elements drawn per vectorised chunk of bootstrap resamples: bounds memory for many seeds x many pieces.
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class Interval:
    """A mean over seeds (each seed: the mean of its pieces) and its bootstrap percentile interval."""

    mean: float
    low: float
    high: float
    n_seeds: int
    n_pieces: int


@dataclass(frozen=True)
class PairedTest:
    """A paired test of `differences` (candidate minus baseline) against zero."""

    n_pairs: int
    mean_difference: float
    statistic: float
    p_value: float


def hierarchical_bootstrap(
    per_seed: Sequence[Sequence[float]], n_resamples: int, confidence: float, rng: np.random.Generator
) -> Interval:
    """Resamples seeds with replacement, then the pieces of each drawn seed; the statistic is the mean over the
    drawn seeds of each seed's piece mean, and the interval its `confidence` percentile interval.

    A seed given a single value (a run-level metric) makes this a bootstrap over seeds alone.
    """
    seeds = [np.asarray(values, dtype=float) for values in per_seed if len(values)]
    if not seeds:
        raise ValueError("hierarchical_bootstrap needs at least one seed with at least one value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    counts = np.array([len(values) for values in seeds])
    n_seeds, width = len(seeds), int(counts.max())
    padded = np.zeros((n_seeds, width))
    for row, values in zip(padded, seeds):
        row[: len(values)] = values

    draws = np.empty(n_resamples)
    chunk = max(1, _CHUNK_ELEMENTS // (n_seeds * width))
    positions = np.arange(width)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        drawn_seeds = rng.integers(0, n_seeds, size=(size, n_seeds))
        drawn_counts = counts[drawn_seeds]
        # A seed with n pieces is resampled n times: positions past n are drawn but masked out.
        drawn_pieces = (rng.random((size, n_seeds, width)) * drawn_counts[..., None]).astype(np.int64)
        values = padded[drawn_seeds[..., None], drawn_pieces]
        values = np.where(positions < drawn_counts[..., None], values, 0.0)
        draws[start : start + size] = (values.sum(-1) / drawn_counts).mean(-1)

    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    mean = float(np.mean([values.mean() for values in seeds]))
    return Interval(mean=mean, low=float(low), high=float(high), n_seeds=n_seeds, n_pieces=int(counts.sum()))


def min_pairs_for(alpha: float) -> int:
    """The fewest non-zero pairs for which the exact two-sided signed-rank test can reach `alpha` (2 / 2^n <= alpha)."""
    return max(1, math.ceil(math.log2(2.0 / alpha)))


def paired_test(differences: Sequence[float]) -> PairedTest:
    """Wilcoxon's signed-rank test of paired differences; zero differences carry no sign and are left out."""
    diffs = np.asarray(differences, dtype=float)
    nonzero = diffs[diffs != 0.0]
    mean_difference = float(diffs.mean()) if len(diffs) else math.nan
    if len(nonzero) == 0:
        return PairedTest(n_pairs=0, mean_difference=mean_difference, statistic=0.0, p_value=1.0)
    result = wilcoxon(nonzero, alternative="two-sided")
    return PairedTest(
        n_pairs=len(nonzero), mean_difference=mean_difference, statistic=float(result.statistic), p_value=float(result.pvalue)
    )


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment: the family-wise error rate of all the given tests stays at most alpha."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted
