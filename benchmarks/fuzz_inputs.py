"""Hostile inputs: malformed MIDI files of 24 kinds through every path that reads music from outside.

Writes `--per-kind` seeded files of each kind (tests/midi_fuzz.py), then runs them through data preparation
(data=midi_folder: parsing, limits, tokenization), `prompt=` continuation (read_midi and continue_piece with
a tiny model), lyria-evaluate's `generated=` folder reading, and one whole lyria-evaluate run (eval=fast)
on the folder. Records, per kind and stage, what happened to the files (kept, skipped by stage, refused,
crashed) and the time of each stage. Writes benchmarks/results/fuzz_inputs.json.

    python benchmarks/fuzz_inputs.py [--per-kind 45] [--seed 0] [--num-proc 2]
"""

from __future__ import annotations

from lyria.training.precision import cpu_name
import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import midi_fuzz  # noqa: E402  (test support: the seeded generator)

RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=45)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-proc", type=int, default=2)
    args = parser.parse_args()
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        written = midi_fuzz.write_corpus(scratch / "corpus", args.per_kind, args.seed)
        seconds["write"] = time.perf_counter() - started
        paths = [p for kind in written.values() for p in kind]
        flat = scratch / "flat"
        flat.mkdir()
        for path in paths:
            shutil.copy(path, flat / path.name)

        started = time.perf_counter()
        prepared = midi_fuzz.fuzz_prepare(scratch / "corpus", scratch / "cache", args.num_proc)
        seconds["prepare"] = time.perf_counter() - started
        started = time.perf_counter()
        prompts = midi_fuzz.fuzz_prompts(paths)
        seconds["prompt"] = time.perf_counter() - started
        started = time.perf_counter()
        folder = midi_fuzz.fuzz_evaluate_folder(flat, args.num_proc)
        seconds["evaluate_folder"] = time.perf_counter() - started
        started = time.perf_counter()
        document = midi_fuzz.fuzz_evaluate(flat, scratch / "corpus", scratch / "cache", scratch / "evaluation", args.num_proc)
        seconds["evaluate_run"] = time.perf_counter() - started

    report = prepared["report"]
    skips = report["skipped"] + folder["pieces"].skipped
    result = {
        "files": len(paths),
        "kinds": len(written),
        "per_kind": args.per_kind,
        "seed": args.seed,
        "crashes": len(prompts["crashes"]),  # the other stages raise on a crash, which ends this script
        # contained in isolated workers: files whose parser or tokenizer hung past its time limit or died
        "timeouts_contained": sum("timed out" in s["reason"] for s in skips),
        "worker_deaths_contained": sum("worker process died" in s["reason"] for s in skips),
        "prepare": {
            "kept": sum(report["pieces"].values()),
            "skipped_by_stage": report["skipped_by_stage"],
            "duplicates_removed": report["duplicates_removed"],
            "mean_tokens_per_piece": round(report["mean_tokens_per_piece"], 1),
            "by_kind": prepared["by_kind"],
        },
        "prompt": {k: v for k, v in prompts.items() if k != "crashes"} | {"crash_list": prompts["crashes"]},
        "evaluate_folder": {
            "read": len(folder["pieces"]),
            "skipped": len(folder["pieces"].skipped),
            "by_kind": folder["by_kind"],
        },
        "evaluate_run": {"n_pieces": document["generated"]["n_pieces"], "skipped": document["generated"]["skipped"]},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "fuzz_inputs.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("files", "crashes", "seconds")}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
