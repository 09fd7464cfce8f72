"""`generate(cfg)`: load a checkpoint, write `n` new pieces, continuations of `prompt=` or infillings of `infill=` as MIDI, with index.json."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from lyria.checkpoint import load_model
from lyria.config import ConfigError, GenerateSchema, build, validate
from lyria.generation.pieces import Piece, continue_piece, infill_piece, new_pieces, read_midi
from lyria.generation.sampler import ContextWindow, Limits, Sampler
from lyria.render.midi import write_midi

log = logging.getLogger(__name__)


def build_sampler(cfg: DictConfig) -> Sampler:
    """The model of `cfg.ckpt` behind the processors and context window `cfg` lists."""
    window = ContextWindow(keep_fraction=cfg.window.keep_fraction, opening_bars=cfg.window.opening_bars)
    processors = [build(node, f"processors[{i}]") for i, node in enumerate(cfg.processors)]
    model, tokenizer, _ = load_model(cfg.ckpt, map_location=cfg.device)
    return Sampler(model, tokenizer, processors, device=cfg.device, window=window)


def _mode(cfg: DictConfig) -> str:
    if cfg.prompt is not None and cfg.infill is not None:
        raise ConfigError(f"prompt={cfg.prompt!r} and infill={cfg.infill!r}: give one of them (continue a piece, or fill its bars)")
    if cfg.infill is not None and cfg.bars is None:
        raise ConfigError(f"infill={cfg.infill!r} needs bars=FIRST-LAST (1-based, inclusive), e.g. bars=5-8")
    if cfg.bars is not None and cfg.infill is None:
        raise ConfigError(f"bars={cfg.bars!r} says which bars of infill=FILE.mid to write anew; infill is not set")
    return "continue" if cfg.prompt is not None else "infill" if cfg.infill is not None else "new"


def generate(cfg: DictConfig) -> dict[str, Any]:
    """Writes sample_NNN.mid files and index.json under cfg.output_dir; returns the index."""
    cfg = validate(cfg, GenerateSchema)
    mode = _mode(cfg)
    limits = Limits(max_new_tokens=cfg.max_new_tokens, max_bars=cfg.max_bars, max_seconds=cfg.max_seconds)
    sampler = build_sampler(cfg)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    common = dict(n=cfg.n, seed=cfg.seed, limits=limits, batch_size=cfg.batch_size)
    with tqdm(total=cfg.n, desc="generating", unit="piece") as progress:
        if mode == "continue":
            pieces = continue_piece(sampler, read_midi(cfg.prompt, "prompt"), prompt_bars=cfg.prompt_bars, progress=progress.update, **common)
        elif mode == "infill":
            pieces = infill_piece(sampler, read_midi(cfg.infill, "infill"), str(cfg.bars), progress=progress.update, **common)
        else:
            pieces = new_pieces(sampler, progress=progress.update, **common)
    samples, failures = [], []
    for piece in pieces:
        entry = _entry(piece)
        if piece.score is not None:
            name = f"sample_{piece.index:03d}.mid"
            try:
                entry["n_notes"] = write_midi(piece.score, out_dir / name)
                entry["file"] = name
                samples.append(entry)
                continue
            except ValueError as err:
                piece.error = str(err)
        failures.append({**entry, "reason": piece.error})
    index = {
        "checkpoint": str(Path(cfg.ckpt).resolve()),
        "mode": mode,
        "settings": OmegaConf.to_container(cfg, resolve=True),
        "tokenizer": sampler.tokenizer.name,
        "seconds": round(time.perf_counter() - started, 2),
        "written": len(samples),
        "repaired": sum("repaired" in entry for entry in samples),
        "failed": len(failures),
        "stop_reasons": dict(Counter(entry["stop_reason"] for entry in samples + failures)),
        "samples": samples,
        "failures": failures,
    }
    (out_dir / "index.json").write_text(json.dumps(index, indent=2))
    print(
        f"wrote {len(samples)} MIDI files to {out_dir} ({index['repaired']} repaired, {len(failures)} failed to decode; "
        f"stopped by {index['stop_reasons']}; see index.json)"
    )
    return index


def _entry(piece: Piece) -> dict[str, Any]:
    result = piece.result
    entry = {
        "index": piece.index,
        "n_tokens": int(len(result.ids)),
        "prompt_tokens": result.prompt_length,
        "new_tokens": int(len(result.ids) - result.prompt_length),
        "bars": int(result.bar_ids.max()) + 1 if len(result.bar_ids) else 0,
        "stop_reason": result.stop_reason,
        "context_rereads": result.rereads,
    }
    if piece.score is not None:
        entry["seconds"] = round(float(piece.score.to("second").end()), 2)
    if piece.repaired:
        entry["repaired"] = piece.repaired
    return entry
