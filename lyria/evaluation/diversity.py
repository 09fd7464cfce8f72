"""How varied the generated set is: the `diversity` family.

- `distinct_n`: distinct n-grams / all n-grams over the set's evaluation tokens (Li et al. 2016).
- `self_bleu`: mean over pieces of BLEU-4 (uniform weights, brevity penalty, no smoothing) of a piece
  against all the others as references (Zhu et al. 2018); lower is more diverse. Computed for the whole
  set at once: a piece's clipped n-gram count is min(its count, the largest count in any other piece).
- `vendi`: exp of the entropy of the eigenvalues of K / n, K the RBF kernel of the z-scored feature
  embeddings (Friedman & Dieng 2023): the effective number of distinct pieces, 1 for identical pieces.
- `pairwise_note_f1`: mean mir_eval note F1 over a seeded sample of pairs of generated pieces.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import pdist, squareform
from threadpoolctl import threadpool_limits

from lyria.evaluation.base import EvalInputs, Family, FamilyResult, register_family
from lyria.evaluation.features import embeddings
from lyria.evaluation.matching import ONSET_TOLERANCE_BEATS, note_arrays, note_f1
from lyria.evaluation.tokens import TokenTable, tokens_for


def distinct_n(tokens: TokenTable, n: int) -> float:
    codes, _, _ = tokens.ngrams(n)
    return float(len(np.unique(codes)) / len(codes)) if len(codes) else math.nan


def _clipped_precision(tokens: TokenTable, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per piece: (sum of n-gram counts clipped by the largest count in any other piece, sum of counts)."""
    codes, piece, _ = tokens.ngrams(n)
    totals = np.bincount(piece, minlength=len(tokens)).astype(np.float64)
    if not len(codes):
        return np.zeros(len(tokens)), totals
    order = np.lexsort((piece, codes))
    codes, piece = codes[order], piece[order]
    new_pair = np.ones(len(codes), dtype=bool)
    new_pair[1:] = (codes[1:] != codes[:-1]) | (piece[1:] != piece[:-1])
    starts = np.flatnonzero(new_pair)
    pair_code, pair_piece = codes[starts], piece[starts]
    pair_count = np.diff(np.append(starts, len(codes))).astype(np.float64)
    # within each code, pairs sorted by count (largest first): best and second-best count of the code
    by_count = np.lexsort((-pair_count, pair_code))
    pair_code, pair_piece, pair_count = pair_code[by_count], pair_piece[by_count], pair_count[by_count]
    first = np.ones(len(pair_code), dtype=bool)
    first[1:] = pair_code[1:] != pair_code[:-1]
    group = np.cumsum(first) - 1
    group_start = np.flatnonzero(first)
    best = pair_count[group_start]
    has_second = np.append(group_start[1:], len(pair_code)) - group_start > 1
    second = np.where(has_second, pair_count[np.minimum(group_start + 1, len(pair_code) - 1)], 0.0)
    is_best = np.arange(len(pair_code)) == group_start[group]
    best_other = np.where(is_best, second[group], best[group])
    clipped = np.bincount(pair_piece, weights=np.minimum(pair_count, best_other), minlength=len(tokens))
    return clipped, totals


