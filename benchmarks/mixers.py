"""Speed and memory of every mixer as the sequence grows; writes benchmarks/results/mixers.{json,md}.

Every (mixer, length) point runs in a fresh process (batch 1, d_model 256, 4 layers, fp32, CPU, 2 threads):
forward+backward time, peak RSS above the RSS after the model is built, and cached generation speed
at that context length. At 1024 tokens it also times 1024 generated tokens with the cache against
recomputing the whole prefix at every step. Usage: python benchmarks/mixers.py [--lengths ...] [--mixers ...]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MIXER_DIR = ROOT / "conf" / "model" / "mixer"
RESULTS = ROOT / "benchmarks" / "results"
LENGTHS = [512, 1024, 2048, 4096]
MODEL = {"d_model": 256, "n_layers": 4, "n_heads": 4, "d_ff": 1024, "dropout": 0.0, "max_seq_len": 8192}
VOCAB = 512
TOKENS_PER_BAR = 32  # a dense four-voice chorale bar in REMI
GENERATION_STEPS = 64  # timed single-token steps after a prefix of length - 64
CACHE_VS_RECOMPUTE = 1024  # generated tokens for the cache-vs-recompute comparison
SLIDING_WINDOW = 128
# Idle OpenMP threads sleep rather than spin: on a shared machine spinning threads turn every small op
# of single-token decoding into a 10x stall; on an idle one the difference is noise.
CHILD_ENV = os.environ | {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}

# name -> (YAML, overrides, SDPA restricted to the math kernel)
EXTRA = {
    "hybrid_attention_conv+window": ("hybrid_attention_conv", {"window": SLIDING_WINDOW}, False),
    # Full attention with an explicit (L, L) score matrix: the yardstick for relative attention's memory.
    "attention_full[math]": ("attention_full", {}, True),
}
LINEAR_MEMORY = ["attention_sliding", "dilated_conv", "hybrid_attention_conv+window", "hierarchical"]


def variants() -> dict[str, tuple[str, dict, bool]]:
    found = {p.stem: (p.stem, {}, False) for p in sorted(MIXER_DIR.glob("*.yaml"))}
    return found | EXTRA


def _memory_kb() -> dict[str, int]:
    with open("/proc/self/status") as status:
        return {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("VmRSS", "VmHWM"))}


def _reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def measure_point(name: str, length: int) -> dict:
    """One point, in this (fresh) process."""
    import torch
    from omegaconf import OmegaConf
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from lyria.models.lm import LyriaLM

    torch.set_num_threads(2)
    torch.manual_seed(0)
    yaml_name, overrides, math_only = variants()[name]
    mixer = OmegaConf.to_container(OmegaConf.load(MIXER_DIR / f"{yaml_name}.yaml"), resolve=True) | overrides
    model = LyriaLM([VOCAB], mixer, **MODEL)
    kernel = sdpa_kernel(SDPBackend.MATH) if math_only else contextlib.nullcontext()

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randint(1, VOCAB, (1, n)), torch.arange(n)[None] // TOKENS_PER_BAR

    def train_step(tokens, bar_ids) -> None:
        logits, _ = model(tokens, bar_ids=bar_ids)
        torch.nn.functional.cross_entropy(logits[0, :-1], tokens[0, 1:]).backward()

    tokens, bar_ids = batch(length)
    gc.collect()
    _reset_peak()
    baseline = _memory_kb()["VmRSS"]
    result: dict = {"mixer": name, "length": length}
    with kernel:
        train_step(tokens, bar_ids)  # the first step allocates the gradients: it holds the true peak
        result["peak_mb"] = (_memory_kb()["VmHWM"] - baseline) / 1024
        repeats = 3 if length <= 1024 else 2 if length <= 2048 else 1
        times = []
        for _ in range(repeats):
            model.zero_grad(set_to_none=True)
            started = time.perf_counter()
            train_step(tokens, bar_ids)
            times.append(time.perf_counter() - started)
        result["fwd_bwd_s"] = min(times)
        if not math_only:
            result["gen_tok_s"] = _generation_speed(model, batch, length)
            if length == CACHE_VS_RECOMPUTE:
                result |= _cache_vs_recompute(model, batch)
    return result


def _generation_speed(model, batch, length: int) -> float:
    """Tokens/s of single-token cached steps at context `length` (after a prefix of length - 64)."""
    import torch

    model.eval()
    tokens, bar_ids = batch(length)
    prefix = length - GENERATION_STEPS
    with torch.no_grad():
        logits, cache = model(tokens[:, :prefix], bar_ids=bar_ids[:, :prefix], cache=model.new_cache())
        started = time.perf_counter()
        for t in range(prefix, length):
            logits, cache = model(logits[:, -1:].argmax(-1), bar_ids=bar_ids[:, t : t + 1], cache=cache)
        return GENERATION_STEPS / (time.perf_counter() - started)


def _cache_vs_recompute(model, batch) -> dict:
    """Seconds for 1024 generated tokens with the cache, and re-running the whole prefix every step.

    Recomputing is timed at 17 prefix lengths (1, 64, ..., 1024) and summed over all 1024 steps by
    linear interpolation; timing all 1024 steps would take minutes per mixer.
    """
    import torch

    model.eval()
    steps = CACHE_VS_RECOMPUTE
    tokens, bar_ids = batch(steps + 1)
    with torch.no_grad():
        started = time.perf_counter()
        logits, cache = model(tokens[:, :1], bar_ids=bar_ids[:, :1], cache=model.new_cache())
        for t in range(1, steps + 1):
            logits, cache = model(logits[:, -1:].argmax(-1), bar_ids=bar_ids[:, t : t + 1], cache=cache)
        cached = time.perf_counter() - started
        sampled = [1] + list(range(64, steps + 1, 64))
        seconds = []
        for n in sampled:
            started = time.perf_counter()
            model(tokens[:, :n], bar_ids=bar_ids[:, :n])
            seconds.append(time.perf_counter() - started)
    recompute = float(np.interp(np.arange(1, steps + 1), sampled, seconds).sum())
    return {"cached_1024_s": cached, "recompute_1024_s": recompute, "cache_speedup": recompute / cached}


def run_all(names: list[str], lengths: list[int]) -> list[dict]:
    points = []
    for name in names:
        for length in lengths:
            started = time.perf_counter()
            command = [sys.executable, __file__, "--point", name, str(length)]
            proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=CHILD_ENV)
            if proc.returncode:
                point = {"mixer": name, "length": length, "error": proc.stderr.strip().splitlines()[-1]}
            else:
                point = json.loads(proc.stdout.strip().splitlines()[-1])
            points.append(point)
            print(f"{name:32s} L={length:5d} {time.perf_counter() - started:6.1f}s  {point}", flush=True)
    return points


def targets(points: list[dict]) -> list[dict]:
    """The issue's targets, each compared as a ratio measured in this run."""
    at = {(p["mixer"], p["length"]): p for p in points if "error" not in p}
    found = []

    def target(text: str, value: float, met: bool) -> None:
        found.append({"target": text, "value": value, "met": met})

    for name in LINEAR_MEMORY:
        if (name, 1024) in at and (name, 4096) in at:
            ratio = at[name, 4096]["peak_mb"] / at[name, 1024]["peak_mb"]
            target(f"{name}: mem(4096)/mem(1024) <= 4.5", ratio, ratio <= 4.5)
    for length in sorted({p["length"] for p in points}):
        if ("attention_relative", length) in at and ("attention_full[math]", length) in at:
            ratio = at["attention_relative", length]["peak_mb"] / at["attention_full[math]", length]["peak_mb"]
            target(f"attention_relative L={length}: mem / explicit full attention <= 1.5", ratio, ratio <= 1.5)
    for (name, length), p in sorted(at.items()):
        if "cache_speedup" in p:
            speedup = p["cache_speedup"]
            target(f"{name}: cached / recomputed generation of 1024 tokens >= 5x", speedup, speedup >= 5)
    return found


