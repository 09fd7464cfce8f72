"""Trainer and launcher configs, run folders under SLURM, resume selection, the stateful training loader
and per-rank RNG states: everything of the scale-out path that runs in one process."""

from __future__ import annotations

import random
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from omegaconf import OmegaConf

from lyria.cli import CONF_DIR
from lyria.config import ConfigError, TrainSchema, build, process_rank, slurm_run_name, validate
from lyria.data.datamodule import EpochSampler, EvalShard, ResumableLoader
from lyria.models.lm import Block
from lyria.training.callbacks import _pack, _unpack, capture_rng_state, restore_rng_state
from lyria.training.train import _check_accumulation, build_trainer, resume_checkpoint

TRAINERS = sorted(p.stem for p in (Path(CONF_DIR) / "trainer").glob("*.yaml"))
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "RANK", "LOCAL_RANK")


def test_every_scale_out_trainer_config_exists():
    assert {"cpu", "gpu", "ddp", "ddp_multinode", "fsdp", "debug"} <= set(TRAINERS)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_trainer_config_composes_validates_and_builds_its_strategy(compose_train, trainer):
    cfg = validate(compose_train(f"trainer={trainer}"), TrainSchema)
    assert cfg.trainer.precision in ("32", "32-true", "bf16-mixed", "16-mixed", "auto")
    assert cfg.trainer.use_distributed_sampler is False  # lyria shards its own data
    strategy = cfg.trainer.get("strategy")
    if isinstance(strategy, str) or strategy is None:
        if cfg.trainer.accelerator == "cpu":
            assert isinstance(build_trainer(cfg.trainer, logger=False, enable_checkpointing=False), L.Trainer)
        return
    built = build(strategy, "trainer.strategy")
    assert isinstance(built, (DDPStrategy, FSDPStrategy))
    if isinstance(built, FSDPStrategy):
        # shards one Transformer block at a time and saves full checkpoints (they load like any other)
        policy = built.kwargs["auto_wrap_policy"]
        block = Block(8, 16, 0.0, torch.nn.Identity(), layer=0)
        assert policy(module=block, recurse=False, nonwrapped_numel=0)
        assert not policy(module=block.norm1, recurse=False, nonwrapped_numel=0)


def test_ddp_config_trains_on_cpu_processes_by_override(compose_train):
    cfg = compose_train("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32")
    trainer = build(cfg.trainer, "trainer", logger=False, enable_checkpointing=False)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2
    assert trainer.strategy._process_group_backend in (None, "gloo")


@pytest.mark.parametrize(("launcher", "target"), [("slurm", "SlurmLauncher"), ("local", "LocalLauncher")])
def test_hydra_launcher_configs_compose(launcher, target):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":
        assert cfg.hydra.launcher.signal_delay_s > 0 and cfg.hydra.launcher.max_num_timeout > 0


def test_run_folder_is_named_after_the_slurm_job(monkeypatch):
    for name in SLURM_VARS:
        monkeypatch.delenv(name, raising=False)
    assert slurm_run_name() is None and process_rank() == 0
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert slurm_run_name() == "slurm-4242"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4200")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_run_name() == "slurm-4200_3"
    monkeypatch.setenv("SLURM_PROCID", "5")
    assert process_rank() == 5
    cfg = OmegaConf.create({"dir": "outputs/${run_name:}", "subdir": "${rank_zero:.hydra}"})
    assert cfg.dir == "outputs/slurm-4200_3" and cfg.subdir is None  # only rank 0 writes Hydra's folder


def _tiny_checkpoint(path):
    torch.save({"state_dict": {}, "hyper_parameters": {"model": {}, "vocab_sizes": [8], "num_styles": 1, "pad_id": 0}}, path)


