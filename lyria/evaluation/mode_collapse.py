"""Signs that the generated set collapsed onto a few pieces: the `mode_collapse` family.

- `exact_duplicate_rate`: share of pieces whose notes repeat an earlier piece's exactly.
- `near_duplicate_rate`: share of pieces whose set of evaluation-token n-grams has Jaccard similarity
  at least `near_duplicate_jaccard` with another generated piece's (exact duplicates included).
- `precision`, `recall`, `density`, `coverage`: Naeem et al. (2020) with k nearest neighbours in the
  z-scored feature space; `coverage.<style>` the coverage of each reference style's pieces (by the
  pieces generated for that style when the samples carry styles, by all of them otherwise).
- `vendi_ratio`: Vendi score of the generated set over that of the reference, both on seeded subsets
  of the same size, with the reference's kernel bandwidth.
- `score`: the summary, mean of three terms in [0, 1] that each rise as the set collapses:
  near_duplicate_rate, 1 - coverage, and 1 - min(1, vendi_ratio). About 0 for a varied set that covers
  the reference; about 1 for one piece repeated.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.sparse import csr_matrix
from scipy.spatial.distance import cdist

from lyria.evaluation.base import EvalInputs, Family, FamilyResult, register_family
from lyria.evaluation.diversity import rbf_bandwidth, set_vendi
from lyria.evaluation.features import embeddings
from lyria.evaluation.tokens import TokenTable, tokens_for


def exact_duplicates(pieces) -> np.ndarray:
    """1 for each piece whose content hash an earlier piece has, else 0."""
    seen: set[str] = set()
    flags = np.zeros(len(pieces))
    for i, piece in enumerate(pieces):
        key = piece.content_hash()
        flags[i] = key in seen
        seen.add(key)
    return flags


def max_jaccard(tokens: TokenTable, n: int) -> np.ndarray:
    """Per piece, the largest Jaccard similarity of its n-gram set with another piece's (0 with one piece)."""
    codes, piece, _ = tokens.ngrams(n)
    if len(tokens) < 2 or not len(codes):
        return np.zeros(len(tokens))
    unique_codes, column = np.unique(codes, return_inverse=True)
    matrix = csr_matrix((np.ones(len(codes)), (piece, column)), shape=(len(tokens), len(unique_codes)))
    matrix.data[:] = 1.0  # duplicates summed by the constructor become a set membership
    shared = (matrix @ matrix.T).toarray()
    sizes = np.diag(shared).copy()
    union = sizes[:, None] + sizes[None, :] - shared
    with np.errstate(invalid="ignore", divide="ignore"):
        jaccard = np.where(union > 0, shared / union, 0.0)
    np.fill_diagonal(jaccard, 0.0)
    return jaccard.max(axis=1)


def kth_neighbour_radius(points: np.ndarray, k: int) -> np.ndarray:
    distances = cdist(points, points)
    return np.sort(distances, axis=1)[:, k]  # column 0 is the point itself


def prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float | np.ndarray]:
    """Precision, recall, density, coverage (Naeem et al. 2020) and the real pieces each covers."""
    real_radius = kth_neighbour_radius(real, k)
    fake_radius = kth_neighbour_radius(fake, k)
    distances = cdist(real, fake)  # (real, fake)
    inside_real = distances <= real_radius[:, None]
    covered = (distances.min(axis=1) <= real_radius) if distances.size else np.zeros(len(real), dtype=bool)
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((distances <= fake_radius[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum() / (k * len(fake))),
        "coverage": float(covered.mean()),
        "covered": covered,
        "real_radius": real_radius,
    }


@register_family
class ModeCollapse(Family):
    name = "mode_collapse"

    def __init__(self, nearest_k: int = 5, near_duplicate_jaccard: float = 0.5, ngram: int = 8) -> None:
        self.nearest_k = int(nearest_k)
        self.near_duplicate_jaccard = float(near_duplicate_jaccard)
        self.ngram = int(ngram)

    def compute(self, inputs: EvalInputs) -> FamilyResult:
        result = FamilyResult()
        generated, reference = inputs.generated, inputs.reference
        exact = exact_duplicates(generated.pieces)
        similarity = max_jaccard(tokens_for(generated, inputs.assets), self.ngram)
        near = np.maximum(exact, similarity >= self.near_duplicate_jaccard)
        result.set("exact_duplicate_rate", exact.mean() if len(exact) else None, "no generated pieces")
        result.set("near_duplicate_rate", near.mean() if len(near) else None, "no generated pieces")
        result.per_piece["near_duplicate"] = near.astype(np.float64)
        result.per_piece["max_jaccard"] = similarity

        gen_z, ref_z = embeddings(inputs)
        k = self.nearest_k
        coverage = math.nan
        if len(gen_z) > k and len(ref_z) > k:
            scores = prdc(ref_z, gen_z, k)
            for metric in ("precision", "recall", "density", "coverage"):
                result.set(metric, scores[metric])
            coverage = scores["coverage"]
            distances = cdist(gen_z, ref_z)
            result.per_piece["nearest_reference_distance"] = distances.min(axis=1)
            self._style_coverage(result, inputs, gen_z, ref_z, scores["real_radius"])
        else:
            reason = f"needs more than nearest_k={k} pieces per set (generated {len(gen_z)}, reference {len(ref_z)})"
            for metric in ("precision", "recall", "density", "coverage"):
                result.set(metric, None, reason)

        size = min(len(gen_z), len(ref_z))
        ratio = math.nan
        if size >= 2:
            rng = np.random.default_rng([inputs.seed, 5])
            bandwidth = rbf_bandwidth(ref_z)
            gen_sub = np.sort(rng.choice(len(gen_z), size, replace=False))
            ref_sub = np.sort(rng.choice(len(ref_z), size, replace=False))
            ratio = set_vendi(generated, gen_z, bandwidth, gen_sub) / set_vendi(reference, ref_z, bandwidth, ref_sub)
            result.set("vendi_ratio", ratio)
        else:
            result.set("vendi_ratio", None, "needs 2 pieces per set")
        terms = [near.mean() if len(near) else math.nan, 1 - coverage, 1 - min(1.0, ratio)]
        if all(math.isfinite(t) for t in terms):
            result.set("score", float(np.mean(terms)))
        else:
            result.set("score", None, "needs coverage and vendi_ratio (enough pieces in both sets)")
        return result

    def _style_coverage(self, result: FamilyResult, inputs: EvalInputs, gen_z, ref_z, real_radius) -> None:
        """Coverage of each reference style's pieces (radii from the whole reference)."""
        reference, generated = inputs.reference, inputs.generated
        ref_styles = np.array([s or "" for s in reference.styles])
        gen_styles = np.array([s or "" for s in generated.styles])
        for style in sorted(set(ref_styles.tolist()) - {""}):
            real = ref_styles == style
            fake = gen_styles == style if generated.has_styles else np.ones(len(gen_z), dtype=bool)
            if not fake.any():
                result.set(f"coverage.{style}", None, f"no generated piece has style {style!r}")
                continue
            distances = cdist(ref_z[real], gen_z[fake])
            result.set(f"coverage.{style}", float((distances.min(axis=1) <= real_radius[real]).mean()))
