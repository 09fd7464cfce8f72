"""Runs tests/training/train_worker.py in a subprocess and reads back its per-step losses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("train_worker.py")


def run_worker(tmp_path: Path, name: str, spec: dict, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    spec = {"losses": str(tmp_path / f"{name}.jsonl"), **spec}
    spec_file = tmp_path / f"{name}.json"
    spec_file.write_text(json.dumps(spec))
    full_env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    return subprocess.run([sys.executable, str(WORKER), str(spec_file)], env=full_env, capture_output=True, text=True, timeout=timeout)


def read_losses(tmp_path: Path, name: str, rank: int = 0, key: str = "step") -> dict:
    """{step (or "epoch:batch"): {"loss": float, "hex": str, "tokens": int}}; a later line for the same key wins."""
    path = tmp_path / f"{name}.jsonl.rank{rank}"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {r[key]: {"loss": float.fromhex(r["loss"]), "hex": r["loss"], "tokens": r["tokens"]} for r in rows}
