"""What `quantize: int8` costs in fidelity on a trained checkpoint; writes benchmarks/results/quantize_quality.{json,md}.

On the checkpoint's own validation windows (its run's config.yaml frames the data exactly as training did):
- the NLL of the next token (nats per token, the training's val/loss) of the fp32 model and of its int8 copy
  (lyria.generation.quantize: torch.ao's dynamic quantization), on the same windows;
- teacher-forced top-1 agreement: the share of positions where both models rank the same token first;
- greedy agreement: prompts of each validation window's first tokens, continued greedily through the cache by
  each model; the share of generated tokens that are equal, and the mean number of tokens before the first
  difference (one flip changes everything after it, so this is the harsher measure).
Usage: python benchmarks/quantize_quality.py CHECKPOINT [--prompts 16] [--prompt-tokens 16] [--new-tokens 128] [--describe TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from lyria.checkpoint import load_model  # noqa: E402
from lyria.data.datamodule import IGNORE_INDEX  # noqa: E402
from lyria.generation.quantize import quantize_model  # noqa: E402
from lyria.training.precision import cpu_name  # noqa: E402
from lyria.training.train import build_datamodule, build_tokenizer_and_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@torch.inference_mode()
def teacher_forced(models: dict, loader) -> dict:
    """Summed NLL per model, the number of target tokens, and the positions where the models' top-1 tokens agree."""
    nll = dict.fromkeys(models, 0.0)
    tokens = agree = 0
    for batch in tqdm(loader, desc="validation windows", unit="batch"):
        cond = {"style": batch["style"]}
        valid = (batch["targets"] != IGNORE_INDEX) & batch["loss_mask"]
        top = {}
        for name, model in models.items():
            logits, _ = model(batch["tokens"], bar_ids=batch["bar_ids"], cond=cond)
            losses = F.cross_entropy(logits.float().transpose(1, 2), batch["targets"], ignore_index=IGNORE_INDEX, reduction="none")
            nll[name] += float((losses * valid).sum())
            top[name] = logits.argmax(-1)
        fp32, int8 = top.values()
        tokens += int(valid.sum())
        agree += int(((fp32 == int8) & valid).sum())
    return {"nll": nll, "tokens": tokens, "top1_agree": agree}


@torch.inference_mode()
def greedy(model, tokens: torch.Tensor, bars: torch.Tensor, style: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """(B, new_tokens) greedy continuations through the cache (the bar id stays the prompt's last)."""
    logits, cache = model(tokens, bar_ids=bars, cond={"style": style}, cache=model.new_cache())
    out = []
    last_bar = bars[:, -1:]
    for _ in range(new_tokens):
        step = logits[:, -1].argmax(-1, keepdim=True)
        out.append(step)
        logits, cache = model(step, bar_ids=last_bar, cond={"style": style}, cache=cache)
    return torch.cat(out, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--describe", default="", help="how the checkpoint was trained, for the results (e.g. '100 steps of lm_small')")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run_config = args.checkpoint.parent / "config.yaml"
    if not run_config.is_file():
        raise SystemExit(f"{run_config} is missing: the checkpoint's run config frames the validation data")
    cfg = OmegaConf.load(run_config)
    model, tokenizer, hparams = load_model(args.checkpoint)
    if model.is_compound:
        raise SystemExit("compound tokenizers (several fields per step) are not measured by this script")
    _, prepared = build_tokenizer_and_data(cfg)  # the run's cached splits
    data = build_datamodule(cfg, tokenizer, prepared)
    started = time.perf_counter()
    quantized = quantize_model(model, "int8")
    models = {"fp32": model, "int8": quantized}
    forced = teacher_forced(models, data.val_dataloader())

    windows = next(iter(torch.utils.data.DataLoader(data.val_dataloader().dataset, batch_size=args.prompts, collate_fn=data.val_dataloader().collate_fn)))
    k = args.prompt_tokens
    prompt = (windows["tokens"][:, :k], windows["bar_ids"][:, :k], windows["style"])
    runs = {name: greedy(m, *prompt, args.new_tokens) for name, m in models.items()}
    same = runs["fp32"] == runs["int8"]
    first_difference = torch.where(same.all(1), torch.tensor(args.new_tokens), (~same).float().argmax(1))
    nll = {name: forced["nll"][name] / forced["tokens"] for name in models}
    result = {
        "checkpoint": str(args.checkpoint),
        "trained": args.describe,
        "model": {k: v for k, v in hparams["model"].items() if k in ("d_model", "n_layers", "n_heads", "d_ff", "max_seq_len")}
        | {"mixer": hparams["model"]["mixer"].get("_target_"), "conditioning": (hparams["model"].get("conditioning") or {}).get("_target_")},
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "validation_tokens": forced["tokens"],
        "nll_nats_per_token": {name: round(v, 5) for name, v in nll.items()},
        "nll_increase": round(nll["int8"] - nll["fp32"], 5),
        "nll_increase_relative": round((nll["int8"] - nll["fp32"]) / nll["fp32"], 5),
        "teacher_forced_top1_agreement": round(forced["top1_agree"] / forced["tokens"], 5),
        "greedy": {
            "prompts": int(same.shape[0]),
            "prompt_tokens": k,
            "new_tokens": args.new_tokens,
            "token_agreement": round(float(same.float().mean()), 4),
            "mean_tokens_before_first_difference": round(float(first_difference.float().mean()), 1),
            "identical_continuations": int(same.all(1).sum()),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quantize_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    g = result["greedy"]
    lines = [
        f"# quantize: int8 against fp32 on a trained checkpoint ({result['cpu']})",
        "",
        f"Checkpoint: {args.describe or args.checkpoint}. Model: {result['model']}; {result['validation_tokens']} validation target tokens.",
        "",
        "| measure | fp32 | int8 |",
        "|---|---|---|",
        f"| validation NLL (nats/token) | {nll['fp32']:.4f} | {nll['int8']:.4f} ({100 * result['nll_increase_relative']:+.2f}%) |",
        f"| teacher-forced top-1 equal to fp32's | 100% | {100 * result['teacher_forced_top1_agreement']:.2f}% |",
        f"| greedy tokens equal to fp32's ({g['prompts']} prompts x {g['new_tokens']} tokens) | 100% | {100 * g['token_agreement']:.1f}% |",
        f"| greedy tokens before the first difference (mean) | {g['new_tokens']} | {g['mean_tokens_before_first_difference']} |",
        f"| identical greedy continuations | {g['prompts']} | {g['identical_continuations']} |",
    ]
    (RESULTS / "quantize_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
