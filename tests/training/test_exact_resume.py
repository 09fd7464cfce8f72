"""Exact resume: a run killed (SIGKILL) or requeued by SLURM's signal, then resumed from its run folder's
last.ckpt, computes bitwise the same per-step losses as an uninterrupted run (CPU, fp32, dropout on,
stopped mid-epoch)."""

from __future__ import annotations

import pytest
import torch

from worker_support import read_losses, run_worker

STEPS = 12
COMMON = [
    "trainer.precision=32", f"trainer.max_steps={STEPS}", "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
    "data.batch_size=4", "model.d_model=64", "model.n_layers=2", "model.d_ff=128", "model.max_seq_len=128",
    "model.dropout=0.1",
]
# What Lightning needs to see a (one-task) SLURM job; `scontrol requeue` of this id fails and is only logged.
FAKE_SLURM = {"SLURM_NTASKS": "1", "SLURM_JOB_ID": "987654", "SLURM_JOB_NAME": "lyria-test", "SLURM_PROCID": "0",
              "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}


def _assert_mid_epoch(run_dir, global_step):
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == global_step
    (loader,) = state["loops"]["fit_loop"]["state_dict"]["combined_loader"]  # the training loader's own state
    assert 0 < loader["batches_done"] < global_step, loader


def _checked(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_killed_and_requeued_runs_resume_bitwise(tmp_path, shared_cache):
    spec = {"cache": str(shared_cache)}
    _checked(run_worker(tmp_path, "reference", {**spec, "overrides": COMMON + [f"paths.output_dir={tmp_path / 'reference'}"]}))
    reference = read_losses(tmp_path, "reference")
    assert sorted(reference) == list(range(STEPS))
    assert len({r["hex"] for r in reference.values()}) == STEPS

    # SIGKILL after step 8: the newest checkpoint is the one written at validation after step 5
    killed = run_worker(tmp_path, "killed", {**spec, "kill_after": 8, "overrides": COMMON + [f"paths.output_dir={tmp_path / 'killed'}"]})
    assert killed.returncode == -9
    _assert_mid_epoch(tmp_path / "killed", global_step=6)
    _checked(run_worker(tmp_path, "killed", {**spec, "overrides": COMMON + [f"paths.output_dir={tmp_path / 'killed'}"]}))
    resumed = read_losses(tmp_path, "killed")
    assert {s: resumed[s]["hex"] for s in range(6, STEPS)} == {s: reference[s]["hex"] for s in range(6, STEPS)}

    # SLURM's warning signal in the middle of step 7, and in step 4, the last batch of the first epoch (5 batches
    # an epoch): checkpoint after that step, requeue, stop; the requeued run goes on bitwise
    for step in (7, 4):
        name = f"signalled{step}"
        run = {**spec, "overrides": COMMON + [f"paths.output_dir={tmp_path / name}"]}
        signalled = _checked(run_worker(tmp_path, name, {**run, "signal_at": step}, env=FAKE_SLURM))
        assert '"requeued": true' in signalled.stdout
        assert max(read_losses(tmp_path, name)) == step
        state = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)
        assert state["global_step"] == step + 1
        (loader,) = state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
        assert loader["batches_done"] == step % 5 + 1, loader  # batches of the current epoch done
        (tmp_path / f"{name}.jsonl.rank0").unlink()
        _checked(run_worker(tmp_path, name, run, env=FAKE_SLURM))
        requeued = read_losses(tmp_path, name)
        assert min(requeued) == step + 1
        assert {s: requeued[s]["hex"] for s in requeued} == {s: reference[s]["hex"] for s in range(step + 1, STEPS)}


@pytest.mark.slow
def test_signal_inside_a_gradient_accumulation_checkpoints_at_its_end(tmp_path, shared_cache):
    accumulate = COMMON + ["trainer.accumulate_grad_batches=2", "trainer.val_check_interval=4", "trainer.max_steps=6"]
    spec = {"cache": str(shared_cache)}
    _checked(run_worker(tmp_path, "reference", {**spec, "overrides": accumulate + [f"paths.output_dir={tmp_path / 'reference'}"]}))
    reference = read_losses(tmp_path, "reference", key="batch")
    # 5 batches an epoch: optimizer steps take batches (0, 1), (2, 3), (4) of each epoch
    assert len(reference) == 10
    # the signal arrives in batch 1:0, the first of step 3's pair: the checkpoint waits for batch 1:1
    run = {**spec, "overrides": accumulate + [f"paths.output_dir={tmp_path / 'signalled'}"]}
    _checked(run_worker(tmp_path, "signalled", {**run, "signal_at": 3}, env=FAKE_SLURM))
    assert torch.load(tmp_path / "signalled" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    (tmp_path / "signalled.jsonl.rank0").unlink()
    _checked(run_worker(tmp_path, "signalled", run, env=FAKE_SLURM))
    resumed = read_losses(tmp_path, "signalled", key="batch")
    assert sorted(resumed) == ["1:2", "1:3", "1:4"]
    assert {b: r["hex"] for b, r in resumed.items()} == {b: reference[b]["hex"] for b in resumed}
