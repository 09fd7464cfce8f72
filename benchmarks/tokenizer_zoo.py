"""Tokenizer benchmark: speed, sequence lengths, vocabulary, learned-vocabulary reduction, round-trip F1 per style.

For every conf/tokenizer/*.yaml (and BPE on each single-stream one): encode and decode throughput in
pieces/s (lyria's encode includes the onset grid, track merging and bar ids), mean tokens (model steps)
per piece and per bar, vocabulary size; for learned vocabularies the sequence-length reduction against
the same tokenizer without them, measured on test-split pieces, the vocabulary learned on training-split
pieces only. The round-trip table gives note F1 (mir_eval, onsets within 50 ms, offsets ignored) per
tokenizer x style on test-split pieces, and the notes lost to merged unisons apart; one extra row feeds
REMI the raw onsets, to show what MidiTok's double rounding costs without lyria's grid. Writes
benchmarks/results/tokenizers.json and tokenizers.md.

    python benchmarks/tokenizer_zoo.py [--pieces-per-style 30] [--test-pieces-per-style 12] [--learned 1000 4000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from symusic import Score

from lyria.cli import CONF_DIR
from lyria.config import build as build_node
from lyria.data.notes import notes_from_score
from lyria.data.prepare import assign_split, convert_pieces
from lyria.data.sources import Music21CorpusSource
from lyria.tokenizers.fidelity import RoundTrip, round_trip

RESULTS = Path(__file__).resolve().parent / "results"
TOKENIZER_DIR = Path(CONF_DIR) / "tokenizer"


def load_pieces(args) -> dict[str, list[dict]]:
    """Per split ("all" = the bounded corpus, "train", "test"), rows with style, score and bar count."""
    data = OmegaConf.load(Path(CONF_DIR) / "data" / "music21_multistyle.yaml")
    source = Music21CorpusSource(OmegaConf.to_container(data.source.styles))
    listing = source.pieces()
    bounded = {r.piece_id for r in source.pieces(args.pieces_per_style)}
    split_of = {r.piece_id: assign_split(r.piece_id, data.val_fraction, data.test_fraction) for r in listing}
    test, per_style = [], {}
    for ref in listing:
        if split_of[ref.piece_id] == "test" and per_style.get(ref.style, 0) < args.test_pieces_per_style:
            test.append(ref)
            per_style[ref.style] = per_style.get(ref.style, 0) + 1
    chosen = {r.piece_id: r for r in listing if r.piece_id in bounded} | {r.piece_id: r for r in test}
    started = time.perf_counter()
    converted, skipped = convert_pieces(list(chosen.values()), Path(args.cache_dir), num_proc=args.num_proc, timeout_s=120)
    print(f"{len(converted)} pieces parsed or loaded in {time.perf_counter() - started:.1f} s ({len(skipped)} skipped)", flush=True)
    rows = []
    for meta in sorted(converted, key=lambda m: m["piece_id"]):
        score = Score(meta["score_path"])
        rows.append({"piece_id": meta["piece_id"], "style": meta["style"], "score": score, "path": meta["score_path"],
                     "bars": len(notes_from_score(score).bar_starts), "split": split_of[meta["piece_id"]]})
    return {
        "all": [r for r in rows if r["piece_id"] in bounded],
        "train": [r for r in rows if r["piece_id"] in bounded and r["split"] == "train"],
        "test": [r for r in rows if r["split"] == "test" and r["piece_id"] in {t.piece_id for t in test}],
    }


def build(name: str, learned: int | None = None):
    cfg = OmegaConf.load(TOKENIZER_DIR / f"{name}.yaml")
    cfg.learned_vocab_size = learned
    return build_node(cfg, f"tokenizer ({name})")


def throughput(tokenizer, rows: list[dict]) -> dict:
    started = time.perf_counter()
    encoded = [tokenizer.encode(r["score"]) for r in rows]
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    for seq in encoded:
        tokenizer.decode(seq.ids)
    decode_s = time.perf_counter() - started
    steps = np.array([len(s) for s in encoded])
    bars = np.array([r["bars"] for r in rows])
    return {
        "encode_pieces_per_s": round(len(rows) / encode_s, 1),
        "decode_pieces_per_s": round(len(rows) / decode_s, 1),
        "tokens_per_piece": round(float(steps.mean()), 1),
        "tokens_per_bar": round(float(steps.sum() / max(bars.sum(), 1)), 2),
        "ids_per_step": len(tokenizer.vocab_sizes),
        "vocab_size": tokenizer.vocab_size,
        "vocab_sizes": tokenizer.vocab_sizes,
    }


def transposable(tokenizer, rows: list[dict], window: int = 256, shifts=(-5, -3, -1, 1, 3, 5)) -> float:
    """Share of (window, shift) pairs the datamodule can transpose: every id has a transposed twin.

    A learned token whose transposed base tokens BPE never merged has none; the crop then stays as is.
    """
    tables = [tokenizer.transposition_table(s) for s in shifts]
    ok = total = 0
    for r in rows:
        ids = tokenizer.encode(r["score"]).ids
        for begin in range(0, max(len(ids) - window, 0) + 1, window):
            for table in tables:
                ok += bool((table[ids[begin : begin + window]] >= 0).all())
                total += 1
    return round(ok / max(total, 1), 3)


def fidelity(tokenizer, rows: list[dict]) -> dict:
    per_style: dict[str, RoundTrip] = {}
    for r in rows:
        per_style[r["style"]] = per_style.get(r["style"], RoundTrip()) + round_trip(tokenizer, r["score"])
    return {
        style: {"f1": round(t.f1, 4), "precision": round(t.precision, 4), "recall": round(t.recall, 4), "pieces": t.pieces,
                "notes": t.n_ref, "unisons": t.unisons_ref, "unisons_lost": t.unisons_lost}
        for style, t in sorted(per_style.items())
    }


def markdown(result: dict) -> str:
    lines = [
        "# Tokenizer benchmark", "",
        f"{result['pieces']['all']} pieces ({result['pieces_per_style']} per style), round trips on "
        f"{result['pieces']['test']} test-split pieces; {result['machine']}.", "",
        "| tokenizer | encode pieces/s | decode pieces/s | tokens/piece | tokens/bar | ids/step | vocab | length vs base | transposable windows |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["tokenizers"].items():
        reduction = f"{row['reduction']:.2f}x shorter" if "reduction" in row else "-"
        lines.append(
            f"| {name} | {row['encode_pieces_per_s']} | {row['decode_pieces_per_s']} | {row['tokens_per_piece']} | "
            f"{row['tokens_per_bar']} | {row['ids_per_step']} | {row['vocab_size']} | {reduction} | {row.get('transposable_windows', 1.0)} |"
        )
    styles = sorted({s for row in result["round_trip"].values() for s in row})
    lines += ["", "Round-trip note F1 (onsets within 50 ms of the original on the tokenizer's grid; unisons lost apart):", "",
              "| tokenizer | " + " | ".join(styles) + " | unisons lost |", "|---|" + "---:|" * (len(styles) + 1)]
    for name, row in result["round_trip"].items():
        lost = sum(v["unisons_lost"] for v in row.values())
        total = sum(v["unisons"] for v in row.values())
        lines.append(f"| {name} | " + " | ".join(f"{row[s]['f1']:.4f}" for s in styles) + f" | {lost} of {total} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces-per-style", type=int, default=30)
    parser.add_argument("--test-pieces-per-style", type=int, default=12)
    parser.add_argument("--learned", type=int, nargs="*", default=[1000, 4000], help="BPE vocabulary sizes")
    parser.add_argument("--cache-dir", default=".cache/lyria/data")
    parser.add_argument("--num-proc", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    pieces = load_pieces(args)
    names = sorted(p.stem for p in TOKENIZER_DIR.glob("*.yaml"))
    rows, fidelity_rows = {}, {}
    for name in names:
        tokenizer = build(name)
        rows[name] = throughput(tokenizer, pieces["all"])
        fidelity_rows[name] = fidelity(tokenizer, pieces["test"])
        base_test_tokens = sum(len(tokenizer.encode(r["score"])) for r in pieces["test"])
        print(name, rows[name], flush=True)
        if tokenizer.is_compound:
            continue
        for size in args.learned:
            learned = build(name, size)
            started = time.perf_counter()
            learned.learn_vocabulary([r["path"] for r in pieces["train"]])
            learn_s = time.perf_counter() - started
            key = f"{name}+bpe{size}"
            rows[key] = throughput(learned, pieces["all"]) | {
                "learn_seconds": round(learn_s, 2),
                "reduction": round(base_test_tokens / sum(len(learned.encode(r["score"])) for r in pieces["test"]), 3),
                "transposable_windows": transposable(learned, pieces["test"]),
            }
            fidelity_rows[key] = fidelity(learned, pieces["test"])
            print(key, rows[key], flush=True)
    # what lyria's single rounding to the grid saves: REMI fed the raw onsets, MidiTok rounding twice
    raw = build("remi")
    raw.quantize_onsets = lambda score: score.copy()
    fidelity_rows["remi, MidiTok's own rounding"] = fidelity(raw, pieces["test"])
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}, 1 process",
        "pieces_per_style": args.pieces_per_style,
        "pieces": {k: len(v) for k, v in pieces.items()},
        "tokenizers": rows,
        "round_trip": fidelity_rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tokenizers.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "tokenizers.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
