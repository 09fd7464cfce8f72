"""Evaluation speed: every metric family on 1,000 generated vs 1,000 reference pieces, with the assets built.

The pieces are the music21 corpus at 400 pieces per style (about 2,000 after de-duplication, from the
shared data cache; preparing it from scratch parses for about 15 minutes): a seeded half is the
reference, the other half the training set (memorization index, training tokens). The "generated" set
is synthesized from real pieces so that every family has something to find: 850 reference pieces
perturbed (notes dropped, pitches moved, bars shuffled), 50 training pieces copied (half of them
transposed), and one training piece repeated 100 times. Timed: building the assets once (reference
features and tokens, training tokens, memorization index), then all families with the default settings
of conf/eval/default.yaml, then a real-vs-real baseline pass (one half of the reference against the other).
Writes benchmarks/results/evaluation.json and .md.

    PYTHONPATH=. python benchmarks/evaluation.py [--pieces 1000] [--pieces-per-style 400]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from symusic import Score

from lyria.cli import CONF_DIR
from lyria.data.notes import PieceNotes, notes_from_score
from lyria.data.prepare import SPLITS
from lyria.evaluation.assets import AssetStore, digest
from lyria.evaluation.base import EvalInputs, PieceSet
from lyria.evaluation.evaluate import build_families, prepare
from lyria.evaluation.features import FeatureSettings, table_for
from lyria.evaluation.memorization import Memorization
from lyria.evaluation.tokens import tokens_for
from lyria.training.precision import cpu_name

RESULTS = Path(__file__).resolve().parent / "results"


def corpus(pieces_per_style: int) -> PieceSet:
    """Every prepared piece of the default data at `pieces_per_style` (all splits), read from the Score cache."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="evaluate",
            overrides=["generated=unused", "output_dir=unused", f"data.max_pieces_per_style={pieces_per_style}"],
        )
    _, prepared = prepare(cfg.data, cfg.tokenizer)
    names, pieces, styles = [], [], []
    for split in SPLITS:
        names += list(prepared.splits[split]["piece_id"])
        styles += list(prepared.splits[split]["style"])
        pieces += [notes_from_score(Score(str(p))) for p in prepared.score_paths(split)]
    return PieceSet("corpus", names, pieces, styles)


