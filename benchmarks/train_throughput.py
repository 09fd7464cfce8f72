"""Training throughput: Lightning loop vs a plain PyTorch loop, MFU of lm_base beside Hugging Face GPT-2,
2-process DDP vs 1 process. Writes benchmarks/results/train_throughput.{json,md}.

All figures are ratios measured in this one run on this CPU:
- Lightning vs plain loop: lm_small (the quickstart shape), the same model, batches, AdamW, clipping
  and schedule, fp32; tokens/s of each from its fastest step, over alternating rounds.
- MFU: training FLOP/s of lm_base at sequence 1024, batch 8, as a share of the peak matmul FLOP/s measured
  here (2048^3, all threads), in fp32 and, where the CPU computes bf16 natively, in bf16-mixed against the
  bf16 peak. FLOPs per token follow the PaLM convention: 6 x (matmul weights) + 12 x layers x d_model x
  sequence. Hugging Face GPT-2 of the same dimensions and dropouts is measured the same way beside it, and
  two variants of lm_base show what its defaults buy: attention-probability dropout on (GPT-2's recipe; it
  rules out SDPA's fused kernel on CPU) and torch's own dropout masks instead of lyria.models.dropout's.
- DDP: Lightning on CPU (gloo) with 2 processes of 1 thread each vs 1 process of 2 threads, same global batch.
Every model runs with `training.cpu_allocator` (default keep, as lyria-train; --cpu-allocator default leaves malloc).
Usage: PYTHONPATH=. python benchmarks/train_throughput.py [--mfu-steps 2] [--mfu-rounds 2] [--loop-steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lyria.cli import CONF_DIR
from lyria.config import build
from lyria.models.dropout import Dropout
from lyria.models.lm import build_model
from lyria.training.allocator import CHOICES as CPU_ALLOCATOR_CHOICES, tune_cpu_allocator
from lyria.training.module import LyriaLightningModule, token_loss
from lyria.training.optim import build_optimizer, warmup_cosine
from lyria.training.precision import cpu_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MFU_SHAPE = {"model": "lm_base", "seq_len": 1024, "batch": 8}
LOOP_SHAPE = {"model": "lm_small", "seq_len": 256, "batch": 16}
TARGETS = {"lightning_vs_plain": 0.95, "mfu_fp32": 0.60, "mfu_bf16": 0.40}


def bf16_native() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def peak_matmul(dtype: torch.dtype, n: int = 2048, repeats: int = 6) -> float:
    """Best FLOP/s of an n^3 matmul over a few tries (the machine may be shared: the best is the peak)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def model_config(name: str, seq_len: int):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={name}", f"model.max_seq_len={seq_len}"])
    return cfg


def lyria_model(cfg):
    tokenizer = build(cfg.tokenizer, "tokenizer")
    return build_model(cfg.model, tokenizer), tokenizer


