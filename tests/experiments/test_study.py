"""Studies: a training run that generates a seeded sample set and evaluates it in its folder, and the experiment
configs that sweep it (every file of conf/experiment/ is composed and its study settings checked)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hydra import compose, initialize_config_dir

from lyria.cli import CONF_DIR
from lyria.config import ConfigError
from lyria.evaluation.leaderboard.runs import collect_runs
from lyria.experiments import EVALUATION_DIR, SAMPLES_DIR, check_study, study_configs
from lyria.training.train import run_study_on_rank_zero, train

CONF = Path(CONF_DIR)
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# A study is an experiment with its folder under experiments/ (README, results); the others (quickstart, ...) are jobs.
STUDIES = [name for name in EXPERIMENTS if (CONF.parent / "experiments" / name / "README.md").is_file()]
SCALES = [None] + sorted(p.stem for p in (CONF / "study_scale").glob("*.yaml"))
# Config groups a study may need that land separately (the conditioning schemes); a study that names a missing
# option is skipped with the option named, not failed.
TINY_STUDY = [
    "study=default",
    "study.generate.n=3",
    "study.generate.batch_size=3",
    "study.generate.max_new_tokens=48",
    "study.generate.max_bars=4",
    "study.generate.render.formats=[midi]",
    "study.evaluate.overrides=['eval.num_proc=1','eval.baseline=false']",
]


def _tiny_data(midi_folder: Path) -> list[str]:
    return [
        "data=midi_folder",
        f"data.path={midi_folder}",
        "data.max_pieces_per_style=null",
        "data.val_fraction=0.2",
        "data.test_fraction=0.3",
    ]


def _missing_options(overrides: list[str]) -> list[str]:
    """`group=option` choices (from a sweep's params) whose config file does not exist."""
    missing = []
    for override in overrides:
        group, _, options = override.partition("=")
        if "/" in group or (CONF / group).is_dir():
            missing += [f"{group}={o}" for o in options.split(",") if not (CONF / group / f"{o}.yaml").is_file()]
    return missing


def _compose(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra)


def _experiment_needs(name: str) -> list[str]:
    """The group options an experiment file names (its defaults and its sweep) that are not in conf/."""
    text = yaml.safe_load((CONF / "experiment" / f"{name}.yaml").read_text())
    wanted = []
    for entry in text.get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                group = key.replace("override ", "").strip().lstrip("/")
                if isinstance(value, str):
                    wanted.append(f"{group}={value}")
    params = ((text.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    wanted += [f"{k}={v}" for k, v in params.items()]
    return _missing_options(wanted)


@pytest.mark.slow
def test_a_study_run_trains_generates_and_evaluates_into_a_leaderboard_ready_folder(compose_train, midi_folder, tmp_path, one_thread):
    cfg = compose_train(*_tiny_data(midi_folder), *TINY_STUDY, "seed=7")
    metrics, objects = train(cfg)
    run = Path(objects["paths"]["run_dir"])

    index = json.loads((run / SAMPLES_DIR / "index.json").read_text())
    assert index["written"] + index["failed"] == 3 and index["settings"]["seed"] == 0
    assert Path(index["checkpoint"]) == Path(objects["paths"]["best_checkpoint"]).resolve()
    document = json.loads((run / EVALUATION_DIR / "metrics.json").read_text())
    assert document["generated"]["n_pieces"] == index["written"]
    assert Path(document["generated"]["dir"]) == run / SAMPLES_DIR
    # the reference is the test split of the data the run trained on (its config beside the checkpoint)
    assert document["reference"]["data"].endswith("checkpoints/config.yaml")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["paths"]["evaluation"] == str(run / EVALUATION_DIR / "metrics.json")

    # the run folder is one leaderboard run, with the training's and the evaluation's metrics
    runs, skips = collect_runs(run.parent)
    assert not skips and len(runs) == 1
    assert runs[0].path == run and runs[0].seed == 7
    assert runs[0].metrics["train.final_val_loss"] == pytest.approx(metrics["final_val_loss"])
    assert "diversity.distinct_4" in runs[0].metrics and runs[0].per_piece
    assert {s.name for s in runs[0].samples} <= {f"sample_{i:03d}" for i in range(3)}


def test_study_settings_are_checked_before_any_training(compose_train, midi_folder, tmp_path):
    cfg = compose_train(*_tiny_data(midi_folder), *TINY_STUDY, "+study.generate.temprature=0.7")
    with pytest.raises(ConfigError, match=r"study\.generate.*temprature.*did you mean 'temperature'"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()

    cfg = compose_train(*_tiny_data(midi_folder), *TINY_STUDY, "study.evaluate.eval=fastest")
    with pytest.raises(ConfigError, match="eval=fastest"):
        train(cfg)

    # values are checked too, not only keys (the checkpoint the training will write is not needed for that)
    cfg = compose_train(*_tiny_data(midi_folder), *TINY_STUDY, "study.generate.top_p=2.0")
    with pytest.raises(ConfigError, match=r"study\.generate.*top_p=2\.0"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+study.generate.ckpt=other.ckpt", r"study\.generate\.ckpt is set by the study"),
        ("+study.evaluate.generated=elsewhere", r"study\.evaluate\.generated is set by the study"),
        ("study.generate.overrides=oops", r"study\.generate\.overrides should be a list"),
        ("study.evaluate.eval={plots:false}", r"study\.evaluate\.eval names a conf/eval group"),
    ],
)
def test_settings_the_run_owns_or_of_the_wrong_shape_are_refused(compose_train, override, message):
    cfg = compose_train(*TINY_STUDY, override)
    with pytest.raises(ConfigError, match=message):
        check_study(cfg)


def test_study_configs_point_generation_and_evaluation_at_the_run(compose_train, tmp_path):
    cfg = compose_train(*TINY_STUDY, "study.generate.top_p=0.5", "study.evaluate.overrides=['eval.max_pieces=2']")
    # a sweep folder named after its overrides: characters Hydra's override grammar would choke on
    run = tmp_path / "model" / "mixer=attention_rope,seed=1 (copy)"
    checkpoint = run / "checkpoints" / "best.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.touch()
    (run / SAMPLES_DIR).mkdir()
    configs = study_configs(cfg, run, checkpoint)
    assert configs.generate.ckpt == str(checkpoint) and configs.generate.top_p == 0.5 and configs.generate.n == 3
    assert configs.generate.output_dir == str(run / SAMPLES_DIR)
    assert configs.evaluate.generated == configs.generate.output_dir
    assert configs.evaluate.output_dir == str(run / EVALUATION_DIR)
    assert configs.evaluate.checkpoint == str(checkpoint) and configs.evaluate.training_data == "auto"
    assert configs.evaluate.eval.max_pieces == 2 and configs.evaluate.eval.families.memorization is None  # eval=fast
    # evaluation assets and prepared data come from the run's own cache
    assert configs.evaluate.assets_dir == f"{cfg.paths.cache_dir}/eval"


def test_only_rank_zero_runs_the_study(compose_train, tmp_path):
    cfg = compose_train(*TINY_STUDY)
    from lyria.config import TrainSchema, validate

    cfg = validate(cfg, TrainSchema)
    paths = {"best_checkpoint": str(tmp_path / "missing.ckpt"), "last_checkpoint": None}
    assert run_study_on_rank_zero(cfg, SimpleNamespace(is_global_zero=False), tmp_path, paths) is None
    assert not (tmp_path / SAMPLES_DIR).exists()
    # rank 0 does run it (and here finds no checkpoint at the path it was given)
    with pytest.raises(ConfigError, match="missing.ckpt"):
        run_study_on_rank_zero(cfg, SimpleNamespace(is_global_zero=True), tmp_path, paths)


def test_no_study_by_default(compose_train):
    from lyria.config import TrainSchema, validate

    assert validate(compose_train(), TrainSchema).study is None


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", STUDIES)
def test_every_study_composes_at_every_scale_with_valid_study_settings(name, scale):
    missing = _experiment_needs(name)
    if missing:
        pytest.skip(f"experiment={name} needs {', '.join(dict.fromkeys(missing))}, not in conf/ yet")
    overrides = [f"experiment={name}"] + ([f"study_scale={scale}"] if scale else [])
    cfg = _compose(*overrides, hydra=True)
    assert cfg.task_name == name
    params = dict(cfg.hydra.sweeper.params)
    assert params.get("seed") == "1,2,3", f"experiment={name} should sweep 3 seeds"
    assert not _missing_options([f"{k}={v}" for k, v in params.items()])
    assert cfg.study is not None
    configs = check_study(cfg)
    if scale is not None:
        # a smoke run is small: a tiny model, a few hundred steps, a few samples, csv logs (no network)
        assert cfg.trainer.max_steps <= 300 and cfg.model.d_model <= 128 and cfg.data.max_pieces_per_style <= 50
        assert configs.generate.n <= 8 and "wav" not in configs.generate.render.formats
        assert cfg.logger._target_.endswith("CSVLogger")


def test_the_four_studies_are_found():
    assert {"attention_ablation", "tokenizer_ablation", "conditioning_ablation", "long_context"} <= set(STUDIES)
    assert "quickstart" not in STUDIES


def test_attention_ablation_sweeps_every_mixer():
    params = _compose("experiment=attention_ablation", hydra=True).hydra.sweeper.params
    assert sorted(params["model/mixer"].split(",")) == sorted(p.stem for p in (CONF / "model" / "mixer").glob("*.yaml"))


def test_tokenizer_ablation_sweeps_every_tokenizer_and_ranks_by_bits_per_note():
    params = _compose("experiment=tokenizer_ablation", hydra=True).hydra.sweeper.params
    assert sorted(params["tokenizer"].split(",")) == sorted(p.stem for p in (CONF / "tokenizer").glob("*.yaml"))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        leaderboard = compose(config_name="leaderboard", overrides=["runs=x"])
    assert leaderboard.rank_by == "train.final_val_bits_per_note"


def test_long_context_reaches_4096_tokens_with_the_long_range_mixers():
    cfg = _compose("experiment=long_context", hydra=True)
    assert cfg.model.max_seq_len == 4096 and cfg.study.generate.max_new_tokens == 4096
    mixers = cfg.hydra.sweeper.params["model/mixer"].split(",")
    assert {"attention_sliding", "dilated_conv", "hierarchical"} <= set(mixers)
