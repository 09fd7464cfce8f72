"""Finding runs, reading their files (bad ones are counted skips), grouping over seeds and labelling the groups."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from leaderboard_support import GroupSpec, make_study, training_config, write_run
from lyria.evaluation.leaderboard.runs import collect_runs, group_runs

IGNORE = ["seed", "task_name", "paths.*", "logger.*", "*cache_dir"]


@pytest.fixture
def study(tmp_path):
    specs = [GroupSpec("attention_rope"), GroupSpec("attention_nope"), GroupSpec("dilated_conv")]
    return make_study(tmp_path / "sweep", specs, seeds=[1, 2, 3], n_pieces=6, rng=np.random.default_rng(0))


def test_runs_of_one_config_group_over_seeds_and_are_labelled_by_their_override(study):
    runs, skips = collect_runs(study)
    assert skips == [] and len(runs) == 9
    groups = group_runs(runs, IGNORE)
    assert [g.label for g in groups] == ["model/mixer=attention_nope", "model/mixer=attention_rope", "model/mixer=dilated_conv"]
    for group in groups:
        assert [run.seed for run in group.runs] == [1, 2, 3]
        assert len({run.path for run in group.runs}) == 3


def test_a_config_key_outside_the_ignore_list_splits_a_group(tmp_path):
    for seed, d_model in ((1, 64), (2, 64), (3, 128)):
        run_dir = tmp_path / "runs" / f"s{seed}"
        write_run(run_dir, training_config("attention_rope", seed, run_dir, d_model=d_model), None, {"final_val_loss": 1.0}, None)
    groups = group_runs(collect_runs(tmp_path / "runs")[0], IGNORE)
    assert sorted(len(g.runs) for g in groups) == [1, 2]
    # No overrides recorded: the label is the config value that differs
    assert sorted(g.label for g in groups) == ["model.d_model=128", "model.d_model=64"]
    # Without the ignore list, paths and seeds make every run its own group
    assert len(group_runs(collect_runs(tmp_path / "runs")[0], [])) == 3


def test_a_group_without_the_distinguishing_override_is_labelled_by_its_hydra_choice(tmp_path):
    rng = np.random.default_rng(0)
    make_study(tmp_path / "sweep", [GroupSpec("dilated_conv")], seeds=[1, 2], n_pieces=3, rng=rng)
    default = tmp_path / "sweep" / "default"
    write_run(default, training_config("attention_rope", 1, default), ["seed=1", "trainer=debug"], {"final_val_loss": 1.0}, None,
              choices={"model/mixer": "attention_rope", "trainer": "debug"})
    labels = sorted(g.label for g in group_runs(collect_runs(tmp_path / "sweep")[0], IGNORE))
    assert labels == ["model/mixer=attention_rope", "model/mixer=dilated_conv"]


def test_groups_answer_to_their_overrides_and_choice_values(study):
    group = next(g for g in group_runs(collect_runs(study)[0], IGNORE) if g.label == "model/mixer=dilated_conv")
    assert group.describes("model/mixer=dilated_conv") and group.describes("dilated_conv") and group.describes("trainer=debug")
    assert not group.describes("attention_rope") and not group.describes("seed=1")


def test_metrics_summary_and_per_piece_values_are_read_and_named_by_family(study):
    run = collect_runs(study)[0][0]
    assert set(run.metrics) == {
        "train.final_val_bits_per_note", "train.global_step", "coherence.structureness", "mode_collapse.score",
        "diversity.vendi", "features.pitch_range_mean",
    }  # settings, timings and the other descriptions are not metrics
    assert set(run.per_piece) == {"coherence.structureness", "features.pitch_range"}
    assert len(run.per_piece["coherence.structureness"]) == 6
    assert run.reference == {"coherence.structureness": 0.55, "diversity.vendi": 0.7}


def test_a_bare_per_piece_name_joins_its_one_family_metric_else_is_a_piece_metric(tmp_path):
    run_dir = tmp_path / "runs" / "0"
    metrics = {
        "coherence": {"structureness": 0.5},
        "features": {"range": 1.0},
        "style": {"range": 2.0},
        "per_piece": {"a.mid": {"structureness": 0.4, "range": 3.0, "density": 2.0}, "b.mid": {"structureness": None}},
    }
    write_run(run_dir, training_config("attention_rope", 1, run_dir), None, None, metrics)
    run = collect_runs(tmp_path / "runs")[0][0]
    assert run.per_piece == {"coherence.structureness": {"a.mid": 0.4}, "piece.range": {"a.mid": 3.0}, "piece.density": {"a.mid": 2.0}}


def test_an_evaluation_in_a_subfolder_joins_the_run_that_holds_the_config(tmp_path):
    run_dir = tmp_path / "runs" / "0"
    write_run(run_dir, training_config("attention_rope", 1, run_dir), ["seed=1"], {"final_val_loss": 1.0}, None)
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "metrics.json").write_text(json.dumps({"mode_collapse": {"score": 0.2}}))
    runs, skips = collect_runs(tmp_path / "runs")
    assert skips == [] and len(runs) == 1
    assert runs[0].path == run_dir and runs[0].metrics["mode_collapse.score"] == 0.2


def test_overrides_of_another_app_run_in_the_same_folder_are_not_taken_for_the_training(study):
    # `lyria-evaluate ... hydra.run.dir=RUN` replaces RUN/.hydra with its own config and overrides
    hydra = study / "0" / ".hydra"
    (hydra / "config.yaml").write_text("generated: samples\neval: {seed: 0}\n")
    (hydra / "overrides.yaml").write_text("- generated=samples\n- eval=fast\n")
    runs = collect_runs(study)[0]
    evaluated = next(r for r in runs if r.path == study / "0")
    assert evaluated.overrides == [] and evaluated.choices == {}
    assert evaluated.config["model.mixer._target_"].endswith("AttentionMixer")  # from checkpoints/config.yaml
    # the group's other seeds still recorded their overrides
    labels = {g.label for g in group_runs(runs, IGNORE)}
    assert labels == {"model/mixer=attention_rope", "model/mixer=attention_nope", "model/mixer=dilated_conv"}


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: (d / "metrics.json").write_text("{not json"), "metrics.json: not valid JSON"),
        (lambda d: (d / "metrics.json").write_text("[1, 2]"), "expected a JSON object at the top, found list"),
        (lambda d: (d / "summary.json").write_text(json.dumps({"paths": {}})), "summary.json: no 'metrics' object"),
        (lambda d: (d / "metrics.json").write_text(json.dumps({"per_piece": [1]})), "'per_piece' should map piece names"),
        (lambda d: (d / "metrics.json").write_text(json.dumps({"per_piece": {"a": 3}})), r"per_piece\['a'\] should be"),
        (lambda d: (d / "checkpoints" / "config.yaml").unlink() or (d / ".hydra" / "config.yaml").unlink(), "no training config"),
        (lambda d: (d / "checkpoints" / "config.yaml").write_text("model: [unclosed"), "not a readable YAML config"),
        (lambda d: (d / ".hydra" / "overrides.yaml").write_text("a: 1"), "expected a list of overrides"),
        (lambda d: (d / "extra").mkdir() or (d / "extra" / "metrics.json").write_text("{}"), "several files for one run"),
    ],
)
def test_a_run_with_a_broken_file_is_a_counted_skip_with_its_reason(study, damage, reason):
    damage(study / "4")
    runs, skips = collect_runs(study)
    assert len(runs) == 8 and len(skips) == 1
    assert skips[0].path == study / "4"
    assert re.search(reason, skips[0].reason), skips[0].reason


def test_non_finite_values_are_left_out_with_a_note_and_text_values_ignored(study):
    metrics = json.loads((study / "0" / "metrics.json").read_text())
    metrics["mode_collapse"]["score"] = float("nan")
    metrics["mode_collapse"]["method"] = "ngram"
    (study / "0" / "metrics.json").write_text(json.dumps(metrics))
    run = next(r for r in collect_runs(study)[0] if r.path == study / "0")
    assert "mode_collapse.score" not in run.metrics and "mode_collapse.method" not in run.metrics
    assert any("'mode_collapse.score' is nan" in note for note in run.notes)


def test_samples_are_found_from_the_generated_dir(tmp_path):
    root = make_study(tmp_path / "sweep", [GroupSpec("attention_rope")], seeds=[1], n_pieces=4, rng=np.random.default_rng(0), n_samples=4)
    run = collect_runs(root, samples_per_run=2)[0][0]
    assert [s.name for s in run.samples] == ["sample_000", "sample_001"]
    assert set(run.samples[0].files) == {".mid", ".wav", ".png"}


def test_a_missing_runs_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        collect_runs(tmp_path / "nowhere")
