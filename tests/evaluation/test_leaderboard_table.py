"""The leaderboard table: cells, ranking direction, paired tests against the baseline, degenerate intervals."""

from __future__ import annotations

import numpy as np
import pytest

from leaderboard_support import GroupSpec, leaderboard_config, make_study
from lyria.config import ConfigError, LeaderboardSchema, validate
from lyria.evaluation.leaderboard.runs import collect_runs, group_runs
from lyria.evaluation.leaderboard.table import BETTER, DEGENERATE_SEEDS, ONE_SEED, WORSE, Directions, interval_flag, make_leaderboard

SPECS = [
    GroupSpec("attention_rope", coherence=0.5, collapse=0.1, diversity=0.2, bits_per_note=5.0),
    GroupSpec("dilated_conv", coherence=0.6, collapse=0.3, diversity=0.8, bits_per_note=4.0),
    GroupSpec("hierarchical", coherence=0.5, collapse=0.5, diversity=0.5, bits_per_note=6.0),
]


def board_for(root, compose, *overrides):
    cfg = validate(leaderboard_config(compose, root, *overrides), LeaderboardSchema)
    runs, skips = collect_runs(root)
    return make_leaderboard(group_runs(runs, cfg.identity_ignore), cfg, skips)


@pytest.fixture
def study(tmp_path):
    return make_study(tmp_path / "sweep", SPECS, seeds=[1, 2, 3], n_pieces=12, rng=np.random.default_rng(0))


def _order(board):
    return [row.group.label.split("=")[1] for row in board.rows]


@pytest.mark.parametrize(
    ("rank_by", "expected"),
    [
        ("mode_collapse.score", ["attention_rope", "dilated_conv", "hierarchical"]),  # lower is better
        ("diversity.vendi", ["dilated_conv", "hierarchical", "attention_rope"]),  # higher is better
        ("train.final_val_bits_per_note", ["dilated_conv", "attention_rope", "hierarchical"]),
    ],
)
def test_ranking_follows_the_direction_of_the_metric(study, compose_train, rank_by, expected):
    board = board_for(study, compose_train, f"rank_by={rank_by}")
    assert _order(board) == expected
    assert [row.rank for row in board.rows] == [1, 2, 3]
    assert board.metrics[0] == rank_by
    # with no baseline given, the best-ranked group is the baseline
    assert board.baseline == f"model/mixer={expected[0]}"


def test_a_real_difference_is_flagged_and_a_null_one_is_not(tmp_path, compose_train):
    for seed in range(3):
        root = make_study(tmp_path / f"sweep{seed}", SPECS, seeds=[1, 2, 3], n_pieces=12, rng=np.random.default_rng(seed))
        board = board_for(root, compose_train, "baseline=attention_rope", "higher_is_better=[coherence.*]")
        cells = {row.group.label: row.cells["coherence.structureness"] for row in board.rows}
        shifted, null = cells["model/mixer=dilated_conv"], cells["model/mixer=hierarchical"]
        assert shifted.test.n_pairs == 36 and shifted.verdict == BETTER and shifted.p_adjusted < 0.05
        assert null.test is not None and null.verdict == ""
        assert cells["model/mixer=attention_rope"].test is None  # the baseline itself
    for row in board.rows:
        for cell in row.cells.values():
            if cell.test:
                assert cell.p_adjusted >= cell.test.p_value


def test_a_worse_group_is_marked_worse_and_run_level_metrics_with_three_seeds_are_not_tested(study, compose_train):
    board = board_for(study, compose_train, "baseline=dilated_conv", "higher_is_better=[coherence.*]")
    rope = next(row for row in board.rows if row.group.label == "model/mixer=attention_rope")
    assert rope.cells["coherence.structureness"].verdict == WORSE
    # three seeds give three pairs: the test could never reach alpha, so it is not run, and a note says so
    assert rope.cells["mode_collapse.score"].test is None
    assert any("mode_collapse.score (3)" in note for note in board.notes)
    # Holm counts exactly the tests that were made
    assert board.n_tests == sum(cell.test is not None for row in board.rows for cell in row.cells.values())


