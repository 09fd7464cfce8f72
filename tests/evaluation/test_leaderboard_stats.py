"""Leaderboard statistics as properties over many simulated studies: interval coverage, test size and power, Holm."""

from __future__ import annotations

import numpy as np
import pytest

from lyria.evaluation.leaderboard.stats import hierarchical_bootstrap, holm, min_pairs_for, paired_test

REPEATS = 200


def _simulated_seeds(rng, n_seeds, n_pieces, seed_sd, piece_sd, true_mean=0.0):
    """Values of a two-level study: each seed draws its mean around the truth, each piece around its seed's mean."""
    counts = n_pieces if isinstance(n_pieces, list) else [n_pieces] * n_seeds
    return [rng.normal(true_mean + rng.normal(0.0, seed_sd), piece_sd, n) for n in counts]


@pytest.mark.parametrize(
    ("n_seeds", "n_pieces", "seed_sd", "piece_sd"),
    [
        (8, 20, 1.0, 4.0),  # seed and piece variation of the mean about equal
        (5, 30, 0.5, 2.0),
        (10, 16, 0.5, 2.0),
        (6, [8, 30, 12, 20, 25, 16], 0.5, 2.0),  # unequal numbers of pieces
    ],
)
def test_the_interval_covers_the_true_mean_at_about_the_nominal_rate(n_seeds, n_pieces, seed_sd, piece_sd):
    rng = np.random.default_rng(7)
    true_mean = 3.0
    covered = 0
    for _ in range(REPEATS):
        interval = hierarchical_bootstrap(_simulated_seeds(rng, n_seeds, n_pieces, seed_sd, piece_sd, true_mean), 1000, 0.95, rng)
        covered += interval.low <= true_mean <= interval.high
    # 95% nominal; the binomial sd over 200 repeats is 1.5 points, and resampling both levels is slightly conservative.
    assert 0.88 <= covered / REPEATS <= 0.995


def test_the_interval_narrows_as_pieces_and_seeds_grow():
    rng = np.random.default_rng(3)
    widths = {}
    for n_seeds, n_pieces in ((4, 8), (4, 64), (16, 64)):
        runs = [hierarchical_bootstrap(_simulated_seeds(rng, n_seeds, n_pieces, 0.3, 2.0), 1000, 0.95, rng) for _ in range(20)]
        widths[(n_seeds, n_pieces)] = np.median([r.high - r.low for r in runs])
    assert widths[(4, 8)] > widths[(4, 64)] > widths[(16, 64)]


def test_the_point_estimate_weighs_every_seed_equally():
    interval = hierarchical_bootstrap([[1.0, 1.0, 1.0, 1.0], [3.0]], 200, 0.95, np.random.default_rng(0))
    assert interval.mean == pytest.approx(2.0)
    assert (interval.n_seeds, interval.n_pieces) == (2, 5)


def test_the_same_generator_seed_gives_the_same_interval():
    data = _simulated_seeds(np.random.default_rng(1), 5, 12, 0.5, 1.0)
    first = hierarchical_bootstrap(data, 500, 0.95, np.random.default_rng(42))
    again = hierarchical_bootstrap(data, 500, 0.95, np.random.default_rng(42))
    other = hierarchical_bootstrap(data, 500, 0.95, np.random.default_rng(43))
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)


def test_one_value_per_seed_resamples_seeds_only_and_one_seed_is_degenerate():
    rng = np.random.default_rng(0)
    values = [2.0, 4.0, 6.0]
    interval = hierarchical_bootstrap([[v] for v in values], 2000, 0.95, rng)
    assert interval.mean == pytest.approx(4.0)
    assert min(values) <= interval.low < interval.mean < interval.high <= max(values)
    single = hierarchical_bootstrap([[5.0]], 100, 0.95, rng)
    assert single.low == single.mean == single.high == 5.0


def test_chunked_resampling_matches_the_distribution_of_a_small_problem(monkeypatch):
    """Many seeds x pieces run in chunks; the chunking must not change what is drawn, only when."""
    import lyria.evaluation.leaderboard.stats as stats

    data = _simulated_seeds(np.random.default_rng(5), 6, 10, 0.5, 1.0)
    whole = hierarchical_bootstrap(data, 3000, 0.9, np.random.default_rng(9))
    monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", 60 * 7)
    chunked = hierarchical_bootstrap(data, 3000, 0.9, np.random.default_rng(9))
    width = whole.high - whole.low
    assert abs(chunked.low - whole.low) < 0.1 * width and abs(chunked.high - whole.high) < 0.1 * width


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="at least one seed"):
        hierarchical_bootstrap([[], []], 100, 0.95, np.random.default_rng(0))
    with pytest.raises(ValueError, match="confidence"):
        hierarchical_bootstrap([[1.0]], 100, 1.5, np.random.default_rng(0))


def test_the_paired_test_flags_a_real_difference_and_keeps_its_size_under_the_null():
    rng = np.random.default_rng(11)
    n_pairs, alpha = 40, 0.05
    prompts = rng.normal(0.0, 1.0, n_pairs)  # a shared prompt effect: pairing removes it

    def rejects(shift: float) -> bool:
        baseline = prompts + rng.normal(0.0, 0.5, n_pairs)
        candidate = prompts + shift + rng.normal(0.0, 0.5, n_pairs)
        return paired_test(candidate - baseline).p_value < alpha

    power = np.mean([rejects(0.4) for _ in range(REPEATS)])
    size = np.mean([rejects(0.0) for _ in range(REPEATS)])
    assert power > 0.9
    assert size < 0.1


def test_the_paired_test_reports_the_mean_difference_and_counts_nonzero_pairs():
    test = paired_test([0.0, 1.0, 2.0, 3.0, -0.5, 0.0])
    assert test.n_pairs == 4
    assert test.mean_difference == pytest.approx(5.5 / 6)
    assert paired_test([0.0, 0.0]).p_value == 1.0


@pytest.mark.parametrize("alpha", [0.1, 0.05, 0.01])
def test_min_pairs_is_the_fewest_with_which_the_exact_test_can_reach_alpha(alpha):
    n = min_pairs_for(alpha)
    assert paired_test(np.arange(1.0, n + 1)).p_value <= alpha
    assert paired_test(np.arange(1.0, n)).p_value > alpha


def _holm_by_definition(p):
    """Holm from its definition: the i-th smallest p is multiplied by (m - i), and adjusted values never decrease."""
    m = len(p)
    ranked = sorted(range(m), key=lambda i: p[i])
    adjusted, running = [0.0] * m, 0.0
    for position, index in enumerate(ranked):
        running = max(running, min(1.0, (m - position) * p[index]))
        adjusted[index] = running
    return adjusted


def test_holm_matches_its_definition_and_controls_the_family():
    rng = np.random.default_rng(2)
    for _ in range(50):
        p = rng.uniform(0, 0.2, rng.integers(1, 12))
        adjusted = holm(p)
        assert adjusted == pytest.approx(_holm_by_definition(list(p)))
        assert np.all(adjusted >= p) and np.all(adjusted <= 1.0)
    # family-wise error under the global null: at most alpha, unlike uncorrected tests
    any_rejection = np.mean([np.any(holm(rng.uniform(size=10)) < 0.05) for _ in range(2000)])
    uncorrected = np.mean([np.any(rng.uniform(size=10) < 0.05) for _ in range(2000)])
    assert any_rejection <= 0.065 < 0.3 < uncorrected
