"""Callbacks: exact repeatability and resumption (every rank's RNG state, SLURM requeue between steps), and a
sample monitor that watches for mode collapse."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

log = logging.getLogger(__name__)


def capture_rng_state() -> dict:
    """Every RNG state as plain containers (tensors, lists, numbers), so checkpoints load with weights_only."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStateCallback(L.Callback):
    """Saves every rank's torch / numpy / python (and CUDA) RNG states; a resumed rank gets its own back.

    States are gathered from all ranks when a checkpoint is written (rank 0 writes it) and restored when
    training starts, after the sanity check and after anything else that ran between loading the
    checkpoint and the first step. A resume on a different number of ranks is warned about.
    """

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None
        self._pending: dict | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict:
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return {"ranks": [capture_rng_state()]}
        # a collective: every rank writes a checkpoint's state (only rank 0 saves the file)
        packed = _pack(capture_rng_state())
        gathered = {key: trainer.strategy.all_gather(value) for key, value in packed.items()}
        return {"ranks": [_unpack({key: value[rank].cpu() for key, value in gathered.items()}) for rank in range(trainer.world_size)]}

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict or None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None:
            return
        # checkpoints from before per-rank states hold one state, not a list
        ranks = self._pending["ranks"] if "ranks" in self._pending else [self._pending]
        self._pending = None
        if len(ranks) != trainer.world_size:
            rank_zero_warn(
                f"the checkpoint holds the RNG states of {len(ranks)} processes but this run has {trainer.world_size}: "
                "the run continues, but not exactly as it would have; resume on as many devices x nodes for that"
            )
        restore_rng_state(ranks[trainer.global_rank % len(ranks)])


def _pack(state: dict) -> dict[str, torch.Tensor]:
    """One RNG state as int64 tensors of fixed shapes, so ranks can all_gather them."""
    packed = {
        "torch": state["torch"].to(torch.int64),
        "numpy_key": state["numpy"]["key"],
        "numpy_rest": torch.tensor([state["numpy"]["pos"], state["numpy"]["has_gauss"]]),
        "numpy_gauss": torch.tensor([state["numpy"]["gauss"]], dtype=torch.float64),
        "python": torch.tensor([state["python"]["version"], *state["python"]["state"]], dtype=torch.int64),
        "python_gauss": torch.tensor([float("nan") if state["python"]["gauss"] is None else state["python"]["gauss"]], dtype=torch.float64),
    }
    if "cuda" in state:
        packed["cuda"] = torch.stack(state["cuda"]).to(torch.int64)
    return packed


def _unpack(packed: dict[str, torch.Tensor]) -> dict:
    gauss = float(packed["python_gauss"][0])
    python = packed["python"].tolist()
    state = {
        "torch": packed["torch"].to(torch.uint8),
        "numpy": {"key": packed["numpy_key"], "pos": int(packed["numpy_rest"][0]), "has_gauss": int(packed["numpy_rest"][1]),
                  "gauss": float(packed["numpy_gauss"][0])},
        "python": {"version": python[0], "state": python[1:], "gauss": None if gauss != gauss else gauss},
    }
    if "cuda" in packed:
        state["cuda"] = list(packed["cuda"].to(torch.uint8))
    return state