def gpt2_like(model_cfg, vocab_size: int):
    """GPT-2 of lm_base's dimensions and dropouts (attention probabilities: `model.attention_dropout`)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size, n_positions=model_cfg.max_seq_len, n_embd=model_cfg.d_model, n_layer=model_cfg.n_layers,
        n_head=model_cfg.n_heads, n_inner=model_cfg.d_ff, resid_pdrop=model_cfg.dropout, embd_pdrop=model_cfg.dropout,
        attn_pdrop=attention_dropout(model_cfg), bos_token_id=None, eos_token_id=None, attn_implementation="sdpa",
    )
    return GPT2LMHeadModel(config)


def attention_dropout(model_cfg) -> float:
    return model_cfg.dropout if model_cfg.get("attention_dropout") is None else model_cfg.attention_dropout


def flops_per_token(model_cfg, vocab_size: int, seq_len: int) -> float:
    d, layers = model_cfg.d_model, model_cfg.n_layers
    matmul_weights = layers * (4 * d * d + 2 * d * model_cfg.d_ff) + d * vocab_size
    return 6 * matmul_weights + 12 * layers * d * seq_len


def random_batches(tokenizer, count: int, batch: int, seq_len: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(tokenizer.num_special, tokenizer.vocab_size, (batch, seq_len + 1), generator=generator)
        out.append({"tokens": ids[:, :-1], "targets": ids[:, 1:].clone(), "bar_ids": torch.zeros(batch, seq_len, dtype=torch.long),
                    "style": torch.zeros(batch, dtype=torch.long)})
    return out


class PlainSteps:
    """Forward, backward, clipping and an AdamW step of one model, timed; the optimizer lives across calls, so
    a model can be measured in several rounds interleaved with others (the first step is a warm-up)."""

    def __init__(self, loss_of, model, batches, bf16: bool) -> None:
        self.loss_of, self.model, self.batches, self.bf16 = loss_of, model, batches, bf16
        self.optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.1)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: warmup_cosine(step, 10, 1000, 0.1))
        self.done = 0
        model.train()
        self.step()  # warm-up: allocations, the optimizer's state

    def step(self) -> float:
        batch = self.batches[self.done % len(self.batches)]
        self.done += 1
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.loss_of(self.model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        return time.perf_counter() - start


def lyria_loss(model, batch):
    logits, _ = model(batch["tokens"], bar_ids=batch["bar_ids"], cond={"style": batch["style"]})
    return token_loss(logits, batch["targets"])[0]


def gpt2_loss(model, batch):
    return model(input_ids=batch["tokens"], labels=batch["tokens"]).loss


# The models measured for MFU: lm_base as configured, GPT-2 with the same dropouts, and two lm_base variants that
# show what the defaults buy: attention-probability dropout on (GPT-2's recipe), and torch's own dropout masks.
MFU_MODELS = ("lyria", "hf_gpt2", "lyria_attention_dropout", "lyria_torch_dropout")


def mfu_model(name: str, cfg):
    torch.manual_seed(0)
    model_cfg = cfg.model
    if name == "lyria_attention_dropout":
        model_cfg = OmegaConf.merge(cfg.model, {"attention_dropout": cfg.model.dropout})
    model, tokenizer = lyria_model(OmegaConf.merge(cfg, {"model": model_cfg}))
    if name == "hf_gpt2":
        model = gpt2_like(cfg.model, tokenizer.vocab_size)
    if name == "lyria_torch_dropout":
        for module in model.modules():
            if isinstance(module, Dropout):
                module.forward = types.MethodType(torch.nn.Dropout.forward, module)
    return model, tokenizer, model_cfg


def measure_mfu(steps: int, rounds: int = 2) -> dict:
    """Seconds of the fastest step of each model and precision over `rounds` rounds of `steps` steps, the models
    taking turns within a round (a drift of the machine's speed then hits them alike); MFU against the best
    matmul peak measured in the whole run (before and after every round), so that every row shares one
    denominator."""
    cfg = model_config(MFU_SHAPE["model"], MFU_SHAPE["seq_len"])
    tokens = MFU_SHAPE["seq_len"] * MFU_SHAPE["batch"]
    rows = {}
    precisions = [("fp32", torch.float32)] + ([("bf16-mixed", torch.bfloat16)] if bf16_native() else [])
    peaks = {precision: peak_matmul(dtype) for precision, dtype in precisions}
    for precision, dtype in precisions:
        runners, configs = {}, {}
        for name in MFU_MODELS:
            model, tokenizer, configs[name] = mfu_model(name, cfg)
            batches = random_batches(tokenizer, steps, MFU_SHAPE["batch"], MFU_SHAPE["seq_len"])
            runners[name] = PlainSteps(gpt2_loss if name == "hf_gpt2" else lyria_loss, model, batches, bf16=dtype == torch.bfloat16)
        fastest = {name: float("inf") for name in MFU_MODELS}
        for round_ in range(rounds):
            for name, runner in runners.items():
                fastest[name] = min([fastest[name]] + [runner.step() for _ in range(steps)])
                print(f"round {round_} {name} {precision}: fastest step so far {fastest[name]:.2f} s", flush=True)
            peaks[precision] = max(peaks[precision], peak_matmul(dtype))
        flops = flops_per_token(cfg.model, tokenizer.vocab_size, MFU_SHAPE["seq_len"]) * tokens
        for name, seconds in fastest.items():
            rows[f"{name}/{precision}"] = {
                "seconds_per_step": seconds, "tokens_per_s": tokens / seconds, "achieved_gflops": flops / seconds / 1e9,
                "dropout": configs[name].dropout, "attention_dropout": attention_dropout(configs[name]),
            }
        del runners
    for key, row in rows.items():
        peak = peaks[key.split("/")[1]]
        row.update(peak_matmul_gflops=peak / 1e9, mfu=row["achieved_gflops"] * 1e9 / peak)
    summary = {}
    for precision, _ in precisions:
        lyria = rows[f"lyria/{precision}"]
        summary[precision] = {
            "lyria_mfu": lyria["mfu"], "hf_gpt2_mfu": rows[f"hf_gpt2/{precision}"]["mfu"],
            "lyria_over_hf": rows[f"hf_gpt2/{precision}"]["seconds_per_step"] / lyria["seconds_per_step"],
            "attention_dropout_mfu": rows[f"lyria_attention_dropout/{precision}"]["mfu"],
            "torch_dropout_mfu": rows[f"lyria_torch_dropout/{precision}"]["mfu"],
        }
    return {"shape": MFU_SHAPE | {"d_model": cfg.model.d_model, "n_layers": cfg.model.n_layers, "dropout": cfg.model.dropout,
                                  "attention_dropout": attention_dropout(cfg.model)},
            "flops_convention": "PaLM: 6 x matmul weights + 12 x layers x d_model x seq per token", "runs": rows, "summary": summary}


class _StepTimer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._start = warmup, [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._start)


def lightning_module(cfg, tokenizer) -> LyriaLightningModule:
    training = OmegaConf.to_container(cfg.training, resolve=True) | {"warmup_steps": 10, "total_steps": 1000}
    training["optimizer"]["lr"] = 1e-4
    return LyriaLightningModule(OmegaConf.to_container(cfg.model, resolve=True), training, tokenizer.vocab_sizes,
                                tokenizer.num_style_slots, tokenizer.pad_id)


def lightning_steps(cfg, tokenizer, batches, warmup: int = 2, **trainer_options) -> float:
    """Seconds of the fastest step (after warm-up) of Trainer.fit over the same batches.

    The fastest step, here as for the plain loop: on a shared machine the mean mostly measures the load.
    """
    torch.manual_seed(0)
    module = lightning_module(cfg, tokenizer)
    timer = _StepTimer(warmup)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=len(batches), precision="32", gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        use_distributed_sampler=False, callbacks=[timer], **trainer_options,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return min(timer.times)


def measure_loop(steps: int, rounds: int = 3) -> dict:
    cfg = model_config(LOOP_SHAPE["model"], LOOP_SHAPE["seq_len"])
    _, tokenizer = lyria_model(cfg)
    batches = random_batches(tokenizer, steps, LOOP_SHAPE["batch"], LOOP_SHAPE["seq_len"])
    plain, lightning = [], []
    for _ in range(rounds):  # alternate, so both see the same share of the machine's load
        torch.manual_seed(0)
        module = lightning_module(cfg, tokenizer)
        times = []
        model = module.model
        optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, 10, 1000, 0.1))
        for i, batch in enumerate(batches):
            start = time.perf_counter()
            loss = lyria_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            if i >= 2:
                times.append(time.perf_counter() - start)
        plain.append(min(times))
        lightning.append(lightning_steps(cfg, tokenizer, batches))
    tokens = LOOP_SHAPE["seq_len"] * LOOP_SHAPE["batch"]
    result = {"plain_tokens_per_s": tokens / min(plain), "lightning_tokens_per_s": tokens / min(lightning)}
    result["lightning_over_plain"] = result["lightning_tokens_per_s"] / result["plain_tokens_per_s"]
    print(f"Lightning vs plain loop: {result['lightning_over_plain']:.3f}", flush=True)
    return {"shape": LOOP_SHAPE, "steps": steps, **result}


def ddp_worker(devices: int, steps: int, out: str) -> None:
    """One DDP measurement (Lightning re-runs this command for the other ranks)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // devices))
    cfg = model_config(LOOP_SHAPE["model"], LOOP_SHAPE["seq_len"])
    _, tokenizer = lyria_model(cfg)
    rank = int(os.environ.get("LOCAL_RANK", 0))
    per_rank = LOOP_SHAPE["batch"] // devices
    batches = [{k: v[rank * per_rank:(rank + 1) * per_rank] for k, v in b.items()}
               for b in random_batches(tokenizer, steps, LOOP_SHAPE["batch"], LOOP_SHAPE["seq_len"])]
    options = {"devices": devices, "strategy": "ddp" if devices > 1 else "auto"}
    seconds = lightning_steps(cfg, tokenizer, batches, **options)
    if rank == 0:
        Path(out).write_text(json.dumps({"seconds_per_step": seconds}))


def measure_ddp(steps: int) -> dict:
    result = {}
    for devices in (1, 2):
        out = RESULTS / f"ddp_{devices}.tmp"
        subprocess.run([sys.executable, __file__, "--ddp-worker", str(devices), "--loop-steps", str(steps), "--out", str(out)],
                       check=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
        seconds = json.loads(out.read_text())["seconds_per_step"]
        out.unlink()
        result[f"{devices}_process_tokens_per_s"] = LOOP_SHAPE["seq_len"] * LOOP_SHAPE["batch"] / seconds
    result["ddp2_over_single"] = result["2_process_tokens_per_s"] / result["1_process_tokens_per_s"]
    print(f"DDP 2 processes vs 1: {result['ddp2_over_single']:.3f}", flush=True)
    return {"shape": LOOP_SHAPE, "global_batch": LOOP_SHAPE["batch"], **result}


def markdown(report: dict) -> str:
    lines = [f"# Training throughput ({report['cpu']}, {report['threads']} threads; shared machine)", "",
             "| measure | value | target |", "|---|---|---|",
             f"| Lightning loop / plain PyTorch loop (tokens/s) | {report['loop']['lightning_over_plain']:.3f} | >= {TARGETS['lightning_vs_plain']} |"]
    for precision, row in report["mfu"]["summary"].items():
        target = TARGETS["mfu_fp32" if precision == "fp32" else "mfu_bf16"]
        lines.append(f"| MFU lm_base {precision} (seq 1024, batch 8) | {row['lyria_mfu']:.1%} (HF GPT-2: {row['hf_gpt2_mfu']:.1%}, "
                     f"lyria/HF speed {row['lyria_over_hf']:.2f}) | >= {target:.0%} |")
        lines.append(f"| ... with attention dropout {report['mfu']['shape']['dropout']} (GPT-2's recipe) | {row['attention_dropout_mfu']:.1%} | |")
        lines.append(f"| ... with torch's dropout masks | {row['torch_dropout_mfu']:.1%} | |")
    lines.append(f"| DDP 2 processes / 1 process (tokens/s) | {report['ddp']['ddp2_over_single']:.3f} | reported |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mfu-steps", type=int, default=2, help="lm_base steps per model, precision and round (after one warm-up step)")
    parser.add_argument("--mfu-rounds", type=int, default=2, help="rounds in which the MFU models take turns")
    parser.add_argument("--loop-steps", type=int, default=20, help="lm_small steps per loop measurement")
    parser.add_argument("--ddp-worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cpu-allocator", choices=CPU_ALLOCATOR_CHOICES, default="keep",
                        help="training.cpu_allocator for every model measured here (lyria-train's default: keep)")
    args = parser.parse_args()
    allocator_tuned = tune_cpu_allocator(args.cpu_allocator)  # as lyria-train does, before anything is allocated
    if args.ddp_worker is not None:
        ddp_worker(args.ddp_worker, args.loop_steps, args.out)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "bf16_native": bf16_native(), "torch": torch.__version__,
              "note": "ratios measured in one run; absolute figures depend on the machine's load",
              "cpu_allocator": args.cpu_allocator, "cpu_allocator_tuned": allocator_tuned,
              "loop": measure_loop(args.loop_steps), "ddp": measure_ddp(args.loop_steps), "mfu": measure_mfu(args.mfu_steps, args.mfu_rounds)}
    report["targets"] = TARGETS
    report["met"] = {
        "lightning_vs_plain": report["loop"]["lightning_over_plain"] >= TARGETS["lightning_vs_plain"],
        "mfu_fp32": report["mfu"]["summary"]["fp32"]["lyria_mfu"] >= TARGETS["mfu_fp32"],
    }
    if "bf16-mixed" in report["mfu"]["summary"]:
        report["met"]["mfu_bf16"] = report["mfu"]["summary"]["bf16-mixed"]["lyria_mfu"] >= TARGETS["mfu_bf16"]
    (RESULTS / "train_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "train_throughput.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
