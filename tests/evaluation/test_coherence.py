"""Coherence metrics on constructed pieces: one key vs two keys, repeated sections, identical rhythms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from evaluation_support import piece_of, settings, varied_set

from lyria.data.datamodule import SequenceLayout
from lyria.evaluation.base import EvalInputs, PieceSet
from lyria.evaluation.coherence import (
    KEY_NAMES,
    Coherence,
    CoherenceSettings,
    ModelInputs,
    estimate_keys,
    grooving_similarity,
    key_consistency,
    key_score_table,
    nll_by_position,
    pitch_class_entropy_1bar,
    position_buckets,
    structureness,
)
from lyria.models.lm import LyriaLM

SETTINGS = CoherenceSettings()
C_MAJOR_BAR = [60, 64, 67, 72]


def bars(pitch_rows: list[list[int]]):
    """One quarter note per pitch, four per bar."""
    return piece_of([(4 * b + i, 1, p) for b, row in enumerate(pitch_rows) for i, p in enumerate(row)])


def test_krumhansl_schmuckler_finds_the_key_of_its_own_profile_and_mir_eval_scores_the_pairs():
    from lyria.evaluation.coherence import KRUMHANSL_MAJOR, KRUMHANSL_MINOR

    assert KEY_NAMES[estimate_keys(np.roll(KRUMHANSL_MAJOR, 7)[None])[0]] == "G major"
    assert KEY_NAMES[estimate_keys(np.roll(KRUMHANSL_MINOR, 9)[None])[0]] == "A minor"
    table = key_score_table()
    assert table[KEY_NAMES.index("C major"), KEY_NAMES.index("C major")] == 1.0
    assert table[KEY_NAMES.index("C major"), KEY_NAMES.index("G major")] == 0.5  # a fifth
    assert estimate_keys(np.zeros((1, 12)))[0] == -1


def test_one_key_is_consistent_and_a_jump_to_a_distant_key_is_not():
    c_major = [[60, 62, 64, 65], [67, 69, 71, 72], [64, 67, 72, 60], [65, 69, 62, 67]]
    f_sharp_major = [[p + 6 for p in row] for row in c_major]
    assert key_consistency(bars(c_major * 4), SETTINGS) == 1.0
    # 2 windows in C, 2 in F#: of 6 pairs, the 2 same-key pairs score 1, the tritone pairs 0
    assert key_consistency(bars(c_major * 2 + f_sharp_major * 2), SETTINGS) == pytest.approx(2 / 6)
    assert math.isnan(key_consistency(bars(c_major), SETTINGS))  # one window: nothing to compare


def test_structureness_sees_a_returning_section():
    rng = np.random.default_rng(0)
    section = lambda: [list(rng.choice([60, 62, 64, 65, 67, 69, 71], 4)) for _ in range(4)]  # noqa: E731
    a, b = section(), section()
    aaba = bars(a + a + b + a)
    through_composed = bars(section() + section() + section() + section())
    assert structureness(aaba, SETTINGS) > structureness(through_composed, SETTINGS) + 0.1
    assert structureness(bars([C_MAJOR_BAR] * 16), SETTINGS) == pytest.approx(0.0, abs=1e-9)  # a loop is no structure


def test_grooving_similarity_and_windowed_entropy_by_hand():
    assert grooving_similarity(bars([C_MAJOR_BAR] * 4), SETTINGS) == 1.0
    # bars with onsets on 4 vs 2 of 16 slots differ in 2 slots
    half_notes = piece_of([(0, 1, 60), (1, 1, 62), (2, 1, 64), (3, 1, 65), (4, 2, 60), (6, 2, 62)])
    assert grooving_similarity(half_notes, SETTINGS) == pytest.approx(1 - 2 / 16)
    # every bar holds C and G for equal time: one bit per bar
    assert pitch_class_entropy_1bar(bars([[60, 67, 60, 67]] * 3), SETTINGS) == pytest.approx(1.0)


def test_family_values_and_similarity_error_against_itself():
    pieces = [bars([C_MAJOR_BAR, [62, 65, 69, 72]] * 4)] * 3
    same = PieceSet("same", ["a", "b", "c"], pieces, [None] * 3)
    result = Coherence().compute(EvalInputs(same, same, None, 0, settings()))
    assert result.values["similarity_error"] == pytest.approx(0.0)
    assert result.values["key_consistency"] == pytest.approx(1.0)
    assert set(result.per_piece) >= {"structureness", "key_consistency", "grooving_similarity", "similarity_error"}
    other = Coherence().compute(EvalInputs(varied_set("g", 4, 1), same, None, 0, settings()))
    assert other.values["similarity_error"] > 0.05


def test_nll_by_position_matches_a_direct_forward_pass():
    torch.manual_seed(0)
    mixer = {
        "_target_": "lyria.models.mixers.AttentionMixer",
        "window": None,
        "position": {"_target_": "lyria.models.positions.RotaryPosition"},
    }
    model = LyriaLM(
        [20], mixer, d_model=16, n_layers=1, n_heads=2, d_ff=32, dropout=0.0, max_seq_len=16, num_styles=2, pad_id=0
    ).eval()
    layout = SequenceLayout(bos=np.array(1), eos=np.array(2), pad_id=0)
    rng = np.random.default_rng(0)
    pieces = [(rng.integers(3, 20, size=n), np.zeros(n, dtype=np.int64), 0) for n in (5, 30)]
    nll = nll_by_position(ModelInputs(model, layout, pieces), max_len=17)
    assert nll.shape == (16,)
    # direct: the short piece (BOS + 5 + EOS = 7 tokens, 6 targets) and the long one cut to 17 tokens
    expected_sum, expected_count = np.zeros(16), np.zeros(16)
    for ids, bar_ids, _ in pieces:
        tokens, _ = layout.frame(ids, bar_ids, 0)
        tokens = torch.from_numpy(tokens[:17])[None]
        logits, _ = model(tokens[:, :-1])
        losses = torch.nn.functional.cross_entropy(logits[0], tokens[0, 1:], reduction="none").detach().numpy()
        expected_sum[: len(losses)] += losses
        expected_count[: len(losses)] += 1
    np.testing.assert_allclose(nll, expected_sum / expected_count, rtol=1e-5)
    buckets = position_buckets(nll)
    assert buckets["nll_position.1-2"] == pytest.approx(nll[0])
    assert buckets["nll_position.4-8"] == pytest.approx(nll[3:7].mean())
    assert "context_gain" in buckets and np.isfinite(buckets["context_gain"])
