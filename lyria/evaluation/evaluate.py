"""`evaluate(cfg)`: score a folder of generated pieces against real music and write metrics.json, report.md, plots.

Every family runs twice: on the generated set against the reference, and on a real-vs-real baseline
(held-out real pieces in the generated set's place: the test split against a size-matched sample of the
training split, or, for a MIDI-folder reference, one half of it against the other), so every number has
its "what real music scores" beside it. The baseline is an evaluation asset: computed once per data,
settings and seed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from lyria.config import ConfigError, EvaluateSchema, build, validate
from lyria.data.limits import InputLimits
from lyria.data.prepare import SPLITS, prepare_data
from lyria.evaluation import FAMILIES
from lyria.evaluation.assets import AssetStore, digest
from lyria.evaluation.base import EvalInputs, Family, FamilyResult, PieceSet, plain_number
from lyria.evaluation.coherence import ModelInputs
from lyria.evaluation.features import FeatureSettings
from lyria.evaluation.report import METRICS_VERSION, summary_lines, write_outputs
from lyria.evaluation.sets import load_generated, load_midi_folder, load_split, split_key

log = logging.getLogger(__name__)

RUN_CONFIG_FILE = "config.yaml"
BASELINE_VERSION = 1


def build_families(families: DictConfig | dict) -> list[Family]:
    """The families `eval.families` lists (null entries are off), each checked against the registry."""
    built = []
    for name, node in (families or {}).items():
        if node is None:
            continue
        family = build(node, f"eval.families.{name}", allowed=Family)
        if not isinstance(family, Family) or family.name != name:
            raise ConfigError(
                f"eval.families.{name} builds {type(family).__name__}, which is not the '{name}' metric family; "
                f"registered families: {sorted(FAMILIES)}"
            )
        built.append(family)
    if not built:
        raise ConfigError(f"eval.families is empty: choose some of {sorted(FAMILIES)}")
    return built


def training_data_config(cfg: DictConfig, index: dict | None) -> tuple[DictConfig, DictConfig, str, Path | None]:
    """(data config, tokenizer config, where they came from, run config path) for the reference and training sets.

    training_data=auto takes the run's config.yaml beside the checkpoint named in index.json (the data the
    model was trained on) and falls back to the composed `data` / `tokenizer` groups; `composed` always
    takes the groups; anything else is the path of a run's config.yaml.
    """
    choice = cfg.training_data
    run_config = None
    if choice == "auto":
        checkpoint = cfg.checkpoint or (index or {}).get("checkpoint")
        # a training checkpoint's run config sits beside it; an exported model folder holds its own
        candidate = (Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent) / RUN_CONFIG_FILE if checkpoint else None
        run_config = candidate if candidate is not None and candidate.is_file() else None
    elif choice != "composed":
        run_config = Path(choice)
        if not run_config.is_file():
            raise ConfigError(
                f"training_data={choice!r}: no such run config; use auto, composed or the path of a run's config.yaml"
            )
    if run_config is None:
        return cfg.data, cfg.tokenizer, "the composed data and tokenizer configs", None
    saved = OmegaConf.load(run_config)
    for key in ("data", "tokenizer"):
        if key not in saved:
            raise ConfigError(f"{run_config} has no '{key}' section: not a lyria run config")
    return saved.data, saved.tokenizer, str(run_config), run_config


def prepare(data_cfg: DictConfig, tokenizer_cfg: DictConfig):
    """The prepared splits (a cache hit when the run prepared them). Only lyria's data sources and tokenizer
    are built from the configs, whether composed or read from a run's saved config.yaml."""
    from lyria.data.hf import HFDatasetSource
    from lyria.data.sources import MidiFolderSource, Music21CorpusSource
    from lyria.tokenizers import LyriaTokenizer

    tokenizer = build(tokenizer_cfg, "tokenizer", allowed=LyriaTokenizer)
    source = build(data_cfg.source, "data.source", allowed=(Music21CorpusSource, MidiFolderSource, HFDatasetSource))
    prepared = prepare_data(
        source,
        tokenizer,
        cache_dir=data_cfg.cache_dir,
        max_pieces_per_style=data_cfg.get("max_pieces_per_style"),
        val_fraction=data_cfg.get("val_fraction", 0.05),
        test_fraction=data_cfg.get("test_fraction", 0.05),
        split_salt=data_cfg.get("split_salt", ""),
        num_proc=data_cfg.get("num_proc", 2),
        parse_timeout_s=data_cfg.get("parse_timeout_s", 60.0),
        limits=InputLimits.from_config(data_cfg.get("limits"), "data.limits"),
        tokenize_timeout_s=data_cfg.get("tokenize_timeout_s", 120.0),
    )
    return tokenizer, prepared


