"""Sampling speed against Hugging Face GPT-2 `generate()`; writes benchmarks/results/generation.{json,md}.

Same dimensions (6 layers, d_model 384, 6 heads, d_ff 1536, the REMI vocabulary), random weights, greedy
decoding, 512 new tokens from BOS, EOS forbidden on both sides, batch 1 and 8, CPU. GPT-2 runs in fp32; ours
in fp32 (the like-for-like comparison) and with `quantize: int8` (lyria.generation.quantize: torch.ao's dynamic
int8 quantization of the blocks' linear layers), each precision with its own rows. Ours runs the
full sampler (special-token mask, the grammar mask on or off, top-k 1, bar trackers; its steps go through
lyria.models.decode.DecodeStep); bare cached loops over each model's forward (`bare_loop`) and over its
DecodeStep (`step_loop`) show the per-token model overhead and what flattening the step removes, and the
linear layers' matrix-vector products alone (`linears_only`) the ceiling of a model's speed with these
kernels. One thread by default; speeds and ratios use the process's CPU time (wall time is recorded too),
so that a machine shared with other jobs slows every method alike. Each round runs every method right after
a GPT-2 `generate()` run, and a method's speed against GPT-2 is the median over rounds of those pairs'
ratios: a pair sees the same speed of the machine, whose speed may drift by tens of percent within minutes;
tokens/s are the best round. The share of sampler time spent outside the model's forward (processors,
trackers, grammar masks, bookkeeping) is measured by timing the forward calls.
Usage: python benchmarks/generation.py [--rounds 3] [--threads 1] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle threads sleep: spinning ones stall a shared machine

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from lyria.generation.processors import GrammarMask, LogitsProcessor, SpecialTokenMask, TopK  # noqa: E402
from lyria.generation.quantize import quantize_model  # noqa: E402
from lyria.generation.sampler import Limits, Sampler  # noqa: E402
from lyria.models.decode import DecodeStep, linear_kernel  # noqa: E402
from lyria.models.lm import LyriaLM  # noqa: E402
from lyria.tokenizers import LyriaTokenizer  # noqa: E402
from lyria.training.precision import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NEW_TOKENS = 512
DIMS = {"d_model": 384, "n_layers": 6, "n_heads": 6, "d_ff": 1536}
MIXERS = ["attention_rope", "attention_full"]  # the default (RoPE), and learned positions as GPT-2 has
PRECISIONS = ["fp32", "int8"]
TARGET = 2.0


class NoEnd(LogitsProcessor):
    """Forbids EOS, so that every row writes exactly NEW_TOKENS tokens (GPT-2 gets min_new_tokens)."""

    def __call__(self, logits, ctx):
        logits[:, ctx.tokenizer.eos_id] = float("-inf")
        return logits


def build_tokenizer() -> LyriaTokenizer:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "tokenizer" / "remi.yaml"), resolve=True)
    cfg.pop("_target_")
    return LyriaTokenizer(**cfg)


def build_ours(tokenizer, mixer: str) -> LyriaLM:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "mixer" / f"{mixer}.yaml"), resolve=True)
    torch.manual_seed(0)
    return LyriaLM(tokenizer.vocab_sizes, cfg, dropout=0.0, max_seq_len=1024, **DIMS).eval()


def build_gpt2(vocab: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=vocab, n_positions=1024, n_embd=DIMS["d_model"], n_layer=DIMS["n_layers"], n_head=DIMS["n_heads"],
        n_inner=DIMS["d_ff"], bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


class TimedSampler(Sampler):
    """The sampler with the CPU time of its model forward calls counted."""

    forward_seconds = 0.0

    def _forward(self, *args, **kwargs):
        start = time.process_time()
        out = super()._forward(*args, **kwargs)
        self.forward_seconds += time.process_time() - start
        return out


def run_sampler(sampler: TimedSampler, tokenizer, batch: int) -> float | tuple[float, float]:
    """CPU seconds; the share of them outside the model's forward is left on the sampler."""
    sampler.forward_seconds = 0.0
    start = time.process_time()
    results = sampler.generate(tokenizer.step_ids(tokenizer.bos_id)[None], list(range(batch)), Limits(max_new_tokens=NEW_TOKENS))
    seconds = time.process_time() - start
    assert all(len(r.new_ids) == NEW_TOKENS for r in results)
    sampler.outside_share = 1.0 - sampler.forward_seconds / seconds