class SlurmRequeue(L.Callback):
    """On SLURM's warning signal: finish the step, save `checkpoint`, requeue the job, stop.

    SLURM sends the signal before the time limit (`#SBATCH --signal=USR1@90`; submitit's launcher sends
    USR2) or on preemption (`scancel --signal=USR1 JOBID`). Lightning's own handler saves from inside the signal handler,
    wherever the step happens to be (between the optimizer step and the progress counters, say),
    so that checkpoint can be a batch behind; here the handler only raises a flag, all ranks agree
    on it after a step (a rank that saw the signal late would otherwise wait in the save forever),
    and the checkpoint is written between steps, at an accumulation boundary (after an epoch's last batch the
    run stops at the epoch's end, see `ends_epoch`). The requeued job gets
    the same run folder (named after the job) and resumes from the checkpoint. Inactive outside SLURM.
    """

    def __init__(self, checkpoint: str, signals: tuple[str, ...] = ("SIGUSR1", "SIGUSR2")) -> None:
        valid = sorted(s.name for s in signal.Signals)
        unknown = [name for name in signals if name not in valid]
        if unknown:
            raise ValueError(f"callbacks.slurm_requeue.signals: {unknown} are not signals; choose from {valid}")
        self.checkpoint = Path(checkpoint)
        self.signums = [signal.Signals[name] for name in signals]
        self.requested = False
        self.requeued = False

    @staticmethod
    def active() -> bool:
        return SLURMEnvironment.detect()

    def _install(self) -> None:
        # Lightning registers its own handler for this signal just before the run starts; ours replaces it
        # for the run, and Lightning's teardown puts back whatever was there before the run.
        if not self.active():
            return
        for signum in self.signums:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        log.info("received %s: saving a checkpoint after this step, then requeueing", signal.Signals(signum).name)
        self.requested = True

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if not self.active():
            return
        if trainer.world_size > 1:
            requested = trainer.strategy.reduce_boolean_decision(self.requested, all=False)
        else:
            requested = self.requested
        if not requested or self.requeued or (batch_idx + 1) % trainer.accumulate_grad_batches:
            return
        trainer.save_checkpoint(self.checkpoint)
        self.requeued = True
        if trainer.is_global_zero:
            requeue_job()
        if ends_epoch(trainer, batch_idx):
            return  # stop once the epoch has ended (on_train_epoch_end), not with a validation inside this batch
        trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.requeued:
            trainer.should_stop = True