def test_resume_prefers_ckpt_path_then_the_run_folders_last_checkpoint(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    cfg = OmegaConf.create({"ckpt_path": None, "auto_resume": True})
    assert resume_checkpoint(cfg, ckpt_dir) is None
    ckpt_dir.mkdir()
    _tiny_checkpoint(ckpt_dir / "last.ckpt")
    assert resume_checkpoint(cfg, ckpt_dir) == str(ckpt_dir / "last.ckpt")
    assert resume_checkpoint(OmegaConf.create({"ckpt_path": None, "auto_resume": False}), ckpt_dir) is None
    other = tmp_path / "other.ckpt"
    _tiny_checkpoint(other)
    assert resume_checkpoint(OmegaConf.create({"ckpt_path": str(other), "auto_resume": True}), ckpt_dir) == str(other)
    with pytest.raises(ConfigError, match="ckpt_path=.*missing.ckpt: no checkpoint at"):
        resume_checkpoint(OmegaConf.create({"ckpt_path": str(tmp_path / "missing.ckpt"), "auto_resume": True}), ckpt_dir)


def test_validation_interval_must_fall_on_whole_accumulated_steps(compose_train):
    cfg = compose_train("trainer.accumulate_grad_batches=4", "trainer.val_check_interval=6")
    with pytest.raises(ConfigError, match="val_check_interval=6 is not a multiple of trainer.accumulate_grad_batches=4"):
        _check_accumulation(build_trainer(cfg.trainer, logger=False, enable_checkpointing=False))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_evaluation_windows_are_split_across_ranks_without_repeats(world):
    shards = [list(EvalShard(10, world, rank)) for rank in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(10))
    assert [len(EvalShard(10, world, rank)) for rank in range(world)] == [len(s) for s in shards]


class _Keys(torch.utils.data.Dataset):
    """Returns the sampler's key: (piece, epoch, position)."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, key):
        return key


def _loader(batch_size=3):
    sampler = EpochSampler(np.zeros(10, dtype=int), seed=5)
    return ResumableLoader(_Keys(), sampler, batch_size, collate_fn=lambda rows: rows)


def test_training_loader_state_counts_batches_taken_not_prefetched():
    full = _loader()
    order = [batch for _ in range(2) for batch in full]
    loader = _loader()
    iterator = iter(loader)
    taken = [next(iterator), next(iterator)]
    loader.batch_taken()
    loader.batch_taken()
    next(iterator)  # prefetched by the loop, not yet trained on
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches_done": 2}
    resumed = _loader()
    resumed.load_state_dict(state)
    assert taken + [batch for _ in range(2) for batch in resumed] == order[:2] + order[2:]
    assert resumed.state_dict()["epoch"] == 1 and resumed.batches_taken == 0


def test_rng_state_survives_packing_for_all_gather():
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    random.gauss(0, 1)  # leaves a cached gauss value in python's state
    state = capture_rng_state()
    packed = _pack(state)
    assert all(isinstance(v, torch.Tensor) for v in packed.values())
    expected = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))
    restore_rng_state(_unpack(packed))
    again = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2:] == again[2:]


@pytest.mark.slow
def test_compiled_model_trains_and_keeps_plain_parameter_names(compose_train, one_thread):
    from lyria.training.train import train

    metrics, objects = train(compose_train("training.compile=true", "trainer.precision=32", "trainer.max_steps=2",
                                           "trainer.limit_val_batches=0", "callbacks.model_checkpoint.monitor=null"))
    assert metrics["global_step"] == 2
    assert objects["module"].model._compiled_call_impl is not None  # nn.Module.compile() took effect
    state = torch.load(objects["paths"]["last_checkpoint"], weights_only=True)
    assert not any("_orig_mod" in name for name in state["state_dict"])


def test_rng_states_of_every_rank_and_of_older_single_state_checkpoints_are_restored():
    from lyria.training.callbacks import RNGStateCallback

    torch.manual_seed(11)
    saved = capture_rng_state()
    expected = torch.rand(2)
    trainer = type("Trainer", (), {"world_size": 2, "global_rank": 1})()
    for state in ({"ranks": [capture_rng_state(), saved]}, saved):  # rank 1 takes its own; an old checkpoint's one state
        callback = RNGStateCallback()
        callback.load_state_dict(state)
        torch.manual_seed(0)
        callback.on_train_start(trainer if "ranks" in state else type("Trainer", (), {"world_size": 1, "global_rank": 0})(), None)
        assert torch.equal(torch.rand(2), expected)