def test_intervals_over_a_few_seeds_only_are_flagged(study, compose_train):
    board = board_for(study, compose_train)
    cells = board.rows[0].cells
    assert not cells["mode_collapse.score"].per_piece and interval_flag(cells["mode_collapse.score"], board.min_seeds) == DEGENERATE_SEEDS
    assert cells["coherence.structureness"].per_piece and interval_flag(cells["coherence.structureness"], board.min_seeds) == ""
    assert interval_flag(cells["mode_collapse.score"], 3) == ""


def test_a_single_seed_is_flagged_as_covering_pieces_only(tmp_path, compose_train):
    root = make_study(tmp_path / "sweep", SPECS[:2], seeds=[1], n_pieces=10, rng=np.random.default_rng(0))
    board = board_for(root, compose_train)
    assert interval_flag(board.rows[0].cells["coherence.structureness"], board.min_seeds) == ONE_SEED


def test_the_reference_row_holds_the_real_vs_real_values(study, compose_train):
    board = board_for(study, compose_train)
    assert board.reference == {"coherence.structureness": 0.55, "diversity.vendi": 0.7}


def test_columns_follow_the_include_patterns_after_rank_by(study, compose_train):
    # the default: the headline metrics that exist, in the config's order; descriptive features are left out
    assert board_for(study, compose_train).metrics == ["train.final_val_bits_per_note", "diversity.vendi", "mode_collapse.score", "coherence.structureness"]
    board = board_for(study, compose_train, "metrics=[coherence.*,diversity.*]")
    assert board.metrics == ["train.final_val_bits_per_note", "coherence.structureness", "diversity.vendi"]
    board = board_for(study, compose_train, "metrics=[*]", "rank_by=null", "exclude_metrics=[train.*]")
    assert board.metrics == ["coherence.structureness", "mode_collapse.score", "diversity.vendi", "features.pitch_range_mean", "features.pitch_range"]
    assert all(row.rank is None for row in board.rows) and board.baseline is None and board.n_tests == 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rank_by=coherence.structureness", r"rank_by=coherence.structureness: no known direction; add it to lower_is_better"),
        ("rank_by=diversity.typo", r"rank_by=diversity.typo is not a metric of any run; available: .*diversity.vendi"),
        ("baseline=transformer_xl", r"baseline='transformer_xl' matches no group.*model/mixer=dilated_conv"),
        ("baseline=debug", r"baseline='debug' matches 3 groups"),
    ],
)
def test_bad_ranking_and_baseline_choices_are_named(study, compose_train, override, message):
    with pytest.raises(ConfigError, match=message):
        board_for(study, compose_train, override)


def test_the_most_specific_direction_rule_wins_and_equal_conflicts_are_errors():
    rules = Directions(lower=("*loss*", "distances.*"), higher=("distances.overlap*", "style.fidelity"))
    assert rules.of("train.final_val_loss") == "lower"
    assert rules.of("distances.pitch_kl") == "lower"
    assert rules.of("distances.overlap_pitch") == "higher"
    assert rules.of("style.fidelity") == "higher"
    assert rules.of("features.pitch_range") is None
    with pytest.raises(ConfigError, match=r"matches 'x\.\*' in lower_is_better and 'x\.\*' in higher_is_better"):
        Directions(lower=("x.*",), higher=("x.*",)).of("x.y")


@pytest.mark.parametrize(
    ("metric", "direction"),
    [
        ("train.final_val_bits_per_note", "lower"),
        ("train.final_val_loss", "lower"),
        ("mode_collapse.score", "lower"),
        ("memorization.copy_rate", "lower"),
        ("distances.frechet", "lower"),
        ("diversity.vendi", "higher"),
        ("diversity.self_bleu", "lower"),  # an exact name beats the family's pattern
        ("distances.mean_overlap", "higher"),
        ("mode_collapse.coverage", "higher"),
        ("style.fidelity", "higher"),
        ("coherence.key_consistency", None),
    ],
)
def test_the_default_directions(compose_train, tmp_path, metric, direction):
    cfg = leaderboard_config(compose_train, tmp_path)
    assert Directions(tuple(cfg.lower_is_better), tuple(cfg.higher_is_better)).of(metric) == direction