def seeded_choice(count: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of `size` of `count` items (all of them when size is None or larger)."""
    if size is None or count <= size:
        return np.arange(count)
    return np.sort(np.random.default_rng([seed, count, size]).choice(count, size, replace=False))


def sample(piece_set: PieceSet, size: int | None, seed: int, label: str | None = None) -> PieceSet:
    """A seeded subset of `size` pieces (the set itself when it is no larger)."""
    chosen = seeded_choice(len(piece_set), size, seed)
    if len(chosen) == len(piece_set):
        return piece_set
    subset = piece_set.subset(chosen, label)
    subset.key = digest([piece_set.key, chosen.tolist()]) if piece_set.key else None
    return subset


def run_families(families: list[Family], inputs: EvalInputs, timings: dict[str, float]) -> dict[str, FamilyResult]:
    results = {}
    for family in families:
        if inputs.role == "baseline" and not family.baseline:
            continue
        started = time.perf_counter()
        if family.needs_train and inputs.train is None:
            results[family.name] = FamilyResult.not_available("no training set")
        else:
            results[family.name] = family.compute(inputs)
        timings[f"{inputs.role}/{family.name}"] = round(time.perf_counter() - started, 3)
        log.info("%s: %s in %.2f s", inputs.role, family.name, timings[f"{inputs.role}/{family.name}"])
    return results


def baseline_sets(
    reference: PieceSet, reference_is_split: bool, prepared, generated_size: int, seed: int
) -> tuple[PieceSet, PieceSet, str]:
    """(real pieces in the generated set's place, their reference, a description)."""
    if reference_is_split:
        test = load_split(prepared, "test") if reference.label != "test" else reference
        held_out = sample(test, generated_size, seed)
        others = sample(load_split(prepared, "train"), len(reference), seed + 1, "train_sample")
        return held_out, others, f"{len(held_out)} test pieces vs {len(others)} training pieces"
    order = np.random.default_rng([seed, len(reference)]).permutation(len(reference))
    half = len(order) // 2
    first, second = reference.subset(np.sort(order[:half]), "reference_a"), reference.subset(np.sort(order[half:]), "reference_b")
    first.key = digest([reference.key, "a", seed]) if reference.key else None
    second.key = digest([reference.key, "b", seed]) if reference.key else None
    return sample(first, generated_size, seed), second, f"one half of the reference ({len(first)}) vs the other ({len(second)})"


def results_to_json(results: dict[str, FamilyResult]) -> tuple[dict[str, dict], dict[str, str]]:
    sections, unavailable = {}, {}
    for name, result in results.items():
        sections[name] = {k: plain_number(v) for k, v in result.values.items()}
        for metric, reason in result.unavailable.items():
            unavailable[f"{name}.{metric}" if metric != "*" else name] = reason
    return sections, unavailable


def per_piece_json(generated: PieceSet, results: dict[str, FamilyResult]) -> dict[str, dict]:
    """{piece name: {family.metric: value}} for every per-piece metric (None where undefined)."""
    table: dict[str, dict] = {name: {} for name in generated.names}
    for family, result in results.items():
        for metric, values in result.per_piece.items():
            for name, value in zip(generated.names, values):
                table[name][f"{family}.{metric}"] = plain_number(value)
    return table


def per_style_json(piece_set: PieceSet, results: dict[str, FamilyResult]) -> dict[str, dict]:
    """{style: {family.metric: mean over that style's pieces}} when the pieces carry styles."""
    if not piece_set.has_styles:
        return {}
    styles = np.array([s or "" for s in piece_set.styles])
    out = {}
    for style in sorted(set(styles) - {""}):
        chosen = styles == style
        row = {"n_pieces": int(chosen.sum())}
        for family, result in results.items():
            for metric, values in result.per_piece.items():
                selected = np.asarray(values, dtype=np.float64)[chosen]
                finite = selected[np.isfinite(selected)]
                row[f"{family}.{metric}"] = float(finite.mean()) if len(finite) else None
            for metric, value in result.values.items():
                if metric == f"coverage.{style}":
                    row[f"{family}.coverage"] = plain_number(value)
        out[style] = row
    return out


def model_inputs(checkpoint: str | None, run_config: Path | None, prepared) -> tuple[ModelInputs | None, str | None]:
    """The checkpoint's model with the test split in its own tokens, for NLL by position; or (None, why not)."""
    if checkpoint is None:
        return None, "no checkpoint (index.json has none; pass checkpoint=PATH)"
    if run_config is None:
        return None, "the checkpoint's config.yaml was not used for the data (training_data=auto with the run's config)"
    if not Path(checkpoint).is_file():
        return None, f"checkpoint {checkpoint} does not exist"
    from lyria.checkpoint import load_model
    from lyria.training.train import build_datamodule  # the training's own framing of a piece (BOS, style, EOS)

    model, tokenizer, _ = load_model(checkpoint)
    test = prepared.splits["test"]
    layout = build_datamodule(OmegaConf.load(run_config), tokenizer, prepared).layout
    pieces = [(np.asarray(r["ids"]), np.asarray(r["bar_ids"]), int(r["style_id"])) for r in test]
    return ModelInputs(model, layout, pieces), None


@dataclass
class Sets:
    """Everything evaluate() scores: the generated set and what it is compared with."""

    generated: PieceSet
    ground_truth: list
    index: dict | None
    reference: PieceSet
    reference_is_split: bool
    train: PieceSet
    prepared: Any
    data_origin: str
    run_config: Path | None


def load_sets(cfg: DictConfig) -> Sets:
    settings = cfg.eval
    limits = InputLimits.from_config(cfg.data.get("limits"), "data.limits")  # for the generated and reference files
    generated, ground_truth, index = load_generated(cfg.generated, settings.num_proc, settings.parse_timeout_s, limits)
    chosen = seeded_choice(len(generated), settings.max_pieces, settings.seed)
    generated, ground_truth = sample(generated, settings.max_pieces, settings.seed), [ground_truth[i] for i in chosen]
    data_cfg, tokenizer_cfg, data_origin, run_config = training_data_config(cfg, index)
    _, prepared = prepare(data_cfg, tokenizer_cfg)
    reference_is_split = cfg.reference in SPLITS
    if reference_is_split:
        reference = load_split(prepared, cfg.reference)
    else:
        reference = load_midi_folder(cfg.reference, "reference", settings.num_proc, settings.parse_timeout_s, limits)
    reference = sample(reference, settings.max_pieces, settings.seed)
    if len(reference) == 0:
        raise ConfigError(f"reference={cfg.reference!r} has no pieces (see {prepared.report_path})")
    train = load_split(prepared, "train")
    return Sets(generated, ground_truth, index, reference, reference_is_split, train, prepared, data_origin, run_config)


def run_baseline(
    families: list[Family], sets: Sets, store: AssetStore, features: FeatureSettings, seed: int, timings: dict
) -> tuple[dict, str]:
    """The real-vs-real pass, read from the asset store when these sets and settings were scored before."""
    held_out, others, description = baseline_sets(
        sets.reference, sets.reference_is_split, sets.prepared, len(sets.generated), seed
    )
    key = {
        "sets": [held_out.key, others.key, sets.train.key],
        "families": {f.name: [type(f).__name__, f.settings()] for f in families if f.baseline},
        "features": asdict(features),
        "seed": seed,
    }

    def compute() -> dict:
        before = dict(store.used)
        inputs = EvalInputs(held_out, others, sets.train, seed, features, store, data=sets.prepared, role="baseline")
        results = run_families(families, inputs, timings)
        sections, unavailable = results_to_json(results)
        assets = {name: record for name, record in store.used.items() if before.get(name) != record}
        for result in results.values():
            assets.update(result.assets)
        return {
            "sections": sections,
            "unavailable": unavailable,
            "per_style": per_style_json(held_out, results),
            "assets": assets,
        }

    cacheable = all(k is not None for k in key["sets"])
    baseline = store.json("baseline", BASELINE_VERSION, key, compute) if cacheable else compute()
    store.used.update(baseline["assets"])  # a cached baseline still names the assets it was computed with
    return baseline, description


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Runs the configured families and writes metrics.json, report.md and plots under cfg.output_dir."""
    cfg = validate(cfg, EvaluateSchema)
    started = time.perf_counter()
    settings = cfg.eval
    families = build_families(settings.families)
    sets = load_sets(cfg)
    timings: dict[str, float] = {"loading": round(time.perf_counter() - started, 3)}

    store = AssetStore(cfg.assets_dir)
    store.record("split_manifest", 1, digest({split: split_key(sets.prepared, split) for split in SPLITS}))
    features = FeatureSettings(settings.feature_resolution, settings.polyphony_threshold)
    checkpoint = cfg.checkpoint or (sets.index or {}).get("checkpoint")
    model, model_note = (None, None)
    if any(f.name == "coherence" for f in families):
        model, model_note = model_inputs(checkpoint, sets.run_config, sets.prepared)
    inputs = EvalInputs(
        sets.generated,
        sets.reference,
        sets.train,
        settings.seed,
        features,
        store,
        model=model,
        ground_truth=sets.ground_truth,
        data=sets.prepared,
    )
    results = run_families(families, inputs, timings)
    if model_note and "coherence" in results:
        results["coherence"].unavailable.setdefault("nll_position", model_note)
    baseline, baseline_note = (
        run_baseline(families, sets, store, features, settings.seed, timings)
        if settings.baseline
        else ({}, "eval.baseline=false")
    )

    sections, unavailable = results_to_json(results)
    for metric, reason in baseline.get("unavailable", {}).items():
        unavailable[f"baseline.{metric}"] = reason
    for result in results.values():
        store.used.update(result.assets)
    generated, reference = sets.generated, sets.reference
    document = {
        "version": METRICS_VERSION,
        "assets": store.used,
        "generated": {
            "dir": str(Path(cfg.generated).resolve()),
            "n_pieces": len(generated),
            "skipped": len(generated.skipped),
            "skips": generated.skipped,
            "checkpoint": checkpoint,
            "styles": dict(Counter(s for s in generated.styles if s is not None)),
        },
        "reference": {
            ("split" if sets.reference_is_split else "dir"): cfg.reference,
            "n_pieces": len(reference),
            "skipped": len(reference.skipped),
            "skips": reference.skipped,
            "data": sets.data_origin,
            "train_pieces": len(sets.train),
        },
        "baseline_sets": baseline_note,
        "settings": {"seed": settings.seed, "features": asdict(features), "families": {f.name: f.settings() for f in families}},
        **sections,
        "baseline": baseline.get("sections", {}),
        "per_piece": per_piece_json(generated, results),
        "per_style": per_style_json(generated, results),
        "baseline_per_style": baseline.get("per_style", {}),
        "unavailable": unavailable,
        "seconds": timings | {"total": round(time.perf_counter() - started, 3)},
    }
    paths = write_outputs(document, results, inputs, Path(cfg.output_dir), plots=settings.plots)
    if not cfg.quiet:
        print("\n".join(summary_lines(document, paths)))
    return document
