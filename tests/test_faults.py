"""Faults survived: checkpoints written atomically (a killed writer or a full disk keeps the previous one), resume
past a corrupt checkpoint, a non-finite loss stops or skips and is never saved, a full disk while rendering."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from lyria.checkpoint import load_model, newest_intact_checkpoint, read_checkpoint
from lyria.cli import CONF_DIR
from lyria.config import ConfigError, build
from lyria.errors import CheckpointError, DiskFullError, NonFiniteLossError
from lyria.files import atomic_write, is_temporary
from lyria.render import build_renderers, render_batch
from lyria.tokenizers import LyriaTokenizer
from lyria.training.checkpoint_io import AtomicCheckpointIO
from lyria.training.module import LyriaLightningModule
from lyria.training.train import resume_checkpoint
from tests_support import make_score

MODEL = {
    "mixer": {"_target_": "lyria.models.mixers.AttentionMixer", "position": {"_target_": "lyria.models.positions.RotaryPosition"}},
    "conditioning": {"_target_": "lyria.models.conditioning.Conditioner"},
    "d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64, "dropout": 0.0, "max_seq_len": 32,
}
TRAINING = {"optimizer": {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8}, "warmup_steps": 1, "total_steps": 20, "min_lr_ratio": 0.1}
LYRIA_KEYS = {"state_dict": {}, "hyper_parameters": {"model": {}, "vocab_sizes": [8], "num_styles": 1, "pad_id": 0}}
TRAINER_CONFIGS = sorted(p.stem for p in (Path(CONF_DIR) / "trainer").glob("*.yaml"))


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


# ------------------------------------------------------------------------------------------ atomic writes
def test_a_killed_writer_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({**LYRIA_KEYS, "global_step": 1, "weights": torch.ones(1000)}, path)
    # the child writes a large checkpoint whose serialisation stalls half-way; it is SIGKILLed there
    child = textwrap.dedent(
        """
        import sys, time, torch
        from lyria.training.checkpoint_io import AtomicCheckpointIO
        real_save = torch.save
        def stalling_save(obj, handle):
            handle.write(b"\\x80" * 4_000_000)
            handle.flush()
            print("half-written", flush=True)
            time.sleep(120)
        torch.save = stalling_save
        AtomicCheckpointIO().save_checkpoint({"global_step": 2, "weights": torch.zeros(2_000_000)}, sys.argv[1])
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", child, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "half-written"
        leftovers = [p for p in tmp_path.iterdir() if is_temporary(p)]
        assert leftovers and leftovers[0].stat().st_size >= 4_000_000  # the write really was under way
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    state = torch.load(path, weights_only=True)
    assert state["global_step"] == 1 and torch.equal(state["weights"], torch.ones(1000))
    # readers pass over the leftover of the killed write
    found, passed_over = newest_intact_checkpoint(tmp_path)
    assert found == path and passed_over == []


