"""The study phase of a training run: generate a fixed seeded sample set from the run's checkpoint and evaluate it,
in the run folder, with the generation and evaluation library functions (in-process, no subprocess).

    RUN/samples/              lyria-generate's output (sample_NNN.mid, ..., index.json)
    RUN/evaluation/           lyria-evaluate's output (metrics.json, report.md)

so that every run of a sweep leaves one comparable `evaluation/metrics.json` beside its resolved config
(`checkpoints/config.yaml`) and training `summary.json`: the sweep folder is directly a `lyria-leaderboard runs=`.

The `study:` section of a training config (conf/study/, off by default):

    study:
      generate:            # any lyria-generate setting (conf/generate.yaml): n, seed, max_bars, top_p, render...
        n: 8
        seed: 0
        overrides: []      # optional Hydra overrides of conf/generate.yaml
      evaluate:
        eval: fast         # the conf/eval group
        reference: test    # any other lyria-evaluate setting (conf/evaluate.yaml)
        overrides: []      # optional Hydra overrides, e.g. ["eval.max_pieces=8"]

The configs are composed and checked before training starts (`check_study`), so a mistyped key or an impossible
value fails in seconds, not after the training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from lyria.config import ConfigError, EvaluateSchema, GenerateSchema, validate

log = logging.getLogger(__name__)

SAMPLES_DIR = "samples"
EVALUATION_DIR = "evaluation"
OVERRIDES_KEY = "overrides"
EVAL_GROUP_KEY = "eval"
# Set by the study from the run itself; a study config that sets them is refused.
RUN_OWNED = {
    "generate": ("ckpt", "output_dir", "paths"),
    "evaluate": ("generated", "output_dir", "checkpoint", "training_data", "paths"),
}


@dataclass
class StudyConfigs:
    """The composed, validated lyria-generate and lyria-evaluate configs of one run's study."""

    generate: DictConfig
    evaluate: DictConfig


def _conf_dir() -> str:
    from lyria.cli import CONF_DIR

    return CONF_DIR


def compose_app(config_name: str, overrides: list[str]) -> DictConfig:
    """Composes conf/<config_name>.yaml with Hydra: inside a Hydra app (lyria-train, a sweep's job) through its
    own initialised config search path, elsewhere (tests, notebooks) through conf/ directly."""
    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name=config_name, overrides=overrides)
        with initialize_config_dir(config_dir=_conf_dir(), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)
    except HydraException as err:
        raise ConfigError(f"cannot compose conf/{config_name}.yaml with overrides {overrides}: {err}") from None


def _section(study: DictConfig, name: str) -> dict[str, Any]:
    section = study.get(name)
    section = OmegaConf.to_container(section, resolve=True) if section is not None else {}
    if not isinstance(section, dict):
        raise ConfigError(f"study.{name} should be a mapping of lyria-{name} settings, found {type(section).__name__}")
    owned = [key for key in RUN_OWNED[name] if key in section]
    if owned:
        raise ConfigError(f"study.{name}.{owned[0]} is set by the study from the run itself; remove it from the config")
    overrides = section.pop(OVERRIDES_KEY, None) or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"study.{name}.{OVERRIDES_KEY} should be a list of Hydra overrides (strings), found {overrides!r}")
    return {"settings": section, "overrides": overrides}


def _finish(composed: DictConfig, layers: list[dict[str, Any]], schema: type, where: str) -> DictConfig:
    """The composed config with the study's settings, then the run's own values, merged in; checked against the
    app's schema."""
    OmegaConf.set_struct(composed, False)
    merged = OmegaConf.merge(composed, *layers)
    try:
        return validate(merged, schema)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def study_configs(cfg: DictConfig, run_dir: str | Path, checkpoint: str | Path) -> StudyConfigs:
    """The generate and evaluate configs of `cfg.study` for a run in `run_dir` sampling from `checkpoint`."""
    run_dir = Path(run_dir).resolve()
    return _configs(cfg, Path(checkpoint), run_dir / SAMPLES_DIR, run_dir / EVALUATION_DIR)


def check_study(cfg: DictConfig) -> StudyConfigs:
    """Composes and checks the study's configs before the training, so that a mistyped or impossible setting fails in
    seconds, not after the training. The files the training has yet to write (the checkpoint, the samples folder)
    are stood in for by conf/, which exists; every other value is checked as it will be used."""
    stand_in = Path(_conf_dir())
    return _configs(cfg, stand_in, stand_in, stand_in / EVALUATION_DIR)


def _configs(cfg: DictConfig, checkpoint: Path, samples: Path, evaluation: Path) -> StudyConfigs:
    if cfg.get("study") is None:
        raise ConfigError("this run has no study section (study=default, or an experiment from conf/experiment/, adds one)")
    cache_dir = str(cfg.paths.cache_dir)

    # The run's own values are merged after composition rather than given as overrides: a path may hold characters
    # (`=`, `,`, spaces) that Hydra's override grammar would need quoted.
    generate = _section(cfg.study, "generate")
    owned = {"ckpt": str(checkpoint), "output_dir": str(samples), "paths": {"output_dir": str(samples), "cache_dir": cache_dir}}
    generate_cfg = _finish(compose_app("generate", generate["overrides"]), [generate["settings"], owned], GenerateSchema, "study.generate")

    evaluate = _section(cfg.study, "evaluate")
    group = evaluate["settings"].pop(EVAL_GROUP_KEY, None)
    if group is not None and not isinstance(group, str):
        raise ConfigError(
            f"study.evaluate.eval names a conf/eval group (e.g. fast), found {group!r}; change eval settings with "
            "study.evaluate.overrides=[eval.KEY=VALUE]"
        )
    owned = {
        "generated": str(samples),
        "output_dir": str(evaluation),
        "checkpoint": str(checkpoint),
        "training_data": "auto",  # the data the run was trained on: the config.yaml beside the checkpoint
        "paths": {"output_dir": str(evaluation), "cache_dir": cache_dir},
    }
    group_choice = [f"eval={group}"] if group else []
    evaluate_cfg = _finish(
        compose_app("evaluate", group_choice + evaluate["overrides"]), [evaluate["settings"], owned], EvaluateSchema, "study.evaluate"
    )
    return StudyConfigs(generate_cfg, evaluate_cfg)


def run_study(cfg: DictConfig, run_dir: str | Path, checkpoint: str | Path) -> dict[str, Any]:
    """Generates the study's sample set into RUN/samples and evaluates it into RUN/evaluation; returns the paths
    and the generation's counts. Call it on rank 0 only."""
    from lyria.evaluation.evaluate import evaluate
    from lyria.generation.generate import generate

    (Path(run_dir) / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)  # the evaluation's config names it
    configs = study_configs(cfg, run_dir, checkpoint)
    log.info("study: generating %d pieces (seed %d) from %s", configs.generate.n, configs.generate.seed, checkpoint)
    index = generate(configs.generate)
    if index["written"] == 0:
        raise RuntimeError(
            f"study: none of the {configs.generate.n} samples of {checkpoint} decoded to notes (see "
            f"{Path(configs.generate.output_dir) / 'index.json'}); nothing to evaluate"
        )
    log.info("study: evaluating %d pieces", index["written"])
    evaluate(configs.evaluate)
    return {
        "samples": str(configs.generate.output_dir),
        "metrics": str(Path(configs.evaluate.output_dir) / "metrics.json"),
        "written": index["written"],
        "failed": index["failed"],
    }
