"""`train(cfg)`: build everything from a composed config, fit, score against a unigram baseline.

Called by the `lyria-train` Hydra app and directly by the tests.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lyria.checkpoint import checkpoint_problem, newest_intact_checkpoint
from lyria.config import ConfigError, TrainSchema, build, check_arguments, validate
from lyria.data.datamodule import MusicDataModule
from lyria.data.limits import InputLimits
from lyria.data.prepare import prepare_data
from lyria.files import atomic_write
from lyria.experiments.study import check_study, run_study
from lyria.training.baselines import unigram_log_probs, unigram_loss
from lyria.training.allocator import tune_cpu_allocator
from lyria.training.budget import TimeBudget
from lyria.training.callbacks import FinalStep, RNGStateCallback, SlurmRequeue
from lyria.training.module import LyriaLightningModule
from lyria.training.precision import resolve_precision

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.yaml"
WANDB_ID_FILE = "wandb_run_id.txt"


def build_tokenizer_and_data(cfg: DictConfig):
    """The tokenizer and the prepared splits (cached); styles are registered on the tokenizer."""
    tokenizer = build(cfg.tokenizer, "tokenizer")
    check_infilling(cfg, tokenizer)
    source = build(cfg.data.source, "data.source")
    data = cfg.data
    prepared = prepare_data(
        source,
        tokenizer,
        cache_dir=data.cache_dir,
        max_pieces_per_style=data.max_pieces_per_style,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        split_salt=data.split_salt,
        num_proc=data.num_proc,
        parse_timeout_s=data.parse_timeout_s,
        limits=InputLimits.from_config(data.limits, "data.limits"),
        tokenize_timeout_s=data.tokenize_timeout_s,
    )
    return tokenizer, prepared


def check_train_arguments(cfg: DictConfig) -> None:
    """Every built section's keys against its class's parameters, before any data is prepared."""
    for where in ("tokenizer", "data.source", "model.mixer", "model.conditioning", "trainer", "logger"):
        node = OmegaConf.select(cfg, where)
        if node is not None:
            check_arguments(node, where, ignore=("position",) if where == "model.mixer" else ())
    for name, node in (cfg.callbacks or {}).items():
        if node is not None:
            check_arguments(node, f"callbacks.{name}")


def check_infilling(cfg: DictConfig, tokenizer) -> None:
    """The infilling objective's settings, checked before any data is prepared."""
    rate, max_bars = cfg.training.infilling_rate, cfg.training.infilling_max_bars
    if not 0.0 <= rate <= 1.0 or max_bars < 1:
        raise ConfigError(
            f"training.infilling_rate={rate} must be in [0, 1] and training.infilling_max_bars={max_bars} >= 1"
        )
    if rate > 0 and not tokenizer.supports_infilling:
        raise ConfigError(
            f"training.infilling_rate={rate} needs a tokenizer whose tokens mark bars (remi, cpword, octuple); "
            f"{tokenizer.name} carries time as shifts between events, so set training.infilling_rate=0"
        )


def conditioning_class(cfg: DictConfig) -> type:
    """The class `model.conditioning` names (through the allow-list), the "none" baseline when unset."""
    from lyria.config import resolve_class
    from lyria.models.conditioning import Conditioner

    node = cfg.model.get("conditioning") if cfg.model is not None else None
    target = node.get("_target_") if node is not None else None
    return Conditioner if target is None else resolve_class(target, "model.conditioning._target_", base=Conditioner)


def build_datamodule(cfg: DictConfig, tokenizer, prepared) -> MusicDataModule:
    conditioning = cfg.model.get("conditioning") or {}
    dropout = float(conditioning.get("dropout", 0.0) or 0.0)
    if dropout > 0 and not conditioning_class(cfg).conditional and not cfg.model.get("style_output"):
        dropout = 0.0  # an unconditional model has nothing to drop
    extra: dict[str, Any] = {}
    module_class = MusicDataModule
    if cfg.data.task == "harmonization":
        from lyria.data.harmonization import HarmonizationDataModule

        if not conditioning.get("memory_tokens"):
            raise ConfigError("data.task=harmonization needs model/conditioning=cross_attention with model.conditioning.memory_tokens=true")
        module_class = HarmonizationDataModule
        extra["max_memory_length"] = int(conditioning.get("max_memory_length", 1024))
    elif cfg.data.task is not None:
        raise ConfigError(f"data.task={cfg.data.task!r}: known tasks are null (music) and 'harmonization'")
    return module_class(
        prepared,
        tokenizer,
        **extra,
        max_seq_len=cfg.model.max_seq_len,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
        balance_styles=cfg.data.balance_styles,
        transpose_range=list(cfg.data.transpose),
        infilling_rate=cfg.training.infilling_rate,
        infilling_max_bars=cfg.training.infilling_max_bars,
        style_prefix=conditioning_class(cfg).uses_style_token,
        style_dropout=dropout,
    )