def test_disk_full_while_writing_a_checkpoint_names_it_and_keeps_the_previous(tmp_path, monkeypatch):
    path = tmp_path / "best.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)

    def half_then_full(obj, handle):
        handle.write(b"partial")
        _disk_full()

    monkeypatch.setattr(torch, "save", half_then_full)
    with pytest.raises(DiskFullError, match=r"disk full while writing the checkpoint .*best\.ckpt \(the previous version is intact\)"):
        io.save_checkpoint({"global_step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]  # no temporary file left behind


def test_atomic_write_of_text_and_a_new_file_on_a_full_disk(tmp_path, monkeypatch):
    atomic_write(tmp_path / "a.json", "{}")
    assert (tmp_path / "a.json").read_text() == "{}"
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(DiskFullError, match=r"b\.json \(nothing was written\)"):
        atomic_write(tmp_path / "b.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


@pytest.mark.parametrize("name", TRAINER_CONFIGS)
def test_every_trainer_config_writes_checkpoints_atomically(tmp_path, name):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"trainer={name}", f"paths.output_dir={tmp_path}"])
    targets = [node["_target_"] for node in cfg.trainer.plugins]
    assert targets == ["lyria.training.checkpoint_io.AtomicCheckpointIO"]
    if cfg.trainer.accelerator == "cpu" and "strategy" not in cfg.trainer:
        trainer = build(cfg.trainer, "trainer", precision="32-true", logger=False, callbacks=[], default_root_dir=str(tmp_path))
        assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


# ------------------------------------------------------------------------------------ corrupt checkpoints
def _checkpoint(path: Path, step: int) -> Path:
    torch.save({"state_dict": {}, "hyper_parameters": {"model": {}, "vocab_sizes": [8], "num_styles": 1, "pad_id": 0}, "global_step": step}, path)
    return path


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, caplog):
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    older = _checkpoint(ckpt_dir / "best.ckpt", 3)
    os.utime(older, (1, 1))
    last = _checkpoint(ckpt_dir / "last.ckpt", 6)
    last.write_bytes(last.read_bytes()[:200])  # truncated: the run died writing it
    cfg = OmegaConf.create({"ckpt_path": None, "auto_resume": True})
    with caplog.at_level(logging.WARNING, logger="lyria.training.train"):
        assert resume_checkpoint(cfg, ckpt_dir) == str(older)
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "last.ckpt is not a readable checkpoint (truncated or corrupt?)" in warnings
    assert "instead, the newest intact checkpoint" in warnings
    # nothing intact: a fresh start, with the reason
    older.write_bytes(b"garbage")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lyria.training.train"):
        assert resume_checkpoint(cfg, ckpt_dir) is None
    assert "no intact checkpoint" in caplog.text
    # a checkpoint asked for by name is not replaced by another: its problem is the error
    with pytest.raises(ConfigError, match=r"ckpt_path=.*last\.ckpt: .*last\.ckpt is not a readable checkpoint"):
        resume_checkpoint(OmegaConf.create({"ckpt_path": str(last), "auto_resume": True}), ckpt_dir)


@pytest.mark.parametrize("damage", ["truncated", "zeroed", "empty", "text"])
def test_a_damaged_checkpoint_is_a_checkpoint_error_naming_the_file(tmp_path, damage):
    path = _checkpoint(tmp_path / "model.ckpt", 1)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "zeroed": bytes(len(data)), "empty": b"", "text": b"not a checkpoint"}[damage])
    with pytest.raises(CheckpointError, match=r"model\.ckpt is not a readable checkpoint \(truncated or corrupt\?\)"):
        read_checkpoint(path)


# ------------------------------------------------------------------------------------ non-finite training
class PoisonedModule(LyriaLightningModule):
    """The loss of training step `poison_at` becomes NaN (as a diverging run's would)."""

    poison_at = -1

    def _step(self, batch, stage):
        loss = super()._step(batch, stage)
        if stage == "train" and self.global_step == self.poison_at:
            loss = loss * float("nan")
        return loss


def _batches(tokenizer: LyriaTokenizer, n: int, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        tokens = torch.randint(tokenizer.num_special, tokenizer.vocab_size, (2, 17), generator=generator)
        out.append({"tokens": tokens[:, :-1], "targets": tokens[:, 1:], "bar_ids": torch.zeros(2, 16, dtype=torch.long),
                    "style": torch.zeros(2, dtype=torch.long)})
    return out


def _fit(tmp_path, nonfinite: str, poison_at: int, log_every: int = 1, max_skipped: int = 10, module_class=None):
    tokenizer = LyriaTokenizer(styles=["a"])
    training = {**TRAINING, "nonfinite": nonfinite, "max_skipped_steps": max_skipped}
    module = (module_class or PoisonedModule)(MODEL, training, tokenizer.vocab_sizes, tokenizer.num_style_slots, tokenizer.pad_id, tokenizer.styles)
    module.poison_at = poison_at
    checkpoints = ModelCheckpoint(dirpath=tmp_path, filename="best", monitor="val/loss", save_last=True, enable_version_counter=False)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=6, val_check_interval=3, limit_val_batches=1, log_every_n_steps=log_every, logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[checkpoints],
        plugins=[AtomicCheckpointIO()],
    )
    error = None
    try:
        trainer.fit(
            module,
            train_dataloaders=DataLoader(_batches(tokenizer, 6), batch_size=None),
            val_dataloaders=DataLoader(_batches(tokenizer, 1, seed=1), batch_size=None),
        )
    except NonFiniteLossError as err:
        error = err
    return trainer, module, error


