"""Which conditioning scheme reads the style soonest: a short run of each scheme on the six default styles,
then the model's own style accuracy on the validation pieces. Writes benchmarks/results/conditioning_schemes.{json,md}.

Style accuracy by likelihood: each validation piece's first window is scored under every style (the style
token in the sequence for `style_token`, the style slot for the others) and classified as the style whose
condition gives it the lowest loss (targets after the head only). Chance is one in the number of styles. It
measures how much the trained model's predictions depend on the style, the quantity generation relies on.

Usage: PYTHONPATH=. python benchmarks/conditioning_schemes.py [--steps 150] [--schemes style_token adaln ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from lyria.cli import CONF_DIR
from lyria.data.datamodule import collate
from lyria.training.module import token_loss
from lyria.training.precision import cpu_name
from lyria.training.train import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@torch.no_grad()
def style_accuracy(module, datamodule, tokenizer) -> dict:
    """Per-style and overall accuracy of classifying validation pieces by their conditional likelihood."""
    model = module.model.eval()
    split = datamodule.prepared.splits["validation"]
    slots = sorted(tokenizer.style_slots.values())
    names = {slot: name for name, slot in tokenizer.style_slots.items()}
    head = datamodule.layout.head_length
    hits: dict[str, list[bool]] = {}
    for row in split:
        examples = []
        for slot in slots:
            ids, bars = datamodule.layout.frame(np.asarray(row["ids"]), np.asarray(row["bar_ids"]), slot)
            ids, bars = ids[: datamodule.max_len], bars[: datamodule.max_len]
            mask = np.ones(len(ids), dtype=bool)
            mask[:head] = False  # the head's own targets (the style token itself) do not count
            examples.append({"tokens": ids, "bar_ids": bars - bars[0], "style_id": slot, "loss_mask": mask})
        batch = collate(examples, tokenizer.pad_id)
        logits, _ = model(batch["tokens"], bar_ids=batch["bar_ids"], cond={"style": batch["style"]})
        losses = [token_loss(logits[i : i + 1], batch["targets"][i : i + 1], batch["loss_mask"][i : i + 1])[0].item() for i in range(len(slots))]
        guess = slots[int(np.argmin(losses))]
        hits.setdefault(row["style"], []).append(names[guess] == row["style"])
    per_style = {style: round(float(np.mean(v)), 3) for style, v in sorted(hits.items())}
    overall = float(np.mean([h for v in hits.values() for h in v]))
    return {"accuracy": round(overall, 3), "chance": round(1 / len(slots), 3), "per_style": per_style,
            "pieces": sum(len(v) for v in hits.values())}


def run(scheme: str, steps: int, cache_dir: str, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out, initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "experiment=quickstart", f"model/conditioning={scheme}", f"trainer.max_steps={steps}",
                f"trainer.val_check_interval={steps}", "trainer.max_time=null", "trainer.precision=32", "logger=none",
                "callbacks.sample_monitor=null", "callbacks.lr_monitor=null", f"paths.output_dir={out}", f"paths.cache_dir={cache_dir}", *overrides,
            ],
        )
        started = time.perf_counter()
        metrics, objects = train(cfg)
        seconds = time.perf_counter() - started
        scores = style_accuracy(objects["module"], objects["datamodule"], objects["tokenizer"])
    return {"scheme": scheme, "steps": steps, "train_seconds": round(seconds, 1), "final_val_loss": round(metrics.get("final_val_loss", float("nan")), 4), **scores}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--schemes", nargs="+", default=["style_token", "adaln", "style_embedding", "cross_attention"])
    parser.add_argument("--cache-dir", default=str(ROOT / ".cache" / "lyria"))
    parser.add_argument("overrides", nargs="*", help="more config overrides, e.g. model.d_model=128")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = [run(scheme, args.steps, args.cache_dir, args.overrides) for scheme in args.schemes]
    cpu = f"{cpu_name()}, {torch.get_num_threads()} threads"
    result = {"cpu": cpu, "torch_threads": torch.get_num_threads(), "overrides": args.overrides, "runs": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "conditioning_schemes.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Conditioning schemes after {args.steps} steps ({cpu}; overrides {args.overrides})", "",
             "| scheme | val loss | style accuracy by likelihood | chance | train s | per style |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scheme']} | {r['final_val_loss']} | {r['accuracy']} | {r['chance']} | {r['train_seconds']} | {r['per_style']} |")
    (RESULTS / "conditioning_schemes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