def markdown(points: list[dict], found: list[dict], load: dict) -> str:
    lengths = sorted({p["length"] for p in points})
    at = {(p["mixer"], p["length"]): p for p in points}
    names = list(dict.fromkeys(p["mixer"] for p in points))

    def cell(name: str, length: int, key: str, fmt: str) -> str:
        p = at.get((name, length), {})
        return "error" if "error" in p else (format(p[key], fmt) if key in p else "-")

    lines = [
        "# Mixer benchmark",
        "",
        f"batch 1, {MODEL}, vocab {VOCAB}, fp32, CPU, 2 threads (OMP_WAIT_POLICY={CHILD_ENV['OMP_WAIT_POLICY']}); "
        "one fresh process per point; `python benchmarks/mixers.py` reruns it.",
        f"Load average (1 min) before / after the run: {load['before']:.1f} / {load['after']:.1f}. Times from a busy "
        "machine are noisy; memory peaks and the ratios in the targets are not.",
        "",
    ]
    for title, key, fmt in (
        ("Forward+backward time (s)", "fwd_bwd_s", ".3f"),
        ("Peak memory above the built model (MB)", "peak_mb", ".0f"),
        ("Cached generation at context L (tokens/s)", "gen_tok_s", ".0f"),
    ):
        lines += [f"## {title}", "", "| mixer | " + " | ".join(f"L={n}" for n in lengths) + " |"]
        lines += ["|---|" + "---:|" * len(lengths)]
        lines += [f"| {name} | " + " | ".join(cell(name, n, key, fmt) for n in lengths) + " |" for name in names]
        lines.append("")
    full = [(name, p) for (name, n), p in at.items() if n == 1024 and "cache_speedup" in p]
    if full:
        lines += ["## 1024 generated tokens: cache vs recomputing the prefix", ""]
        lines += ["| mixer | cached (s) | recomputed (s, est.) | speedup |", "|---|---:|---:|---:|"]
        lines += [
            f"| {n} | {p['cached_1024_s']:.2f} | {p['recompute_1024_s']:.1f} | {p['cache_speedup']:.1f}x |" for n, p in full
        ]
        lines.append("")
    fused = [
        f"L={n}: {at['attention_relative', n]['peak_mb'] / at['attention_full', n]['peak_mb']:.2f}x"
        for n in lengths
        if "peak_mb" in at.get(("attention_relative", n), {}) and "peak_mb" in at.get(("attention_full", n), {})
    ]
    if fused:
        lines += ["Relative attention's peak memory against fused SDPA full attention: " + ", ".join(fused) + ".", ""]
    lines += ["## Targets", "", "| target | value | met |", "|---|---:|---|"]
    lines += [f"| {t['target']} | {t['value']:.2f} | {'yes' if t['met'] else 'NO'} |" for t in found]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--point", nargs=2, metavar=("MIXER", "LENGTH"), help="measure one point in this process")
    parser.add_argument("--lengths", nargs="+", type=int, default=LENGTHS)
    parser.add_argument("--mixers", nargs="+", default=None, help=f"default: all of {list(variants())}")
    args = parser.parse_args()
    if args.point:
        print(json.dumps(measure_point(args.point[0], int(args.point[1]))))
        return
    names = args.mixers or list(variants())
    unknown = sorted(set(names) - set(variants()))
    if unknown:
        parser.error(f"unknown mixers {unknown}; choose from {list(variants())}")
    started, load_before = time.perf_counter(), os.getloadavg()
    points = run_all(names, args.lengths)
    found = targets(points)
    RESULTS.mkdir(parents=True, exist_ok=True)
    # Timings are only comparable on an otherwise idle machine: the load says whether it was.
    load = {"before": load_before[0], "after": os.getloadavg()[0]}
    summary = {"model": MODEL, "vocab": VOCAB, "lengths": args.lengths, "points": points, "targets": found,
               "seconds": time.perf_counter() - started, "load_average_1min": load}
    (RESULTS / "mixers.json").write_text(json.dumps(summary, indent=2))
    (RESULTS / "mixers.md").write_text(markdown(points, found, load))
    for t in found:
        print(f"{'met' if t['met'] else 'NOT MET':8s} {t['target']}: {t['value']:.2f}")


if __name__ == "__main__":
    main()