@torch.inference_mode()
def run_bare(model: LyriaLM, batch: int, bos: int, step=None) -> None:
    """A cached greedy loop over the model's forward (or `step`, a DecodeStep of it), nothing else."""
    step = step or model
    tokens = torch.full((batch, 1), bos, dtype=torch.long)
    bars = torch.zeros(batch, 1, dtype=torch.long)
    logits, cache = step(tokens, bar_ids=bars, cache=model.new_cache())
    for _ in range(NEW_TOKENS):
        tokens = logits[:, -1].argmax(-1, keepdim=True)
        logits, cache = step(tokens, bar_ids=bars, cache=cache)


@torch.inference_mode()
def run_linears(model: LyriaLM, batch: int) -> None:
    """The decoding steps' matrix-vector products alone: every linear layer of the blocks and the output head, with
    inputs of their widths, NEW_TOKENS times. What the model's steps would cost if nothing else did: the ceiling
    of its speed with these kernels."""
    layers = [m for b in model.blocks for m in (b.mixer.qkv, b.mixer.out, b.ffn.up, b.ffn.down)] + list(model.heads)
    calls = [(linear_kernel(m), torch.randn(batch, 1, m.in_features)) for m in layers]
    for _ in range(NEW_TOKENS):
        for kernel, x in calls:
            kernel(x)


@torch.inference_mode()
def run_gpt2_generate(gpt2, batch: int, bos: int) -> None:
    ids = torch.full((batch, 1), bos, dtype=torch.long)
    out = gpt2.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    assert out.shape == (batch, NEW_TOKENS + 1)


