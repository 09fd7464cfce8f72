"""Costs of the fault handling: atomic checkpoint writes against Lightning's own writer, and how long each
command-line tool takes to reject a bad config (start-up to the one-line error).

Writes benchmarks/results/faults.json.

    python benchmarks/faults.py [--megabytes 64 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lyria.training.checkpoint_io import AtomicCheckpointIO
from lyria.training.precision import cpu_name

RESULTS = Path(__file__).resolve().parent / "results"
BAD_COMMANDS = {
    "lyria-train": ["lyria.cli.train", "training.optimizer.lr=-1"],
    "lyria-generate": ["lyria.cli.generate", "ckpt=missing.ckpt"],
    "lyria-evaluate": ["lyria.cli.evaluate", "generated=nowhere"],
    "lyria-leaderboard": ["lyria.cli.leaderboard", "runs=.", "confidence=2"],
}


def time_writes(megabytes: int, repeats: int) -> dict:
    state = {"state_dict": {"w": torch.randn(megabytes * 2**20 // 4)}, "global_step": 1}
    out = {}
    with tempfile.TemporaryDirectory(dir=".") as folder:
        for name, io in (("lightning_torch_io", TorchCheckpointIO()), ("lyria_atomic_io", AtomicCheckpointIO())):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                io.save_checkpoint(state, Path(folder) / f"{name}.ckpt")
                times.append(time.perf_counter() - start)
            out[name] = {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4)}
    out["atomic_over_plain_median"] = round(out["lyria_atomic_io"]["median_s"] / out["lightning_torch_io"]["median_s"], 3)
    return out


def time_rejections(repeats: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for tool, args in BAD_COMMANDS.items():
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                result = subprocess.run([sys.executable, "-m", *args], cwd=folder, env=env, capture_output=True, text=True)
                times.append(time.perf_counter() - start)
                assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
            out[tool] = {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3), "message": result.stderr.strip()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "checkpoint_megabytes": args.megabytes,
        "checkpoint_write": time_writes(args.megabytes, args.repeats),
        "bad_config_to_error": time_rejections(args.repeats),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "faults.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
