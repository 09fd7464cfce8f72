"""`training.time_budget_s`: fit the number of steps (and the cosine schedule) to a wall-clock budget.

A run with a fixed `max_steps` that a machine cannot finish in time is cut by `trainer.max_time` half-way
down its learning-rate schedule; one that finishes early wastes the time it had. `TimeBudget` instead
measures the step time on the machine it runs on and sets `max_steps` (never above the configured one,
which stays the upper bound) and the schedule's `total_steps` so that training, its validations included,
ends inside the budget with the learning rate at its floor:

- after `warmup` steps (start-up costs) and `measure` more (fewer, at least 3, once a tenth of the budget
  is spent: a slow machine gets its schedule early), from the median step time and an estimate of a
  validation's cost (forward passes over the validation batches, or the measured cost once one ran);
- again after each validation, with the costs measured so far (a shared machine's load changes), as long
  as the fitted end lies ahead.
The last step is validated and checkpointed whether or not it falls on `val_check_interval` (training
stops there through `trainer.should_stop`, which Lightning validates at). Warm-up is shortened to a tenth
of the fitted steps when it was longer. The fitted value and the training time spent so far are part of the
checkpoint: a resumed run (a requeued SLURM job, say) keeps the schedule and spends only what is left of the budget.
"""

from __future__ import annotations

import logging
import math
import statistics
import time

import lightning as L

from lyria.training.optim import WarmupCosine

log = logging.getLogger(__name__)

MIN_MEASURED = 3


class TimeBudget(L.Callback):
    """Sets `max_steps` and the schedule's total so that training ends within `budget_s` seconds."""

    def __init__(self, budget_s: float, warmup: int = 3, measure: int = 20, margin: float = 0.03, early_fraction: float = 0.1) -> None:
        if budget_s <= 0:
            raise ValueError(f"training.time_budget_s={budget_s} must be positive (null turns the budget off)")
        self.budget_s, self.warmup, self.measure, self.margin = float(budget_s), int(warmup), int(measure), float(margin)
        self.early_fraction = float(early_fraction)
        self.upper: int | None = None  # the configured max_steps
        self.fitted: int | None = None
        self.step_seconds: float | None = None
        self._started = 0.0
        self._last_end: float | None = None
        self._intervals: list[float] = []
        self._val_seconds: list[float] = []
        self._val_start: float | None = None
        self._in_val_interval = False
        self._resumed_fit: int | None = None
        self._resumed_elapsed = 0.0
        self._configured_warmup: int | None = None

    # ------------------------------------------------------------------ state in checkpoints
    def state_dict(self) -> dict:
        elapsed = time.monotonic() - self._started if self._started else self._resumed_elapsed
        return {"fitted_max_steps": -1 if self.fitted is None else int(self.fitted), "elapsed_s": float(elapsed)}

    def load_state_dict(self, state_dict: dict) -> None:
        fitted = int(state_dict.get("fitted_max_steps", -1))
        self._resumed_fit = fitted if fitted >= 0 else None
        self._resumed_elapsed = max(0.0, float(state_dict.get("elapsed_s", 0.0)))

    # ------------------------------------------------------------------ timing
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.upper = trainer.max_steps if trainer.max_steps >= 0 else None
        if self.upper is None:
            raise ValueError("training.time_budget_s needs trainer.max_steps as its upper bound (it is -1)")
        self._started = time.monotonic() - self._resumed_elapsed  # the budget counts the time before a resume
        self._last_end = None
        self._start_step = trainer.global_step
        if self._resumed_fit is not None:
            self._apply(trainer, self._resumed_fit, f"kept from the checkpoint; {self._resumed_elapsed:.0f} s of the budget spent before")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        if self._last_end is not None and not self._in_val_interval:
            self._intervals.append(now - self._last_end)
        self._last_end, self._in_val_interval = now, False
        done = trainer.global_step - self._start_step
        # fit after `measure` steps, or sooner on a slow machine: once a tenth of the budget is spent (3 steps at least)
        measured = done - self.warmup
        if self.fitted is None and measured >= MIN_MEASURED and (
            measured >= self.measure or now - self._started >= self.early_fraction * self.budget_s
        ):
            self._refit(trainer, "measured")
        if self.fitted is not None and trainer.global_step >= self.fitted:
            trainer.should_stop = True  # Lightning validates (and checkpoints) before it stops

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_start = time.monotonic()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._val_start is None:
            return
        self._val_seconds.append(time.monotonic() - self._val_start)
        self._val_start, self._in_val_interval = None, True
        if self.fitted is not None and trainer.global_step < self.fitted:
            self._refit(trainer, "re-measured after a validation")

    # ------------------------------------------------------------------ fitting
    def _validation_cost(self, trainer: L.Trainer, step_seconds: float) -> float:
        if self._val_seconds:
            return statistics.median(self._val_seconds)
        batches = sum(n for n in (getattr(trainer, "num_val_batches", None) or []) if math.isfinite(n))
        return batches * step_seconds / 3.0  # forward only: about a third of a training step

    def _refit(self, trainer: L.Trainer, how: str) -> None:
        intervals = self._intervals[self.warmup :] or self._intervals
        if not intervals:
            return
        step_seconds = statistics.median(intervals)
        val_every = trainer.val_check_interval if isinstance(trainer.val_check_interval, int) else None
        if trainer.limit_val_batches == 0:
            val_every = None
        val_cost = self._validation_cost(trainer, step_seconds) if val_every else 0.0
        per_step = step_seconds + (val_cost / val_every if val_every else 0.0)
        if trainer.limit_val_batches != 0 and not val_cost:
            val_cost = self._validation_cost(trainer, step_seconds)
        # what is left, less a margin, the validation at the last step and the scoring of the best checkpoint
        left = self.budget_s * (1.0 - self.margin) - (time.monotonic() - self._started) - 2 * val_cost
        steps = min(trainer.global_step + max(0, int(left / per_step)), self.upper)
        steps = int(trainer.strategy.broadcast(steps))
        self.step_seconds = step_seconds
        self._apply(trainer, steps, f"{how}: {step_seconds:.2f} s/step, validation {val_cost:.1f} s")

    def _apply(self, trainer: L.Trainer, steps: int, why: str) -> None:
        self.fitted = int(steps)
        trainer.fit_loop.epoch_loop.max_steps = self.fitted
        for config in trainer.lr_scheduler_configs:
            for schedule in getattr(config.scheduler, "lr_lambdas", []):
                if isinstance(schedule, WarmupCosine):
                    schedule.total_steps = self.fitted
                    if self._configured_warmup is None:
                        self._configured_warmup = schedule.warmup_steps
                    schedule.warmup_steps = min(self._configured_warmup, max(1, self.fitted // 10))
        if trainer.is_global_zero:
            log.info(
                "time budget %.0f s: max_steps %d (upper bound %s), the learning-rate schedule ends there (%s)",
                self.budget_s, self.fitted, self.upper, why,
            )