@torch.inference_mode()
def run_gpt2_bare(gpt2, batch: int, bos: int) -> None:
    from transformers import DynamicCache

    tokens = torch.full((batch, 1), bos, dtype=torch.long)
    out = gpt2(tokens, past_key_values=DynamicCache(), use_cache=True)
    for _ in range(NEW_TOKENS):
        tokens = out.logits[:, -1].argmax(-1, keepdim=True)
        out = gpt2(tokens, past_key_values=out.past_key_values, use_cache=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    tokenizer = build_tokenizer()
    vocab = tokenizer.vocab_sizes[0]
    gpt2 = build_gpt2(vocab)
    bos = tokenizer.bos_id
    methods = {"gpt2_generate": lambda b: run_gpt2_generate(gpt2, b, bos), "gpt2_bare_loop": lambda b: run_gpt2_bare(gpt2, b, bos)}
    samplers: dict[str, TimedSampler] = {}
    for precision in PRECISIONS:
        for mixer in MIXERS:
            model = build_ours(tokenizer, mixer)
            model = quantize_model(model, "int8") if precision == "int8" else model
            prefix = f"lyria_{mixer}" + ("" if precision == "fp32" else f"_{precision}")
            for mask in ("on", "off"):
                processors = [SpecialTokenMask(), NoEnd()] + ([GrammarMask()] if mask == "on" else []) + [TopK(1)]
                name = f"{prefix}_mask_{mask}"
                samplers[name] = sampler = TimedSampler(model, tokenizer, processors)
                methods[name] = lambda b, s=sampler: run_sampler(s, tokenizer, b)
            methods[f"{prefix}_bare_loop"] = lambda b, m=model: run_bare(m, b, bos)
            methods[f"{prefix}_step_loop"] = lambda b, m=model, d=DecodeStep(model): run_bare(m, b, bos, d)
            methods[f"{prefix}_linears_only"] = lambda b, m=model: run_linears(m, b)
    best: dict[tuple[int, str], tuple[float, float, float | None]] = {}  # CPU s, wall s, share outside the model
    ratios: dict[tuple[int, str], list[float]] = {}  # per round: GPT-2 generate()'s CPU s / this method's, run back to back

    def timed(batch: int, name: str) -> float:
        wall, cpu = time.perf_counter(), time.process_time()
        methods[name](batch)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        outside = samplers[name].outside_share if name in samplers else None
        if (batch, name) not in best or cpu < best[(batch, name)][0]:
            best[(batch, name)] = (cpu, wall, outside)
        return cpu

    for batch in args.batches:
        for method in methods.values():  # warm-up: first calls allocate and fill the grammar's memo
            method(batch)
        for round_ in range(args.rounds):
            for name in methods:
                if name == "gpt2_generate":
                    continue
                # GPT-2 generate() runs right before each method: the pair sees the same speed of the machine
                reference = timed(batch, "gpt2_generate")
                ratios.setdefault((batch, name), []).append(reference / timed(batch, name))
                print(f"batch {batch} round {round_} {name}: {ratios[(batch, name)][-1]:.2f}x GPT-2 generate()", flush=True)
    rows = []
    for (batch, name), (cpu, wall, outside) in best.items():
        paired = ratios.get((batch, name), [1.0])
        rows.append(
            {
                "batch": batch,
                "method": name,
                "precision": "int8" if "_int8_" in name else "fp32",
                "tokens_per_cpu_s": round(batch * NEW_TOKENS / cpu, 1),
                "tokens_per_wall_s": round(batch * NEW_TOKENS / wall, 1),
                "speed_vs_gpt2_generate": round(float(np.median(paired)), 2),
                "paired_ratios": [round(r, 3) for r in paired],
                "share_outside_model": None if outside is None else round(outside, 3),
            }
        )
    sampler_rows = {p: [r for r in rows if r["method"].startswith("lyria_") and "_mask_" in r["method"] and r["precision"] == p] for p in PRECISIONS}
    result = {
        "cpu": cpu_name(),
        "bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "threads": args.threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "new_tokens": NEW_TOKENS,
        "dims": DIMS | {"vocab": vocab},
        "rounds": args.rounds,
        "note": "speed vs GPT-2: median over rounds of the CPU-time ratio to a GPT-2 generate() run just before (paired, so that a drift "
        "of the machine's speed hits both); tokens/s: best of the rounds; GPT-2 fp32, ours fp32 and int8 (quantize: int8); random weights; greedy",
        "load_average": os.getloadavg()[0],
        "target": f"every sampler row of a precision >= {TARGET}x gpt2_generate (fp32 is the like-for-like comparison)",
        "target_met": {p: all(r["speed_vs_gpt2_generate"] >= TARGET for r in sampler_rows[p]) for p in PRECISIONS},
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "generation.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Generation speed vs GPT-2 generate() ({result['cpu']}, {args.threads} threads, {NEW_TOKENS} new tokens)",
        "",
        f"x GPT-2 generate(): median over {args.rounds} rounds of the CPU-time ratio to a GPT-2 run just before (pairs); tokens/s: best round.",
        "",
        f"GPT-2 in fp32; ours in fp32 (like for like) and int8 (`quantize: int8`). Target: every sampler row >= {TARGET}x GPT-2 "
        "generate(); met: " + ", ".join(f"{p} {'yes' if met else 'no'}" for p, met in result["target_met"].items()) + ".",
        "",
        "| batch | method | precision | tokens per CPU s | tokens per wall s | x GPT-2 generate() | pairs (min-max) | share outside the model |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = "" if r["share_outside_model"] is None else f"{100 * r['share_outside_model']:.0f}%"
        pairs = f"{min(r['paired_ratios']):.2f}-{max(r['paired_ratios']):.2f}" if r["method"] != "gpt2_generate" else ""
        lines.append(
            f"| {r['batch']} | {r['method']} | {r['precision']} | {r['tokens_per_cpu_s']} | {r['tokens_per_wall_s']} | "
            f"{r['speed_vs_gpt2_generate']} | {pairs} | {share} |"
        )
    (RESULTS / "generation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"target met: {result['target_met']}")


if __name__ == "__main__":
    main()