def perturbed(piece: PieceNotes, rng: np.random.Generator) -> PieceNotes:
    """Drops a fifth of the notes, moves a tenth by a step, transposes, and swaps two 4-beat spans."""
    notes = piece.notes[rng.random(len(piece.notes)) > 0.2].copy()
    moved = rng.random(len(notes)) < 0.1
    notes["pitch"][moved] += rng.choice([-2, -1, 1, 2], size=int(moved.sum())).astype(np.int16)
    notes["pitch"] = np.clip(notes["pitch"] + int(rng.integers(-3, 4)), 0, 127)
    span = piece.duration_beats
    if span > 16:
        a, b = sorted(rng.choice(int(span // 4), size=2, replace=False) * 4)
        first = (notes["start_beats"] >= a) & (notes["start_beats"] < a + 4)
        second = (notes["start_beats"] >= b) & (notes["start_beats"] < b + 4)
        for column in ("start_beats", "end_beats"):
            notes[column][first] += b - a
            notes[column][second] -= b - a
    notes = notes[np.lexsort((notes["pitch"], notes["start_beats"]))]
    return PieceNotes(notes, piece.bar_starts_beats, piece.bar_starts, piece.time_signatures)


def transposed(piece: PieceNotes, semitones: int) -> PieceNotes:
    notes = piece.notes.copy()
    notes["pitch"] = np.clip(notes["pitch"] + semitones, 0, 127)
    return PieceNotes(notes, piece.bar_starts_beats, piece.bar_starts, piece.time_signatures)


def generated_set(reference: PieceSet, train: PieceSet, size: int, rng: np.random.Generator) -> tuple[PieceSet, dict]:
    n_copies, n_repeated = size // 20, size // 10
    n_perturbed = size - n_copies - n_repeated
    sources = rng.choice(len(reference), n_perturbed, replace=len(reference) < n_perturbed)
    copies = rng.choice(len(train), n_copies, replace=False)
    pieces = [perturbed(reference.pieces[i], rng) for i in sources]
    pieces += [transposed(train.pieces[i], 0 if k % 2 else int(rng.integers(1, 6))) for k, i in enumerate(copies)]
    pieces += [train.pieces[int(rng.integers(len(train)))]] * n_repeated
    names = [f"sample_{i:04d}.mid" for i in range(len(pieces))]
    return PieceSet("generated", names, pieces, [None] * len(pieces)), {
        "perturbed": n_perturbed,
        "copied": n_copies,
        "repeated": n_repeated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=1000)
    parser.add_argument("--pieces-per-style", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["generated=unused", "output_dir=unused"])
    families = build_families(cfg.eval.families)
    note_f1_pairs = next(f.note_f1_pairs for f in families if f.name == "diversity")

    started = time.perf_counter()
    everything = corpus(args.pieces_per_style)
    load_seconds = time.perf_counter() - started
    rng = np.random.default_rng(0)
    order = rng.permutation(len(everything))
    size = min(args.pieces, len(everything) // 2)
    reference = everything.subset(np.sort(order[:size]), "reference")
    train = everything.subset(np.sort(order[size:]), "train")
    reference.key, train.key = digest(reference.names), digest(train.names)
    generated, composition = generated_set(reference, train, size, rng)
    settings = FeatureSettings(cfg.eval.feature_resolution, cfg.eval.polyphony_threshold)

    with tempfile.TemporaryDirectory() as folder:
        store = AssetStore(folder)
        inputs = EvalInputs(generated, reference, train, 0, settings, store)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        for piece_set in (reference, train):
            table_for(piece_set, settings, store)
            tokens_for(piece_set, store)
        memorization = next(f for f in families if isinstance(f, Memorization))
        memorization.index(inputs)
        assets_seconds = time.perf_counter() - started
        values = {}
        started = time.perf_counter()
        for family in families:
            begin = time.perf_counter()
            values[family.name] = family.compute(inputs).values
            timings[family.name] = round(time.perf_counter() - begin, 2)
            print(f"{family.name}: {timings[family.name]} s", flush=True)
        total = time.perf_counter() - started

        # real vs real as evaluate() runs it: held-out pieces against other real pieces (here the reference's halves)
        half = len(reference) // 2
        held_out, others = reference.subset(range(half), "held_out"), reference.subset(range(half, len(reference)), "others")
        held_out.key, others.key = digest(held_out.names), digest(others.names)
        baseline_inputs = EvalInputs(held_out, others, train, 0, settings, store, role="baseline")
        started = time.perf_counter()
        baseline = {f.name: f.compute(baseline_inputs).values for f in families if f.baseline}
        baseline_seconds = time.perf_counter() - started

    headline = {
        "diversity.vendi": values["diversity"]["vendi"],
        "diversity.distinct_4": values["diversity"]["distinct_4"],
        "mode_collapse.score": values["mode_collapse"]["score"],
        "mode_collapse.near_duplicate_rate": values["mode_collapse"]["near_duplicate_rate"],
        "memorization.copy_rate": values["memorization"]["copy_rate"],
        "coherence.key_consistency": values["coherence"]["key_consistency"],
        "distances.frechet": values["distances"]["frechet"],
    }
    result = {
        "benchmark": "evaluation",
        "machine": {
            "cpu": cpu_name(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 1),
        },
        "note": "measured on a shared machine (other jobs running); compare the per-family shares, not absolute times",
        "pieces": {
            "generated": len(generated),
            "reference": len(reference),
            "train": len(train),
            "generated_composition": composition,
        },
        "pairwise_note_f1_pairs": note_f1_pairs,
        "seconds": {
            "load_pieces": round(load_seconds, 2),
            "build_assets_once": round(assets_seconds, 2),
            "all_families_with_assets": round(total, 2),
            "per_family": timings,
            "baseline_pass": round(baseline_seconds, 2),
        },
        "target_seconds": 60,
        "meets_target": total <= 60,
        "headline_values": {k: round(v, 4) if v is not None else None for k, v in headline.items()},
        "baseline_values": {
            "mode_collapse.score": baseline["mode_collapse"]["score"],
            "memorization.copy_rate": baseline["memorization"]["copy_rate"],
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "evaluation.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# evaluation benchmark ({result['machine']['cpu']}, {result['machine']['cpus']} cores, shared machine)",
        "",
        f"{len(generated)} generated ({composition}) vs {len(reference)} reference pieces, {len(train)} training pieces; "
        f"pairwise note F1 on {note_f1_pairs} seeded pairs.",
        "",
        "| step | seconds |",
        "|---|---:|",
        f"| build assets once (features, tokens, memorization index) | {assets_seconds:.1f} |",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in timings.items()],
        f"| **all families, assets built** (target 60) | **{total:.1f}** |",
        f"| real-vs-real baseline pass (cached as an asset in practice) | {baseline_seconds:.1f} |",
    ]
    (RESULTS / "evaluation.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
