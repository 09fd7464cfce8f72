"""DDP on CPU (gloo, 2 processes): the loss curve of a single process with the same global batch, one
run folder, validation split across ranks with the same global metrics, and a non-finite loss on one
rank stopping both ranks with the message instead of a hang."""

from __future__ import annotations

import json
import re

import pytest
import torch

from worker_support import read_losses, run_worker

STEPS = 8
# Relative tolerance on the per-step training loss. Each rank's loss is its share of the mean over every
# rank's target tokens (crops at a piece's end are shorter, so ranks hold different numbers of targets), so
# DDP's average of the ranks' gradients is the gradient of one process's mean over the global batch.
LOSS_RTOL = 1e-5
MODEL = ["model.d_model=64", "model.n_layers=2", "model.d_ff=128", "model.max_seq_len=128", "trainer.precision=32",
         f"trainer.max_steps={STEPS}", "trainer.val_check_interval=4", "trainer.limit_val_batches=null"]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=4"]


def _metrics(result) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(re.search(r"WORKER-METRICS (.*)", result.stdout).group(1))


def _global_losses(tmp_path, name, ranks):
    per_rank = [read_losses(tmp_path, name, rank) for rank in range(ranks)]
    steps = sorted(per_rank[0])
    # every rank returns its share of the global per-token mean, scaled by the number of ranks
    return {s: sum(r[s]["loss"] for r in per_rank) / ranks for s in steps}


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path, shared_cache):
    spec = {"cache": str(shared_cache)}
    single = _metrics(run_worker(tmp_path, "single", {**spec, "overrides": MODEL + ["data.batch_size=8", f"paths.output_dir={tmp_path / 'single'}"]}))
    ddp_dir = tmp_path / "ddp"
    ddp = _metrics(run_worker(tmp_path, "ddp", {**spec, "overrides": MODEL + DDP + [f"paths.output_dir={ddp_dir}"]}))

    one, two = _global_losses(tmp_path, "single", 1), _global_losses(tmp_path, "ddp", 2)
    assert sorted(one) == sorted(two) == list(range(STEPS))
    for step in range(STEPS):
        assert two[step] == pytest.approx(one[step], rel=LOSS_RTOL), step
    assert ddp["global_step"] == single["global_step"] == STEPS

    # one run folder, written by rank 0: one csv log, one checkpoint folder; every rank's RNG state saved
    assert sorted(p.name for p in (ddp_dir / "csv").iterdir()) == ["version_0"]
    state = torch.load(ddp_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(state["callbacks"]["RNGStateCallback"]["ranks"]) == 2

    # the single run's best checkpoint validated by two processes, each on half the windows: the same metrics
    validated = _metrics(run_worker(tmp_path, "validate", {**spec, "overrides": MODEL + DDP + [
        f"paths.output_dir={tmp_path / 'validate'}", f"ckpt_path={tmp_path / 'single' / 'checkpoints' / 'last.ckpt'}"]}))
    assert validated["final_val_loss"] == pytest.approx(single["final_val_loss"], rel=1e-5)
    assert validated["final_val_bits_per_note"] == pytest.approx(single["final_val_bits_per_note"], rel=1e-5)
    assert validated["unigram_val_loss"] == pytest.approx(single["unigram_val_loss"], rel=1e-9)


@pytest.mark.slow
def test_non_finite_loss_on_one_rank_stops_both(tmp_path, shared_cache):
    result = run_worker(tmp_path, "nan", {"cache": str(shared_cache), "nan_on_rank": [1, 2],
                                          "overrides": MODEL + DDP + ["trainer.log_every_n_steps=1", f"paths.output_dir={tmp_path / 'nan'}"]},
                        timeout=300)
    assert result.returncode != 0
    assert "training loss is nan on this rank at step 2 " in result.stderr
    assert "training loss is finite here but not on another rank at step 2 " in result.stderr