def self_bleu(tokens: TokenTable, max_n: int = 4) -> np.ndarray:
    """BLEU-`max_n` of each piece against all others (NaN for a piece without tokens; needs 2 pieces)."""
    lengths = tokens.lengths.astype(np.float64)
    log_precision = np.zeros(len(tokens))
    for n in range(1, max_n + 1):
        clipped, totals = _clipped_precision(tokens, n)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_precision += np.log(clipped / totals) / max_n
    # brevity penalty against the closest other length (the shorter one on a tie, as NLTK)
    gap = np.abs(lengths[None, :] - lengths[:, None]) + 0.5 * (lengths[None, :] > lengths[:, None])
    np.fill_diagonal(gap, np.inf)
    closest = lengths[np.argmin(gap, axis=1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        penalty = np.where(lengths > closest, 1.0, np.exp(1 - closest / lengths))
        bleu = penalty * np.exp(log_precision)
    return np.where(lengths > 0, np.nan_to_num(bleu, nan=0.0), np.nan)


def rbf_bandwidth(reference: np.ndarray) -> float:
    """Median distance between reference pieces (sqrt of the dimension when there are fewer than two)."""
    distances = pdist(reference) if len(reference) >= 2 else np.zeros(0)
    positive = distances[distances > 0]
    return float(np.median(positive)) if len(positive) else math.sqrt(max(reference.shape[1], 1))


def vendi_score(embedding: np.ndarray, bandwidth: float) -> float:
    """exp(-sum_i l_i log l_i), l the eigenvalues of K / n with K_ij = exp(-|x_i - x_j|^2 / (2 h^2))."""
    if len(embedding) == 0:
        return math.nan
    kernel = np.exp(-squareform(pdist(embedding, "sqeuclidean")) / (2 * bandwidth**2))
    # one BLAS thread: at these sizes it costs little, and threaded BLAS stalls badly on a busy machine
    with threadpool_limits(1, user_api="blas"):
        eigenvalues = np.clip(np.linalg.eigvalsh(kernel / len(embedding)), 0, None)
    eigenvalues = eigenvalues[eigenvalues > 1e-12]
    return float(math.exp(-(eigenvalues * np.log(eigenvalues)).sum()))


def set_vendi(piece_set, embedding: np.ndarray, bandwidth: float, indices: np.ndarray | None = None) -> float:
    """`vendi_score` of the set's pieces at `indices` (all when None), computed once per set, subset and bandwidth."""
    chosen = np.arange(len(embedding)) if indices is None else np.asarray(indices)
    key = f"vendi/{bandwidth!r}/{len(embedding)}/{hash(chosen.tobytes())}"
    return piece_set.cached(key, lambda: vendi_score(embedding[chosen], bandwidth))


def sample_pairs(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `count` distinct unordered pairs (i < j) of n items, seeded; all pairs when there are fewer."""
    total = n * (n - 1) // 2
    if total == 0:
        return np.zeros((0, 2), dtype=np.int64)
    chosen = np.sort(rng.choice(total, size=min(count, total), replace=False))
    rows = np.arange(n)
    row_start = rows * (n - 1) - rows * (rows - 1) // 2  # index of pair (i, i + 1) in row-major order
    i = np.searchsorted(row_start, chosen, side="right") - 1
    j = chosen - row_start[i] + i + 1
    return np.stack([i, j], axis=1)


@register_family
class Diversity(Family):
    name = "diversity"

    def __init__(
        self,
        orders: list[int] = (1, 2, 4, 8),
        bleu_order: int = 4,
        note_f1_pairs: int = 200,
        onset_tolerance: float = ONSET_TOLERANCE_BEATS,
    ) -> None:
        self.orders = [int(n) for n in orders]
        self.bleu_order = int(bleu_order)
        self.note_f1_pairs = int(note_f1_pairs)
        self.onset_tolerance = float(onset_tolerance)

    def compute(self, inputs: EvalInputs) -> FamilyResult:
        result = FamilyResult()
        generated = inputs.generated
        tokens = tokens_for(generated, inputs.assets)
        for n in self.orders:
            result.set(f"distinct_{n}", distinct_n(tokens, n), f"no piece has {n} evaluation tokens")
        if len(generated) >= 2:
            bleu = self_bleu(tokens, self.bleu_order)
            result.per_piece["self_bleu"] = bleu
            result.set("self_bleu", np.nanmean(bleu) if np.isfinite(bleu).any() else None, "no piece has evaluation tokens")
        else:
            result.set("self_bleu", None, "needs at least 2 generated pieces")
        gen_z, ref_z = embeddings(inputs)
        result.set("vendi", set_vendi(generated, gen_z, rbf_bandwidth(ref_z)), "no generated pieces")
        pairs = sample_pairs(len(generated), self.note_f1_pairs, np.random.default_rng([inputs.seed, 7]))
        if len(pairs):
            arrays = [note_arrays(p.notes) for p in generated.pieces]
            f1 = [note_f1(arrays[i], arrays[j], self.onset_tolerance) for i, j in pairs]
            result.set("pairwise_note_f1", float(np.mean(f1)))
        else:
            result.set("pairwise_note_f1", None, "needs at least 2 generated pieces")
        result.set("pairwise_note_f1_pairs", len(pairs))
        return result
