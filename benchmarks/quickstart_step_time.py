"""Seconds per training step of the quickstart (`experiment=quickstart`: lm_small, REMI, 16 x 256 tokens) in fp32
and in bf16-mixed on this CPU, through the real training entry point. Writes benchmarks/results/quickstart_step_time.json.

The median step after `--skip` start-up steps is reported (a shared machine's load comes and goes), with the
load average, the CPU model and whether oneDNN computes bf16 natively here (`trainer.precision=auto` picks
bf16-mixed only then). bf16 emulated on a CPU without bf16 units is slow: it gets fewer steps.
Usage: PYTHONPATH=. python benchmarks/quickstart_step_time.py [--steps 12] [--bf16-steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from lyria.cli import CONF_DIR
from lyria.training.precision import cpu_bf16_native, cpu_name
from lyria.training.train import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def cpu_flags() -> list[str]:
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx", "amx")))
    return []


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ends.append(time.perf_counter())


def measure(precision: str, steps: int, skip: int, cache_dir: str) -> dict:
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as run_dir, initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "experiment=quickstart", "logger=csv", f"trainer.precision={precision}", f"trainer.max_steps={steps}",
                "trainer.max_time=null", "training.time_budget_s=null", "trainer.limit_val_batches=0",
                "callbacks.progress_bar=null", "trainer.enable_progress_bar=false", "callbacks.sample_monitor=null", f"paths.cache_dir={cache_dir}",
                f"paths.output_dir={run_dir}",
            ],
        )
        train(cfg, callbacks=[timer])
    intervals = [b - a for a, b in zip(timer.ends, timer.ends[1:])][skip:]
    return {"precision": precision, "steps_timed": len(intervals), "median_s": round(statistics.median(intervals), 3),
            "min_s": round(min(intervals), 3), "max_s": round(max(intervals), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--bf16-steps", type=int, default=5)
    parser.add_argument("--skip", type=int, default=2)
    parser.add_argument("--cache-dir", default=os.environ.get("LYRIA_CACHE", str(ROOT / ".cache" / "lyria")))
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = [measure("32", args.steps, args.skip, args.cache_dir), measure("bf16-mixed", args.bf16_steps, min(args.skip, 1), args.cache_dir)]
    report = {
        "cpu": cpu_name(), "cpu_flags": cpu_flags(), "bf16_native": cpu_bf16_native(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()], "shape": "lm_small, REMI, batch 16 x 256 tokens",
        "results": {row["precision"]: row for row in rows},
        "bf16_over_fp32": round(rows[1]["median_s"] / rows[0]["median_s"], 2),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quickstart_step_time.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