def _finite(path: Path) -> bool:
    state = torch.load(path, weights_only=True)
    return all(bool(torch.isfinite(v).all()) for v in state["state_dict"].values() if v.is_floating_point())


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, one_thread):
    _, _, error = _fit(tmp_path, "stop", poison_at=4)
    assert error is not None and "training loss is nan" in str(error) and "at step 4" in str(error)
    assert "last good checkpoint is kept" in str(error) and "last.ckpt" in str(error)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 3
    assert _finite(tmp_path / "last.ckpt") and _finite(tmp_path / "best.ckpt")


def test_a_nan_loss_skips_the_step_when_configured(tmp_path, one_thread):
    trainer, module, error = _fit(tmp_path, "skip", poison_at=4)
    assert error is None and module.skipped_steps == 1
    assert all(bool(torch.isfinite(p).all()) for p in module.parameters())
    assert _finite(tmp_path / "last.ckpt")


def test_too_many_skipped_steps_stop_the_run(tmp_path, one_thread):
    class AlwaysNaN(LyriaLightningModule):
        def _step(self, batch, stage):
            loss = super()._step(batch, stage)
            return loss * float("nan") if stage == "train" and self.global_step >= 1 else loss

    _, module, error = _fit(tmp_path, "skip", poison_at=-1, max_skipped=2, module_class=AlwaysNaN)
    assert error is not None and "training.max_skipped_steps=2" in str(error) and module.skipped_steps == 3


def test_a_nan_between_checks_is_never_saved_as_best(tmp_path, one_thread):
    # the loss is only read every 3 steps: the NaN of step 1 poisons the weights unseen, until validation
    _, module, error = _fit(tmp_path, "stop", poison_at=1, log_every=3)
    assert error is not None and "validation loss is nan" in str(error)
    assert not any(p.suffix == ".ckpt" for p in tmp_path.iterdir())  # neither best nor last was written


def test_a_model_with_nan_weights_is_never_written(tmp_path):
    tokenizer = LyriaTokenizer(styles=["a"])
    module = LyriaLightningModule(MODEL, TRAINING, tokenizer.vocab_sizes, tokenizer.num_style_slots, tokenizer.pad_id, tokenizer.styles)
    module.on_save_checkpoint({})  # finite: fine
    with torch.no_grad():
        next(module.model.parameters()).fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match="weights are not finite.*no checkpoint is written"):
        module.on_save_checkpoint({})


# ------------------------------------------------------------------------------------ full disk, samples
def test_disk_full_while_rendering_samples_keeps_the_earlier_files(tmp_path, monkeypatch):
    renderers = build_renderers({"formats": ["midi"]})
    first = render_batch([make_score([60, 62, 64])], [tmp_path / "sample_000"], renderers)[0]
    assert first.files["midi"].is_file()
    before = first.files["midi"].read_bytes()
    monkeypatch.setattr("lyria.render.midi.write_midi", _disk_full)
    with pytest.raises(DiskFullError, match=r"disk full while writing \.mid files in .*files written before are intact"):
        render_batch([make_score([60, 62, 64, 65])], [tmp_path / "sample_001"], renderers)
    assert (tmp_path / "sample_000.mid").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample_000.mid"]


# ------------------------------------------------------------------------------------ secrets
@pytest.mark.slow
def test_no_secret_reaches_the_run_folder(tmp_path, shared_cache):
    """The wandb API key and the environment are never written: not by Hydra, lyria, Lightning or wandb."""
    secrets = {"WANDB_API_KEY": "local-" + "0123456789abcdef" * 2 + "feedc0de", "LYRIA_TEST_PASSWORD": "hunter2-not-for-logs"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "WANDB_MODE": "offline", **secrets}
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "lyria.cli.train", "trainer=debug", "logger=wandb", "data.max_pieces_per_style=2", "data.num_proc=1",
         "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "model.d_ff=64", "model.max_seq_len=64",
         f"paths.cache_dir={shared_cache}", f"hydra.run.dir={run}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files) and (run / ".hydra" / "config.yaml").is_file()
    for path in files:
        data = path.read_bytes()
        for name, value in secrets.items():
            assert value.encode() not in data, f"{name} was written to {path.relative_to(run)}"
    for stream in (result.stdout, result.stderr):
        assert not any(value in stream for value in secrets.values())