def build_module(cfg: DictConfig, tokenizer) -> LyriaLightningModule:
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    module = LyriaLightningModule(
        model=model_cfg,
        training=OmegaConf.to_container(cfg.training, resolve=True),
        vocab_sizes=tokenizer.vocab_sizes,
        num_styles=tokenizer.num_style_slots,
        pad_id=tokenizer.pad_id,
        style_names=list(tokenizer.styles),
        style_slots=dict(tokenizer.style_slots),
        note_counts=tokenizer.note_counts().tolist(),
        note_field=tokenizer.note_field,
    )
    return module


def _callbacks(cfg: DictConfig, extra: list[L.Callback]) -> list[L.Callback]:
    callbacks = [build(node, f"callbacks.{name}") for name, node in (cfg.callbacks or {}).items() if node is not None]
    return callbacks + [RNGStateCallback(), FinalStep()] + list(extra)


def _logger(cfg: DictConfig, output_dir: Path, resuming: bool):
    if not cfg.logger or "_target_" not in cfg.logger:
        return False
    if "id" not in cfg.logger or cfg.logger.id is not None:
        return build(cfg.logger, "logger")
    # A logger that names its runs by id (wandb) continues the run it began in this folder.
    return build(cfg.logger, "logger", id=_run_id(output_dir, resuming))


def _run_id(output_dir: Path, resuming: bool) -> str | None:
    """The id stored in the run folder when resuming; a new one otherwise (written by rank 0 only)."""
    path = output_dir / WANDB_ID_FILE
    if resuming and path.is_file():
        return path.read_text().strip()
    if rank_zero_only.rank != 0:
        return None
    run_id = uuid.uuid4().hex[:12]
    output_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def resume_checkpoint(cfg: DictConfig, ckpt_dir: Path) -> str | None:
    """`ckpt_path` when given (it must read); else, when `auto_resume`, the run folder's newest intact checkpoint:
    last.ckpt, or when that is truncated or corrupt (a crash mid-write, a full disk) the newest one that reads,
    with a warning. A requeued job finds its own folder's."""
    if cfg.ckpt_path is not None:
        problem = checkpoint_problem(cfg.ckpt_path)
        if problem is not None:
            raise ConfigError(f"ckpt_path={cfg.ckpt_path}: {problem}; give a readable checkpoint to resume from, or null")
        return str(cfg.ckpt_path)
    if not cfg.auto_resume or not ckpt_dir.is_dir():
        return None
    found, passed_over = newest_intact_checkpoint(ckpt_dir)
    for problem in passed_over:
        log.warning("not resuming from %s", problem)
    if found is None:
        if passed_over:
            log.warning("no intact checkpoint in %s: starting afresh", ckpt_dir)
        return None
    if passed_over:
        log.warning("resuming from %s instead, the newest intact checkpoint in %s", found, ckpt_dir)
    else:
        log.info("resuming from %s (found in the run folder; auto_resume=false starts afresh)", found)
    return str(found)


