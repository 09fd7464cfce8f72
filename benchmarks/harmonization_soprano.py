"""How often a chorale_harmonization model's soprano equals the given melody, on test-split chorales.

Loads a checkpoint of `experiment=chorale_harmonization`, takes the soprano of the first `--melodies`
four-part chorales of the run's test split, writes `--n` settings of each (the processors of
conf/generate.yaml: special-token and grammar masks, top-p 0.95) and reports the share of settings whose
soprano equals the melody (every onset and pitch) and the mean share of the melody's notes kept.
Writes benchmarks/results/NAME.{json,md} (`--name`, default harmonization_soprano), with the checkpoint's
training facts: its step, best validation loss, model size, context and conditioning settings.

Usage: PYTHONPATH=. python benchmarks/harmonization_soprano.py RUN/checkpoints/best.ckpt [--melodies 6] [--n 2] [--split test] [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from symusic import Score

from lyria.checkpoint import load_model, read_checkpoint
from lyria.data.harmonization import melody_score, voiced
from lyria.generation.pieces import harmonize
from lyria.generation.processors import GrammarMask, SpecialTokenMask, TopP
from lyria.generation.sampler import Limits, Sampler
from lyria.training.module import token_loss
from lyria.training.train import build_datamodule, build_tokenizer_and_data

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def training_facts(checkpoint: Path, cfg, model) -> dict:
    """The checkpoint's step and best validation loss, and the model settings that the figures depend on."""
    state = read_checkpoint(checkpoint, mmap=True)
    best = None
    for key, value in state.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and value.get("best_model_score") is not None:
            best = round(float(value["best_model_score"]), 4)
    conditioning = cfg.model.conditioning
    return {
        "global_step": int(state.get("global_step", -1)),
        "best_val_loss": best,
        "parameters": sum(p.numel() for p in model.parameters()),
        "d_model": int(cfg.model.d_model),
        "n_layers": int(cfg.model.n_layers),
        "max_seq_len": int(cfg.model.max_seq_len),
        "batch_size": int(cfg.data.batch_size),
        "align_bars": bool(conditioning.get("align_bars", False)),
        "max_memory_length": int(conditioning.get("max_memory_length", 1024)),
        "time_budget_s": cfg.training.get("time_budget_s"),
        "precision": str(cfg.trainer.precision),
    }


@torch.inference_mode()
def melody_reliance(cfg, tokenizer, prepared, model, split: str) -> dict:
    """Mean token loss over every window of `split` with each piece's own melody as the memory and with another
    piece's (the batch's rows rolled by one): equal losses mean the model does not read the melody."""
    loader = build_datamodule(cfg, tokenizer, prepared).eval_dataloader(split, sharded=False)
    sums = {"own": 0.0, "other": 0.0}
    tokens = 0
    for batch in loader:
        if batch["tokens"].shape[0] < 2:
            continue
        count = None
        for name, roll in (("own", 0), ("other", 1)):
            cond = {"style": batch["style"], "memory": batch["memory"].roll(roll, 0), "memory_bars": batch["memory_bars"].roll(roll, 0)}
            logits, _ = model(batch["tokens"], bar_ids=batch["bar_ids"], cond=cond)
            loss, _, count = token_loss(logits, batch["targets"], batch.get("loss_mask"))
            sums[name] += float(loss) * int(count)
        tokens += int(count)
    return {"split": split, "tokens": tokens, **{f"loss_with_{k}_melody": round(v / max(tokens, 1), 4) for k, v in sums.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--melodies", type=int, default=6)
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=2048)
    parser.add_argument("--split", default="test", help="the split whose chorales give the melodies")
    parser.add_argument("--name", default="harmonization_soprano", help="the results' file name under benchmarks/results/")
    args = parser.parse_args()
    checkpoint = Path(args.checkpoint)
    cfg = OmegaConf.load(checkpoint.parent / "config.yaml")
    data_tokenizer, prepared = build_tokenizer_and_data(cfg)
    model, tokenizer, _ = load_model(checkpoint)
    training = training_facts(checkpoint, cfg, model)
    reliance = melody_reliance(cfg, data_tokenizer, prepared, model, "validation")
    sampler = Sampler(model, tokenizer, [SpecialTokenMask(), GrammarMask(), TopP(0.95)])
    rows, started = [], time.perf_counter()
    for path, piece_id in zip(prepared.score_paths(args.split), prepared.splits[args.split]["piece_id"]):
        piece = voiced(Score(str(path)))
        if piece is None:
            continue
        pieces = harmonize(sampler, melody_score(piece), n=args.n, seed=0, limits=Limits(max_new_tokens=args.max_new_tokens))
        for p in pieces:
            metrics = p.metrics or {"soprano_equal": False, "soprano_note_match": 0.0}
            rows.append({"piece_id": piece_id, "sample": p.index, "stop_reason": p.result.stop_reason, **metrics})
        print(piece_id, [r["soprano_note_match"] for r in rows[-args.n:]], flush=True)
        if len({r["piece_id"] for r in rows}) >= args.melodies:
            break
    if not rows:
        raise SystemExit(f"the {args.split} split holds no four-part piece; choose another with --split")
    result = {
        "split": args.split,
        "checkpoint": str(checkpoint.resolve()),
        "melodies": len({r["piece_id"] for r in rows}),
        "settings": len(rows),
        "soprano_equal_rate": round(float(np.mean([r["soprano_equal"] for r in rows])), 4),
        "soprano_note_match_mean": round(float(np.mean([r["soprano_note_match"] for r in rows])), 4),
        "seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
        "training": training,
        "melody_reliance": reliance,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    text = (
        f"# Chorale harmonization: soprano vs the given melody\n\n{result['settings']} settings of {result['melodies']} {args.split}-split "
        f"melodies: soprano equal in {result['soprano_equal_rate']:.1%}, mean share of melody notes kept "
        f"{result['soprano_note_match_mean']:.1%} ({result['seconds']} s).\n\n"
        f"Model: {training['parameters'] / 1e6:.2f}M parameters, d_model {training['d_model']}, {training['n_layers']} layers, "
        f"context {training['max_seq_len']}, align_bars {training['align_bars']}; trained {training['global_step']} steps, "
        f"best validation loss {training['best_val_loss']}.\n\n"
        f"Validation loss with each piece's own melody {reliance['loss_with_own_melody']}, with another piece's melody "
        f"{reliance['loss_with_other_melody']} nats/token ({reliance['tokens']} tokens): the gap is what reading the melody is worth.\n"
    )
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
