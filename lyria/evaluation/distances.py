"""How far the generated feature distributions are from the reference's: the `distances` family.

Per feature, after Yang & Lerch (2020, "On the evaluation of generative models in music"):
- `overlap` / `kl`: the overlap area and KL(reference || generated) of the Gaussian KDEs of the feature's
  values in the two sets, on one common grid (scalar features);
- `intra_generated`, `intra_reference`, `inter`: mean distance between two pieces of the generated set,
  of the reference, and across the sets (|a - b| for scalars, Euclidean for histograms);
- `inter_overlap` / `inter_kl`: overlap area and KL(intra-reference || inter) of those distance
  distributions (Yang & Lerch's measure: 1 and 0 when a generated piece is as close to the reference as
  reference pieces are to each other).
And `frechet`: the Frechet distance between Gaussians fitted to the z-scored feature embeddings.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import cdist, pdist
from threadpoolctl import threadpool_limits

from lyria.evaluation.base import EvalInputs, Family, FamilyResult, nanmean, register_family
from lyria.evaluation.features import VECTOR_FEATURES, embeddings, table_for

KL_FLOOR = 1e-10


def kde_on_grid(samples: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    """Gaussian KDE of `samples` on an evenly spaced `grid`, by binning then convolving (probability mass per point)."""
    step = grid[1] - grid[0]
    edges = np.concatenate([grid - step / 2, [grid[-1] + step / 2]])
    counts, _ = np.histogram(samples, bins=edges)
    reach = int(min((len(grid) - 1) // 2, math.ceil(4 * bandwidth / step)))  # "same" keeps the grid's length
    offsets = np.arange(-reach, reach + 1) * step
    kernel = np.exp(-0.5 * (offsets / bandwidth) ** 2)
    mass = np.convolve(counts.astype(np.float64), kernel, mode="same")
    return mass / mass.sum()


def scott_bandwidth(samples: np.ndarray) -> float:
    """Scott's rule 1.06 sigma n^(-1/5); for a constant sample, 1% of its magnitude (at least 1e-3)."""
    sigma = float(np.std(samples))
    if sigma <= 1e-12:
        return max(abs(float(np.mean(samples))) * 0.01, 1e-3)
    return 1.06 * sigma * len(samples) ** (-0.2)


def compare_densities(first: np.ndarray, second: np.ndarray, grid_points: int) -> tuple[float, float]:
    """(overlap area, KL(first || second)) of the two samples' KDEs (each with its own Scott bandwidth, as
    scipy's gaussian_kde) on one common grid."""
    widths = scott_bandwidth(first), scott_bandwidth(second)
    pooled = np.concatenate([first, second])
    grid = np.linspace(pooled.min() - 3 * max(widths), pooled.max() + 3 * max(widths), grid_points)
    p, q = kde_on_grid(first, grid, widths[0]), kde_on_grid(second, grid, widths[1])
    overlap = float(np.minimum(p, q).sum())
    kl = float(np.sum(p * np.log((p + KL_FLOOR) / (q + KL_FLOOR))))
    return min(overlap, 1.0), max(kl, 0.0)


def frechet_distance(first: np.ndarray, second: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)); the trace term via the symmetric form S1^(1/2) S2 S1^(1/2)."""
    mu1, mu2 = first.mean(axis=0), second.mean(axis=0)
    cov1, cov2 = np.atleast_2d(np.cov(first, rowvar=False)), np.atleast_2d(np.cov(second, rowvar=False))
    with threadpool_limits(1, user_api="blas"):  # small matrices: threaded BLAS only adds contention
        values, vectors = np.linalg.eigh(cov1)
        root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
        cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ cov2 @ root1), 0, None)).sum()
    distance = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * cross)
    return max(distance, 0.0)


def _pair_sample(distances: np.ndarray, max_pairs: int, rng: np.random.Generator) -> np.ndarray:
    return distances if len(distances) <= max_pairs else rng.choice(distances, size=max_pairs, replace=False)


def _rows(values: np.ndarray) -> np.ndarray:
    """Pieces (rows) where the feature is defined, as a 2-D array."""
    values = values.reshape(len(values), -1)
    return values[np.isfinite(values).all(axis=1)]


@register_family
class Distances(Family):
    name = "distances"

    def __init__(self, grid_points: int = 512, max_pairs: int = 100_000) -> None:
        self.grid_points = int(grid_points)
        self.max_pairs = int(max_pairs)

    def compute(self, inputs: EvalInputs) -> FamilyResult:
        rng = np.random.default_rng([inputs.seed, 11])
        generated = table_for(inputs.generated, inputs.feature_settings, inputs.assets)
        reference = table_for(inputs.reference, inputs.feature_settings, inputs.assets)
        result = FamilyResult()
        features = {name: (generated.column(name), reference.column(name)) for name in generated.scalar_names}
        features |= {name: (generated.vectors[name], reference.vectors[name]) for name in VECTOR_FEATURES}
        summary: dict[str, list[float]] = {"overlap": [], "kl": [], "inter_overlap": [], "inter_kl": []}
        for name, (gen_values, ref_values) in features.items():
            gen_rows, ref_rows = _rows(gen_values), _rows(ref_values)
            too_few = f"{name} is defined for {len(gen_rows)} generated and {len(ref_rows)} reference pieces; needs 2 each"
            scalar = name in generated.scalar_names
            if len(gen_rows) < 2 or len(ref_rows) < 2:
                for metric in (["overlap", "kl"] if scalar else []) + [
                    "intra_generated",
                    "intra_reference",
                    "inter",
                    "inter_overlap",
                    "inter_kl",
                ]:
                    result.values[f"{name}.{metric}"] = None
                result.unavailable[f"{name}.*"] = too_few
                continue
            if scalar:
                overlap, kl = compare_densities(ref_rows[:, 0], gen_rows[:, 0], self.grid_points)
                result.set(f"{name}.overlap", overlap)
                result.set(f"{name}.kl", kl)
                summary["overlap"].append(overlap)
                summary["kl"].append(kl)
            intra_gen = _pair_sample(pdist(gen_rows), self.max_pairs, rng)
            intra_ref = _pair_sample(pdist(ref_rows), self.max_pairs, rng)
            inter = _pair_sample(cdist(gen_rows, ref_rows).ravel(), self.max_pairs, rng)
            result.set(f"{name}.intra_generated", intra_gen.mean())
            result.set(f"{name}.intra_reference", intra_ref.mean())
            result.set(f"{name}.inter", inter.mean())
            inter_overlap, inter_kl = compare_densities(intra_ref, inter, self.grid_points)
            result.set(f"{name}.inter_overlap", inter_overlap)
            result.set(f"{name}.inter_kl", inter_kl)
            summary["inter_overlap"].append(inter_overlap)
            summary["inter_kl"].append(inter_kl)
        for metric, values in summary.items():
            result.set(f"mean_{metric}", nanmean(np.asarray(values)), "no feature had enough pieces")
        gen_z, ref_z = embeddings(inputs)
        if len(gen_z) >= 2 and len(ref_z) >= 2:
            result.set("frechet", frechet_distance(gen_z, ref_z))
        else:
            result.set("frechet", None, f"needs 2 pieces per set (generated {len(gen_z)}, reference {len(ref_z)})")
        return result