def build_trainer(trainer_cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    """The Lightning Trainer of `trainer_cfg`, with `precision: auto` resolved for this machine (logged)."""
    precision, why = resolve_precision(trainer_cfg.get("precision", "auto"), trainer_cfg.get("accelerator", "auto"))
    log.info("precision %s: %s", precision, why)
    return build(trainer_cfg, "trainer", precision=precision, **kwargs)


def _check_accumulation(trainer: L.Trainer) -> None:
    """Checkpoints written at validation must fall on whole optimizer steps (gradients are not saved)."""
    accumulate, interval = trainer.accumulate_grad_batches, trainer.val_check_interval
    if accumulate > 1 and isinstance(interval, int) and interval % accumulate:
        raise ConfigError(
            f"trainer.val_check_interval={interval} is not a multiple of trainer.accumulate_grad_batches={accumulate}: "
            "a checkpoint would cut an accumulation in half; make the interval a multiple"
        )


def train(cfg: DictConfig, callbacks: list[L.Callback] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns (metrics, objects): final val loss vs. the unigram baseline, paths; and the built objects.

    `callbacks` are added to those the config lists (tests use it to watch the batches).
    """
    cfg = validate(cfg, TrainSchema)
    check_train_arguments(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    tune_cpu_allocator(cfg.training.cpu_allocator)  # before the model and the batches are allocated
    output_dir = Path(cfg.paths.output_dir)
    ckpt_dir = output_dir / CHECKPOINT_DIR
    ckpt_path = resume_checkpoint(cfg, ckpt_dir)

    if cfg.study is not None:
        check_study(cfg)  # a mistyped study setting fails now, not after the training

    tokenizer, prepared = build_tokenizer_and_data(cfg)
    datamodule = build_datamodule(cfg, tokenizer, prepared)
    module = build_module(cfg, tokenizer)
    budget = TimeBudget(cfg.training.time_budget_s) if cfg.training.time_budget_s else None
    all_callbacks = _callbacks(cfg, callbacks) + ([budget] if budget else [])
    trainer: L.Trainer = build_trainer(
        cfg.trainer, callbacks=all_callbacks, logger=_logger(cfg, output_dir, ckpt_path is not None), default_root_dir=str(output_dir)
    )
    _check_accumulation(trainer)
    cfg.trainer.precision = precision_name(trainer)

    if trainer.is_global_zero:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save(ckpt_dir)
        atomic_write(ckpt_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True), what="run config")
        n_params = sum(p.numel() for p in module.model.parameters())
        log.info(
            "model: %.2fM parameters, mixer %s, receptive fields %s; data: %s",
            n_params / 1e6,
            cfg.model.mixer.get("_target_"),
            module.model.receptive_fields,
            {k: v for k, v in prepared.report["pieces"].items()},
        )

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    if any(isinstance(c, SlurmRequeue) and c.requeued for c in all_callbacks):
        # the job was requeued: its next run resumes from the checkpoint just written
        metrics.update({"requeued": True, "global_step": trainer.global_step})
        return metrics, {"trainer": trainer, "module": module, "datamodule": datamodule, "tokenizer": tokenizer, "prepared": prepared}
    best = _best_checkpoint(trainer)
    scored = []
    if len(prepared.splits["validation"]) and best is not None and trainer.limit_val_batches != 0:
        scored = trainer.validate(module, datamodule=datamodule, ckpt_path=str(best), verbose=False, weights_only=True)
    if scored:
        val_loss = float(scored[0]["val/loss"])
        baseline = unigram_loss(
            unigram_log_probs(datamodule.prepared.splits["train"], datamodule.layout, tokenizer.vocab_sizes),
            datamodule.eval_dataloader("validation", sharded=False),
        )
        metrics.update({"final_val_loss": val_loss, "unigram_val_loss": baseline, "final_val_ppl": math.exp(val_loss)})
        if "val/bits_per_note" in scored[0]:
            metrics["final_val_bits_per_note"] = float(scored[0]["val/bits_per_note"])
    metrics.update({"global_step": trainer.global_step, "epoch": trainer.current_epoch, "precision": cfg.trainer.precision})
    metrics.update(_stopping(cfg, trainer, budget))
    paths = {
        "run_dir": str(output_dir.resolve()),
        "best_checkpoint": str(best) if best else None,
        "last_checkpoint": str(ckpt_dir / "last.ckpt") if (ckpt_dir / "last.ckpt").exists() else None,
        "tokenizer": str(ckpt_dir / "tokenizer.json"),
        "data_report": str(prepared.report_path.resolve()),
        "logs": str(trainer.logger.log_dir if trainer.logger and getattr(trainer.logger, "log_dir", None) else output_dir),
    }
    if trainer.is_global_zero:
        _write_summary(output_dir, metrics, paths, prepared.report)
    study = run_study_on_rank_zero(cfg, trainer, output_dir, paths)
    if study is not None:
        paths.update({"samples": study["samples"], "evaluation": study["metrics"]})
        _write_summary(output_dir, metrics, paths, prepared.report, echo=False)
    return metrics, {"trainer": trainer, "module": module, "datamodule": datamodule, "tokenizer": tokenizer, "prepared": prepared, "paths": paths}


def precision_name(trainer: L.Trainer) -> str:
    """The precision Lightning runs with ('32-true', 'bf16-mixed', ...)."""
    return str(trainer.precision)


def _stopping(cfg: DictConfig, trainer: L.Trainer, budget: TimeBudget | None) -> dict[str, Any]:
    """How training ended: the step limit it aimed at, and a warning when `max_time` cut it short of that."""
    configured = int(cfg.trainer.max_steps) if cfg.trainer.get("max_steps") is not None else -1
    target = budget.fitted if budget is not None and budget.fitted is not None else configured
    out: dict[str, Any] = {"max_steps": configured, "target_steps": target}
    if budget is not None:
        out["time_budget_s"] = budget.budget_s
        if budget.step_seconds is not None:
            out["step_seconds"] = budget.step_seconds
    if target >= 0 and trainer.global_step < target and trainer.interrupted is False:
        out["undertrained"] = (
            f"training stopped at step {trainer.global_step} of {target} (trainer.max_time={cfg.trainer.get('max_time')}): "
            "the model is undertrained and its learning-rate schedule did not finish; raise trainer.max_time, or set "
            "training.time_budget_s so that the steps are fitted to the time"
        )
        log.warning(out["undertrained"])
    return out


def run_study_on_rank_zero(cfg: DictConfig, trainer: L.Trainer, output_dir: Path, paths: dict) -> dict | None:
    """The run's study (generate a seeded sample set, evaluate it) when the config has one; rank 0 only, so a
    DDP run writes one sample set. Samples from the best checkpoint (the last when none is better)."""
    if cfg.study is None or not trainer.is_global_zero:
        return None
    checkpoint = paths["best_checkpoint"] or paths["last_checkpoint"]
    if checkpoint is None:
        raise ConfigError("study: the run wrote no checkpoint to sample from; keep callbacks.model_checkpoint enabled")
    return run_study(cfg, output_dir, checkpoint)


def _best_checkpoint(trainer: L.Trainer) -> Path | None:
    callback = trainer.checkpoint_callback
    if callback is None:
        return None
    for candidate in (callback.best_model_path, callback.last_model_path):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


def _write_summary(output_dir: Path, metrics: dict, paths: dict, report: dict, echo: bool = True) -> None:
    atomic_write(output_dir / "summary.json", json.dumps({"metrics": metrics, "paths": paths}, indent=2), what="run summary")
    lines = ["", "lyria run summary", "-----------------"]
    if "final_val_loss" in metrics:
        lines.append(
            f"validation loss (best checkpoint): {metrics['final_val_loss']:.4f} nats/token "
            f"(perplexity {metrics['final_val_ppl']:.2f}); unigram baseline on the same targets: "
            f"{metrics['unigram_val_loss']:.4f}"
        )
    if "final_val_bits_per_note" in metrics:
        lines.append(f"validation bits per note: {metrics['final_val_bits_per_note']:.3f} (compares across tokenizers)")
    steps = f"steps: {metrics['global_step']}"
    if "time_budget_s" in metrics:
        steps += f" (fitted to training.time_budget_s={metrics['time_budget_s']:.0f}; upper bound max_steps={metrics['max_steps']})"
    if "step_seconds" in metrics:
        steps += f", {metrics['step_seconds']:.2f} s/step"
    lines.append(steps + f", precision {metrics.get('precision')}")
    if "undertrained" in metrics:
        lines.append("WARNING: " + metrics["undertrained"])
    lines.append(
        f"pieces: {report['pieces']}, skipped: {report['skipped_count']}, duplicates removed: {report['duplicates_removed']}"
    )
    if "notes" in report:
        notes = report["notes"]
        lost = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in notes["lost"].items() if v) or "none"
        lines.append(f"notes: {notes['in']} in, {notes['out']} in the tokens; lost or changed: {lost} (per style in the data report)")
    lines += [f"{k.replace('_', ' ')}: {v}" for k, v in paths.items()]
    text = "\n".join(lines) + "\n"
    atomic_write(output_dir / "summary.txt", text, what="run summary")
    if echo:
        print(text)

