"""Against a real (one-node, local) SLURM: a job preempted with USR1 checkpoints, requeues itself, resumes in
its own run folder and ends with exactly the weights of an uninterrupted job; a sweep through submitit.

`scripts/slurm_local.sh start` brings the cluster up (make test does); without it these tests are skipped.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lyria.training.train import build_tokenizer_and_data

REPO = Path(__file__).resolve().parents[1]
STEPS = 120
TRAIN = ["logger=csv", "data.max_pieces_per_style=4", "data.num_proc=1", "trainer.precision=32", f"trainer.max_steps={STEPS}",
         "trainer.val_check_interval=20", "trainer.limit_val_batches=1", "callbacks.progress_bar=null",
         "model.d_model=64", "model.n_layers=2", "model.d_ff=128", "model.max_seq_len=128", "model.dropout=0.1", "data.batch_size=4"]


def _run(*cmd: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=kwargs.pop("timeout", 60), **kwargs)


@pytest.fixture(scope="module")
def slurm():
    """The local cluster, started (under a lock, for parallel test workers) when it is not up yet."""
    script = REPO / "scripts" / "slurm_local.sh"
    with open("/tmp/lyria-slurm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _run("bash", str(script), "status", check=False).returncode == 0:
            return
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            message = "no SLURM cluster here and no root + apt-get to install one (scripts/slurm_local.sh start)"
        else:
            started = _run("bash", str(script), "start", check=False, timeout=600)
            if started.returncode == 0:
                return
            message = f"SLURM could not be installed or started here: {started.stderr.strip()[-500:]}"
    if os.environ.get("CI"):
        pytest.fail(message)  # CI runs as root with apt-get: a skip there would hide a broken set-up
    pytest.skip(message)


@pytest.fixture
def job_env(shared_cache):
    # The jobs import this checkout and find the console scripts of this interpreter.
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + sys.path), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "LYRIA_CACHE": str(shared_cache)}


def _prepare_cache(compose_train):
    """Parse the corpus once here, so the jobs only load the cache."""
    build_tokenizer_and_data(compose_train())


def _job_state(job: str) -> tuple[str, int]:
    out = _run("scontrol", "show", "job", job, check=False).stdout
    state = re.search(r"JobState=(\w+)", out)
    restarts = re.search(r"Restarts=(\d+)", out)
    return (state.group(1) if state else "GONE"), int(restarts.group(1)) if restarts else 0


def _alive(job: str, workdir: Path) -> bool:
    state, _ = _job_state(job)
    if state in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "COMPLETED"):
        log = workdir / "job.out"
        raise AssertionError(f"job {job} ended ({state}) before it was preempted: {log.read_text()[-3000:] if log.exists() else ''}")
    return True


def _release(job: str) -> bool:
    """A requeued job is held for a while before it may start again: let it start now."""
    state, _ = _job_state(job)
    if state == "PENDING":
        _run("scontrol", "update", f"jobid={job}", "StartTime=now", check=False)
        return False
    return state in ("RUNNING", "COMPLETED")  # not COMPLETING: that is the preempted run still ending


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _submit(tmp_path: Path, env: dict, name: str) -> str:
    # The one-node template, as it ships, with its GPU request taken out for this CPU-only cluster.
    template = (REPO / "slurm" / "one_node.sbatch").read_text()
    script = tmp_path / "job.sbatch"
    script.write_text("\n".join(line for line in template.splitlines() if "--gpus-per-node" not in line) + "\n")
    workdir = tmp_path / name
    workdir.mkdir()
    out = _run("sbatch", "--parsable", f"--chdir={workdir}", "--ntasks-per-node=1", "--cpus-per-task=1", f"--job-name={name}",
               f"--output={workdir}/job.out", "--export=ALL,LYRIA_TRAINER=cpu", str(script), *TRAIN, env=env).stdout
    return out.strip().split(";")[0]


@pytest.mark.slow
def test_preempted_job_requeues_resumes_and_ends_with_the_uninterrupted_weights(slurm, tmp_path, job_env, compose_train, shared_cache):
    _prepare_cache(compose_train)
    preempted, reference = _submit(tmp_path, job_env, "preempted"), _submit(tmp_path, job_env, "reference")
    run_dir = tmp_path / "preempted" / "outputs" / "train" / f"slurm-{preempted}"
    try:
        # preempt once training is under way (the first validation wrote last.ckpt), as a cluster does
        _wait(lambda: _alive(preempted, tmp_path / "preempted") and (run_dir / "checkpoints" / "last.ckpt").exists(), 300,
              f"job {preempted} to start training")
        _run("scancel", "--signal=USR1", preempted)
        _wait(lambda: _job_state(preempted)[1] >= 1, 120, f"job {preempted} to requeue itself")
        _wait(lambda: _release(preempted), 120, f"requeued job {preempted} to start again")
        _wait(lambda: _job_state(preempted)[0] == "COMPLETED" and _job_state(reference)[0] == "COMPLETED", 420, "both jobs to finish")
    finally:
        _run("scancel", preempted, reference, check=False)
    log = (tmp_path / "preempted" / "job.out").read_text()
    assert "requeued SLURM job" in log and f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in log, log[-3000:]
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    expected = torch.load(tmp_path / "reference" / "outputs" / "train" / f"slurm-{reference}" / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == expected["global_step"] == STEPS
    assert final["state_dict"].keys() == expected["state_dict"].keys()
    for name, weight in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][name], weight), name


@pytest.mark.slow
def test_sweep_runs_as_slurm_jobs_through_the_submitit_launcher(slurm, tmp_path, job_env, compose_train, shared_cache):
    _prepare_cache(compose_train)
    sweep = tmp_path / "sweep"
    result = _run(sys.executable, "-m", "lyria.cli.train", "-m", "hydra/launcher=slurm", "trainer=debug", "logger=csv",
                  "data.max_pieces_per_style=4", "data.num_proc=1", "model.d_model=64", "model.n_layers=2", "model.d_ff=128",
                  "model.max_seq_len=128", "seed=1,2", f"hydra.sweep.dir={sweep}", "hydra.launcher.timeout_min=10",
                  "hydra.launcher.cpus_per_task=1", check=False, env=job_env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # one SLURM array job, a task per run, each with its log and result
    tasks = sorted(p for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name))
    assert len(tasks) == 2
    assert all(list(task.glob("*_result.pkl")) and list(task.glob("*_log.out")) for task in tasks)
    for run in ("0", "1"):
        summary = (sweep / run / "summary.txt").read_text()
        assert "steps: 6" in summary
    seeds = {(sweep / run / ".hydra" / "overrides.yaml").read_text().count(f"seed={s}") for run in ("0", "1") for s in (1, 2)}
    assert seeds == {0, 1}