def ends_epoch(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether `batch_idx` is the epoch's last batch, where a stop must not go through `trainer.should_stop`.

    Lightning validates where `should_stop` is set; a validation that only the stop causes inside an epoch's
    last batch makes ModelCheckpoint save a loop state that Lightning 2.6 resumes with one batch too many in
    the old epoch (it reads a fresh epoch's first batch, then starts the next epoch's data afresh), so a
    resumed or extended run would read the data in another order than an uninterrupted one.
    """
    return batch_idx + 1 >= trainer.num_training_batches


class FinalStep(L.Callback):
    """The last step (`trainer.max_steps`) ends with last.ckpt holding the final weights, validated, even when it
    does not fall on `val_check_interval` (Lightning would otherwise stop without a validation, and last.ckpt
    would keep the weights of the last validation).

    It sets `trainer.should_stop`, at which Lightning validates and ModelCheckpoint saves; in an epoch's last
    batch (see `ends_epoch`) it writes last.ckpt itself instead. A run without validation is saved by
    ModelCheckpoint anyway.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.max_steps is None or trainer.max_steps < 0 or trainer.global_step < trainer.max_steps:
            return
        if not any(n > 0 for n in trainer.num_val_batches or []):
            return  # no validation: ModelCheckpoint saves at the epoch's (the run's) end
        if not ends_epoch(trainer, batch_idx):
            trainer.should_stop = True
            return
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.save_last and checkpoint.dirpath:
            trainer.save_checkpoint(Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}")


def slurm_job_id() -> str:
    """The id `scontrol requeue` takes for this job (array tasks: ARRAYJOB_TASK)."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


def requeue_job() -> None:
    job = slurm_job_id()
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.error("cannot run scontrol requeue %s (%s); resubmit the job to resume from the checkpoint", job, err)
        return
    if result.returncode:
        log.error("scontrol requeue %s failed (%s): %s; resubmit the job to resume from the checkpoint", job, result.returncode, result.stderr.strip())
    else:
        log.info("requeued SLURM job %s; it resumes from its run folder's last.ckpt", job)


class SampleMonitor(L.Callback):
    """Every `every_n_steps` optimizer steps, rank 0 samples `n_samples` pieces and logs their diversity and
    mode-collapse metrics (`monitor/...`) against up to `reference_pieces` real pieces (validation split
    first, then training pieces); a collapse score above `warn_above` logs a warning.

    Sampling draws from its own seeded generator and puts the model back in training mode, so the
    training run itself is unchanged; the cost is one short generation per check. A model that writes from
    an input sequence (`memory_tokens`, the harmonization task) is not monitored: its output without one
    says nothing, and its splits hold no free pieces to compare with.
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        n_samples: int = 8,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float | None = 0.95,
        warn_above: float = 0.6,
        reference_pieces: int = 64,
        seed: int = 0,
    ) -> None:
        if every_n_steps < 1 or n_samples < 2:
            raise ValueError(f"SampleMonitor needs every_n_steps >= 1 and n_samples >= 2, got {every_n_steps} and {n_samples}")
        self.every_n_steps, self.n_samples, self.max_new_tokens = int(every_n_steps), int(n_samples), int(max_new_tokens)
        self.temperature, self.top_p, self.warn_above = float(temperature), top_p, float(warn_above)
        self.reference_pieces, self.seed = int(reference_pieces), int(seed)
        self._reference = None
        self._skip_logged = False
        self.history: list[dict[str, float]] = []

    def _reference_set(self, datamodule):
        from lyria.evaluation.base import PieceSet
        from lyria.evaluation.sets import load_split

        prepared = datamodule.prepared
        chosen = load_split(prepared, "validation")
        if len(chosen) < self.reference_pieces:
            train = load_split(prepared, "train")
            extra = min(len(train), self.reference_pieces - len(chosen))
            chosen = PieceSet(
                "monitor_reference",
                chosen.names + train.names[:extra],
                [chosen.pieces[i] for i in range(len(chosen))] + [train.pieces[i] for i in range(extra)],
                chosen.styles + train.styles[:extra],
            )
        return chosen.subset(range(min(len(chosen), self.reference_pieces)), "monitor_reference")

    def measure(self, model, tokenizer, reference, step: int) -> dict[str, float]:
        """Samples and scores; returns the metrics (those the set sizes allow)."""
        from lyria.data.notes import notes_from_score
        from lyria.evaluation.base import EvalInputs, PieceSet
        from lyria.evaluation.diversity import Diversity
        from lyria.evaluation.features import FeatureSettings
        from lyria.evaluation.mode_collapse import ModeCollapse
        from lyria.generation.pieces import new_pieces
        from lyria.generation.processors import GrammarMask, SpecialTokenMask, Temperature, TopP
        from lyria.generation.sampler import Limits, Sampler

        processors = [SpecialTokenMask(), GrammarMask(), Temperature(self.temperature), TopP(self.top_p)]
        sampler = Sampler(model, tokenizer, processors, device=next(model.parameters()).device)
        made = new_pieces(sampler, n=self.n_samples, seed=self.seed + step, limits=Limits(max_new_tokens=self.max_new_tokens))
        pieces = [notes_from_score(piece.score) for piece in made if piece.score is not None]
        failures = len(made) - len(pieces)
        metrics = {"monitor/decode_failures": float(failures)}
        if len(pieces) < 2:
            return metrics
        generated = PieceSet("monitor_samples", [f"sample_{i}" for i in range(len(pieces))], pieces, [None] * len(pieces))
        inputs = EvalInputs(generated, reference, None, self.seed, FeatureSettings(), role="monitor")
        diversity = Diversity(orders=[4], note_f1_pairs=0).compute(inputs)
        collapse = ModeCollapse().compute(inputs)
        chosen = {"distinct_4": diversity, "self_bleu": diversity, "vendi": diversity, "near_duplicate_rate": collapse, "coverage": collapse}
        for name, result in chosen.items():
            if result.values.get(name) is not None:
                metrics[f"monitor/{name}"] = result.values[name]
        if collapse.values.get("score") is not None:
            metrics["monitor/collapse_score"] = collapse.values["score"]
        return metrics

    @rank_zero_only
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps or (self.history and self.history[-1]["step"] == step):
            return
        if getattr(pl_module.model.conditioner, "memory_vocab_size", 0):
            # a sequence-to-sequence model (harmonization) writes from an input sequence, not freely: nothing to monitor
            if not self._skip_logged:
                log.info("sample monitor off: the model writes from an input sequence (a melody to harmonize), not freely")
                self._skip_logged = True
            return
        started = time.perf_counter()
        datamodule = trainer.datamodule
        if self._reference is None:
            self._reference = self._reference_set(datamodule)
        was_training = pl_module.training
        try:
            metrics = self.measure(pl_module.model, datamodule.tokenizer, self._reference, step)
        finally:
            pl_module.train(was_training)
        metrics["monitor/seconds"] = time.perf_counter() - started
        if trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=step)
        self.history.append({"step": step, **metrics})
        score = metrics.get("monitor/collapse_score")
        if score is not None and score > self.warn_above:
            log.warning(
                "step %d: mode-collapse score %.3f is above %.2f (near duplicates %.2f, coverage %.2f): the samples are "
                "collapsing onto a few pieces",
                step,
                score,
                self.warn_above,
                metrics.get("monitor/near_duplicate_rate", float("nan")),
                metrics.get("monitor/coverage", float("nan")),
            )
