"""Distribution distances and diversity on constructed sets: a set against itself, identical pieces, hand counts."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from evaluation_support import melody, random_piece, settings, varied_set

from lyria.evaluation.base import EvalInputs, PieceSet
from lyria.evaluation.distances import Distances, compare_densities, frechet_distance, kde_on_grid
from lyria.evaluation.diversity import Diversity, distinct_n, sample_pairs, self_bleu, vendi_score
from lyria.evaluation.tokens import TokenTable, tokens_for


def inputs(generated: PieceSet, reference: PieceSet, seed: int = 0) -> EvalInputs:
    return EvalInputs(generated, reference, None, seed, settings())


def copy_of(piece_set: PieceSet, label: str) -> PieceSet:
    return PieceSet(label, list(piece_set.names), list(piece_set.pieces), list(piece_set.styles))


def test_a_set_against_itself_has_frechet_0_overlap_1_kl_0():
    real = varied_set("real", 12, seed=1)
    result = Distances().compute(inputs(real, copy_of(real, "same")))
    assert result.values["frechet"] == pytest.approx(0, abs=1e-8)
    scalar_overlaps = {k: v for k, v in result.values.items() if k.endswith(".overlap") and v is not None}
    assert scalar_overlaps and all(v == pytest.approx(1.0) for v in scalar_overlaps.values())
    assert all(v == pytest.approx(0, abs=1e-12) for k, v in result.values.items() if k.endswith(".kl") and v is not None)
    assert result.values["mean_overlap"] == pytest.approx(1.0)
    # intra-set distances of the two copies are the same sample
    assert result.values["pitch_range.intra_generated"] == result.values["pitch_range.intra_reference"]


def test_a_different_set_is_further_away():
    real = varied_set("real", 12, seed=1)
    scales = PieceSet(
        "scales", [f"s{i}" for i in range(12)], [melody(list(range(48 + i, 72 + i))) for i in range(12)], [None] * 12
    )
    near = Distances().compute(inputs(varied_set("other", 12, seed=2), real))
    far = Distances().compute(inputs(scales, real))
    assert far.values["frechet"] > near.values["frechet"] > 0
    assert far.values["mean_overlap"] < near.values["mean_overlap"] < 1


def test_kde_and_density_comparison():
    grid = np.linspace(-5, 5, 201)
    mass = kde_on_grid(np.array([0.0]), grid, bandwidth=1.0)
    assert mass.sum() == pytest.approx(1.0)
    assert grid[np.argmax(mass)] == pytest.approx(0.0)
    overlap, kl = compare_densities(np.zeros(50), np.full(50, 100.0), 512)
    assert overlap == pytest.approx(0.0, abs=1e-9) and kl > 10
    # a kernel wider than the grid keeps the grid's length
    wide = kde_on_grid(np.array([0.0]), np.linspace(-1, 1, 11), bandwidth=5.0)
    assert wide.shape == (11,) and wide.sum() == pytest.approx(1.0) and np.argmax(wide) == 5


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(500, 3))
    assert frechet_distance(points, points + np.array([3.0, 0, 0])) == pytest.approx(9.0, rel=1e-6)


def test_k_identical_pieces_have_vendi_score_1_and_distinct_ones_k():
    piece = random_piece(3)
    identical = np.repeat(np.ones((1, 4)), 7, axis=0)
    assert vendi_score(identical, bandwidth=1.0) == pytest.approx(1.0)
    far_apart = np.eye(5) * 1000
    assert vendi_score(far_apart, bandwidth=1.0) == pytest.approx(5.0)
    copies = PieceSet("copies", [f"c{i}" for i in range(6)], [piece] * 6, [None] * 6)
    result = Diversity(note_f1_pairs=10).compute(inputs(copies, varied_set("real", 10, seed=1)))
    assert result.values["vendi"] == pytest.approx(1.0)
    assert result.values["self_bleu"] == pytest.approx(1.0)
    assert result.values["pairwise_note_f1"] == pytest.approx(1.0)


def test_distinct_n_by_hand():
    tokens = TokenTable.from_sequences([np.array([1, 2, 1, 2]), np.array([1, 2, 3])])
    # bigrams: (1,2) (2,1) (1,2) | (1,2) (2,3): 3 distinct of 5; none crosses the piece boundary
    assert distinct_n(tokens, 2) == pytest.approx(3 / 5)
    assert distinct_n(tokens, 1) == pytest.approx(3 / 7)
    assert math.isnan(distinct_n(TokenTable.from_sequences([np.array([1])]), 2))


def brute_force_bleu(hypothesis: list[int], references: list[list[int]], max_n: int = 4) -> float:
    def counts(seq, n):
        grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
        return {g: grams.count(g) for g in set(grams)}

    log_p = 0.0
    for n in range(1, max_n + 1):
        hyp = counts(hypothesis, n)
        clipped = sum(min(c, max(counts(r, n).get(g, 0) for r in references)) for g, c in hyp.items())
        if clipped == 0:
            return 0.0
        log_p += math.log(clipped / sum(hyp.values())) / max_n
    closest = min((abs(len(r) - len(hypothesis)), len(r)) for r in references)[1]
    penalty = 1.0 if len(hypothesis) > closest else math.exp(1 - closest / len(hypothesis))
    return penalty * math.exp(log_p)


def test_self_bleu_equals_a_direct_computation_on_random_sequences():
    rng = np.random.default_rng(4)
    sequences = [list(rng.integers(0, 4, size=int(rng.integers(6, 30)))) for _ in range(7)]
    got = self_bleu(TokenTable.from_sequences([np.array(s) for s in sequences]))
    expected = [brute_force_bleu(s, [r for j, r in enumerate(sequences) if j != i]) for i, s in enumerate(sequences)]
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("n", [2, 3, 7, 40])
def test_sampled_pairs_are_distinct_ordered_pairs(n):
    pairs = sample_pairs(n, 25, np.random.default_rng(0))
    assert len(pairs) == min(25, n * (n - 1) // 2)
    assert all(0 <= i < j < n for i, j in pairs)
    assert len({tuple(p) for p in pairs.tolist()}) == len(pairs)
    if n <= 7:
        assert sorted(map(tuple, pairs.tolist())) == list(itertools.combinations(range(n), 2))


def test_evaluation_tokens_are_remi_at_default_settings_whatever_the_model_used():
    piece_set = PieceSet("one", ["a"], [melody([60, 62, 64, 65])], [None])
    tokens = tokens_for(piece_set)
    from lyria.evaluation.tokens import evaluation_tokenizer

    tokenizer = evaluation_tokenizer()
    assert tokenizer.name == "REMI"
    assert tokenizer.settings()["config"]["beat_res"] == {"0_4": 8, "4_12": 4}  # MidiTok's default grid
    names = [tokenizer.tokens_of(int(i))[0] for i in tokens.piece(0)]
    assert [n for n in names if n.startswith("Pitch")] == ["Pitch_60", "Pitch_62", "Pitch_64", "Pitch_65"]


def test_diversity_is_seeded():
    generated, reference = varied_set("gen", 10, seed=5), varied_set("real", 10, seed=6)
    first = Diversity(note_f1_pairs=7).compute(inputs(generated, reference, seed=3)).values
    second = Diversity(note_f1_pairs=7).compute(inputs(copy_of(generated, "gen"), copy_of(reference, "real"), seed=3)).values
    assert first == second
    assert first["pairwise_note_f1_pairs"] == 7
