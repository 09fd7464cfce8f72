"""`trainer.precision: auto` follows the hardware; `training.time_budget_s` fits the steps and the schedule to the
time; a run that `max_time` cuts short of its steps says it is undertrained."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from lyria.training import precision as precision_mod
from lyria.training.budget import TimeBudget
from lyria.training.optim import WarmupCosine
from lyria.training.train import build_trainer, train


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32")])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(precision_mod, "cpu_bf16_native", lambda: native)
    chosen, why = precision_mod.resolve_precision("auto", "cpu")
    assert chosen == expected
    assert ("natively" in why) == native and ("no native bf16" in why) == (not native)


def test_an_explicit_precision_wins_over_the_hardware(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_bf16_native", lambda: False)
    assert precision_mod.resolve_precision("bf16-mixed", "cpu")[0] == "bf16-mixed"
    monkeypatch.setattr(precision_mod, "cpu_bf16_native", lambda: True)
    assert precision_mod.resolve_precision("32", "cpu")[0] == "32"


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32")])
def test_auto_precision_on_a_gpu_follows_its_bf16_support(monkeypatch, native, expected):
    monkeypatch.setattr(precision_mod, "gpu_bf16_native", lambda: native)
    monkeypatch.setattr(precision_mod, "cpu_bf16_native", lambda: not native)  # the CPU must not decide
    assert precision_mod.resolve_precision("auto", "gpu")[0] == expected


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_the_default_cpu_trainer_resolves_auto_and_logs_why(compose_train, monkeypatch, caplog, native, expected):
    monkeypatch.setattr(precision_mod, "cpu_bf16_native", lambda: native)
    cfg = compose_train("trainer=cpu")
    assert cfg.trainer.precision == "auto"
    with caplog.at_level(logging.INFO, logger="lyria.training.train"):
        trainer = build_trainer(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.precision == expected
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "trainer.precision=auto" in logged and ("natively" if native else "no native bf16") in logged


class _SlowModule(L.LightningModule):
    """A step takes `step_s` seconds (sleep); a validation `val_s`; the schedule is WarmupCosine over 1000 steps."""

    def __init__(self, step_s: float, val_s: float = 0.0, warmup: int = 2) -> None:
        super().__init__()
        self.warmup = warmup
        self.layer = nn.Linear(2, 1)
        self.step_s, self.val_s = step_s, val_s
        self.validated_at: list[int] = []
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        time.sleep(self.step_s)
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        time.sleep(self.val_s)

    def on_validation_end(self):
        if not self.trainer.sanity_checking:
            self.validated_at.append(self.global_step)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=1.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(self.warmup, 1000, 0.1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _loader(n: int = 10_000):
    data = torch.utils.data.TensorDataset(torch.randn(n, 2))
    return torch.utils.data.DataLoader(data, batch_size=1)


def _trainer(callbacks, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=1000, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, **kwargs)


def test_time_budget_fits_the_steps_and_ends_the_schedule_in_time(one_thread):
    budget = TimeBudget(2.0, warmup=1, measure=5)
    module = _SlowModule(step_s=0.04)
    trainer = _trainer([budget], limit_val_batches=0)
    started = time.monotonic()
    trainer.fit(module, train_dataloaders=_loader())
    elapsed = time.monotonic() - started
    # about 2 s / 0.04 s = 50 steps, far below max_steps=1000, and finished within the budget
    assert 15 <= budget.fitted <= 60 and trainer.global_step == budget.fitted
    assert elapsed < 2.0 * 1.25
    schedule = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert schedule.total_steps == budget.fitted and schedule.warmup_steps == 2  # shorter than a tenth: kept
    # the cosine reached its floor at the last step (it would be near its top with total 1000)
    assert module.lrs[-1] == pytest.approx(0.1, abs=0.02)


def test_time_budget_counts_validations_and_ends_on_a_validated_step(one_thread):
    budget = TimeBudget(3.0, warmup=1, measure=4)
    module = _SlowModule(step_s=0.02, val_s=0.1)
    trainer = _trainer([budget], val_check_interval=10, check_val_every_n_epoch=None, limit_val_batches=3,
                       num_sanity_val_steps=0)
    started = time.monotonic()
    trainer.fit(module, train_dataloaders=_loader(), val_dataloaders=_loader(3))
    elapsed = time.monotonic() - started
    assert trainer.global_step == budget.fitted < 1000
    assert module.validated_at[-1] == budget.fitted  # the last step is validated, on the interval or not
    # each validation (0.3 s per 10 steps of 0.02 s) more than doubles the cost of a step: counted, not ignored
    assert budget.fitted <= 3.0 / (0.02 + 0.3 / 10)
    assert elapsed < 3.0 * 1.25


def test_a_warmup_longer_than_a_tenth_of_the_fitted_steps_is_shortened(one_thread):
    budget = TimeBudget(1.5, warmup=1, measure=4)
    module = _SlowModule(step_s=0.03, warmup=500)
    trainer = _trainer([budget], limit_val_batches=0)
    trainer.fit(module, train_dataloaders=_loader())
    schedule = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert budget.fitted < 100 and schedule.warmup_steps == budget.fitted // 10
    assert max(module.lrs) > 0.9  # the peak learning rate is reached, not a sliver of warm-up


def test_a_slow_machine_gets_its_schedule_after_a_tenth_of_the_budget(one_thread):
    fitted_at = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if budget.fitted is not None and not fitted_at:
                fitted_at.append(trainer.global_step)

    budget = TimeBudget(3.0, warmup=1, measure=20)  # 20 steps of 0.1 s would spend two thirds of the budget
    trainer = _trainer([budget, Watch()], limit_val_batches=0)
    trainer.fit(_SlowModule(step_s=0.1), train_dataloaders=_loader())
    # fitted after the warm-up step and at least 3 measured steps, long before the 20 it would otherwise measure
    warmup_and_measured = 1 + 3
    assert warmup_and_measured <= fitted_at[0] <= 8 and 15 <= budget.fitted <= 30


def test_time_budget_keeps_the_configured_max_steps_as_upper_bound(one_thread):
    budget = TimeBudget(30.0, warmup=1, measure=3)
    trainer = _trainer([budget], limit_val_batches=0, max_time=None)
    trainer.fit_loop.epoch_loop.max_steps = 12
    trainer.fit(_SlowModule(step_s=0.0), train_dataloaders=_loader())
    assert budget.fitted == 12 and trainer.global_step == 12


def test_fitted_steps_are_kept_by_a_checkpoint():
    budget = TimeBudget(10.0)
    budget.fitted = 340
    again = TimeBudget(10.0)
    again.load_state_dict(budget.state_dict())
    assert again._resumed_fit == 340


def test_max_time_cutting_training_short_warns_that_the_model_is_undertrained(compose_train, caplog):
    cfg = compose_train("trainer.max_steps=100000", "trainer.max_time=00:00:00:02", "trainer.val_check_interval=1000",
                        "trainer.limit_val_batches=1")
    with caplog.at_level(logging.WARNING, logger="lyria.training.train"):
        metrics, objects = train(cfg)
    assert 0 < metrics["global_step"] < 100000
    assert "undertrained" in metrics["undertrained"]
    assert any("undertrained" in r.getMessage() for r in caplog.records)
    summary = (Path(objects["paths"]["run_dir"]) / "summary.txt").read_text()
    assert "WARNING: training stopped at step" in summary


def test_a_run_that_reaches_max_steps_has_no_warning(compose_train):
    metrics, objects = train(compose_train())
    assert metrics["global_step"] == 6 and "undertrained" not in metrics
    assert "WARNING" not in (Path(objects["paths"]["run_dir"]) / "summary.txt").read_text()


def test_quickstart_trains_to_a_time_budget_with_max_steps_as_upper_bound(compose_train):
    from hydra import compose, initialize_config_dir

    from lyria.cli import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=quickstart"])
    assert cfg.training.time_budget_s > 0 and cfg.trainer.max_steps >= 1000 and cfg.trainer.precision == "auto"
    # max_time only backs the budget up: it must not cut a run the budget ends in time
    hours, minutes, seconds = (int(v) for v in cfg.trainer.max_time.split(":")[1:])
    assert hours * 3600 + minutes * 60 + seconds > cfg.training.time_budget_s * 1.1


@pytest.mark.slow
def test_a_real_run_with_a_time_budget_ends_on_its_fitted_step(compose_train):
    cfg = compose_train("training.time_budget_s=25", "trainer.max_steps=100000", "trainer.val_check_interval=10",
                        "trainer.limit_val_batches=1", "training.warmup_steps=5")
    metrics, objects = train(cfg)
    assert metrics["target_steps"] < 100000 and metrics["global_step"] == metrics["target_steps"]
    assert "undertrained" not in metrics and metrics["step_seconds"] > 0
    schedule = objects["trainer"].lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert schedule.total_steps == metrics["target_steps"]
    assert "fitted to training.time_budget_s=25" in (Path(objects["paths"]["run_dir"]) / "summary.txt").read_text()


def test_a_resumed_run_spends_only_what_is_left_of_its_budget(one_thread, tmp_path):
    class StopAt(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 25:
                trainer.save_checkpoint(tmp_path / "part.ckpt")
                trainer.should_stop = True

    first = TimeBudget(2.0, warmup=1, measure=5)
    _trainer([first, StopAt()], limit_val_batches=0).fit(_SlowModule(step_s=0.04), train_dataloaders=_loader())
    assert first.fitted is not None and first.fitted > 25
    spent = torch.load(tmp_path / "part.ckpt", weights_only=True)["callbacks"]
    (state,) = [v for k, v in spent.items() if k.startswith("TimeBudget")]
    assert 25 * 0.04 <= state["elapsed_s"] < 2.0

    resumed = TimeBudget(2.0, warmup=1, measure=5)
    trainer = _trainer([resumed], limit_val_batches=0)
    started = time.monotonic()
    trainer.fit(_SlowModule(step_s=0.04), train_dataloaders=_loader(), ckpt_path=tmp_path / "part.ckpt")
    # about 2 s / 0.04 s = 50 steps in all, not 25 more plus a fresh budget's 50
    assert trainer.global_step == resumed.fitted <= 60
    assert time.monotonic() - started < 2.0 - 25 * 0.04 + 1.0
