"""Synthesizer speed: real-time factor (seconds of audio per second of compute) on CPU for Bach chorales.

The built-in synthesizer renders the pieces in one batch and one at a time, at the default settings
(44.1 kHz, reverb on), with torch's default threads and with one; FluidSynth plays the same pieces where
it is installed, for comparison. Each
figure is the median of `--repeats` runs after a warm-up; CPU seconds (this process and FluidSynth's) are
recorded beside wall-clock seconds. Writes benchmarks/results/synth.json and .md.

    python benchmarks/synth.py [--pieces 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import music21
import torch
from omegaconf import OmegaConf

from lyria.config import ConfigError, RenderSchema
from lyria.data.convert import parse_music21_file
from lyria.render.fluidsynth import FluidSynth
from lyria.render.synth import Synthesizer
from lyria.training.precision import cpu_name

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RTF = 50.0


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (FluidSynth runs as one): load-independent."""
    spent = os.times()
    return spent.user + spent.system + spent.children_user + spent.children_system


def median_seconds(work, repeats: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of `work` over `repeats` runs after a warm-up."""
    work()  # warm-up: first-call allocations and kernel selection
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), cpu_seconds()
        work()
        wall.append(time.perf_counter() - started)
        cpu.append(cpu_seconds() - started_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    paths = sorted(str(p) for p in music21.corpus.getComposer("bach") if "bwv" in str(p))[: args.pieces]
    scores = [parse_music21_file(path) for path in paths]
    settings = OmegaConf.structured(RenderSchema)
    synth = Synthesizer.from_settings(settings)
    audio_seconds = sum(len(wave) for wave in synth.synthesize(scores)) / synth.sample_rate

    threads = torch.get_num_threads()
    runs = {
        "synth_batched": median_seconds(lambda: synth.synthesize(scores), args.repeats),
        "synth_one_by_one": median_seconds(lambda: [synth.synthesize([score]) for score in scores], args.repeats),
    }
    # One thread: on a shared machine, idle threads of a busy pool spin and inflate both clocks
    torch.set_num_threads(1)
    runs["synth_batched_1_thread"] = median_seconds(lambda: synth.synthesize(scores), args.repeats)
    torch.set_num_threads(threads)
    try:
        fluidsynth = FluidSynth.from_settings(settings)
        fluid_seconds = sum(len(wave) for wave in fluidsynth.synthesize(scores)) / fluidsynth.sample_rate
        runs["fluidsynth"] = median_seconds(lambda: fluidsynth.synthesize(scores), args.repeats)
    except ConfigError as err:
        print(f"fluidsynth skipped: {err}")
        fluid_seconds = None
    audio = {name: fluid_seconds if name == "fluidsynth" else audio_seconds for name in runs}
    rtf = {name: round(audio[name] / wall, 1) for name, (wall, _) in runs.items()}
    rtf_per_cpu_second = {name: round(audio[name] / cpu, 1) for name, (_, cpu) in runs.items()}
    result = {
        "benchmark": "synth",
        "machine": {
            "cpu": cpu_name(),
            "cpus": os.cpu_count(),
            "torch_threads": threads,
            "load_average_1min": round(os.getloadavg()[0], 1),  # what else ran: figures from a busy machine are low
            "python": platform.python_version(),
        },
        "pieces": [Path(p).name for p in paths],
        "audio_seconds": round(audio_seconds, 2),
        "sample_rate": synth.sample_rate,
        "reverb": synth.reverb,
        "seconds": {name: round(wall, 3) for name, (wall, _) in runs.items()},
        "cpu_seconds": {name: round(cpu, 3) for name, (_, cpu) in runs.items()},
        "real_time_factor": rtf,
        "real_time_factor_per_cpu_second": rtf_per_cpu_second,
        "batched_vs_one_by_one": round(runs["synth_one_by_one"][0] / runs["synth_batched"][0], 2),
        "target_rtf": TARGET_RTF,
        "meets_target": rtf["synth_batched"] >= TARGET_RTF,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "synth.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Synthesizer real-time factor ({len(paths)} Bach chorales, {audio_seconds:.0f} s of audio, {synth.sample_rate} Hz)",
        "",
        f"CPU: {result['machine']['cpu']}, {result['machine']['torch_threads']} torch threads, load average "
        f"{result['machine']['load_average_1min']} on {result['machine']['cpus']} CPUs. Target: >= {TARGET_RTF:.0f}x (wall clock). "
        "With one thread, audio seconds per CPU second hardly depend on what else the machine runs; with more, "
        "idle pool threads spin and a busy machine inflates CPU seconds too.",
        "",
        "| renderer | seconds | real-time factor | CPU seconds | audio seconds per CPU second |",
        "|---|---|---|---|---|",
        *(f"| {name} | {runs[name][0]:.3f} | {rtf[name]}x | {runs[name][1]:.3f} | {rtf_per_cpu_second[name]} |" for name in runs),
    ]
    (RESULTS / "synth.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
