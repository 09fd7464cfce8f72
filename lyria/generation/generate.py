"""`generate(cfg)`: load a checkpoint, sample `n` pieces (optionally continuing a prompt), write MIDI + index."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from symusic import Score
from tqdm.auto import tqdm

from lyria.checkpoint import load_model
from lyria.config import GenerateSchema, build, validate
from lyria.generation.sampler import Sampler
from lyria.render.midi import write_midi

log = logging.getLogger(__name__)


def prompt_ids(tokenizer, prompt: str | None, prompt_bars: int | None) -> np.ndarray:
    """BOS, then the prompt piece's tokens (its first `prompt_bars` bars when given)."""
    bos = tokenizer.step_ids(tokenizer.bos_id)[None]
    if prompt is None:
        return bos
    path = Path(prompt)
    if not path.is_file():
        raise FileNotFoundError(f"prompt={prompt!r}: no such MIDI file")
    try:
        score = Score(str(path))
    except Exception as err:
        raise ValueError(f"prompt={prompt!r} is not a readable MIDI file: {err}") from err
    if score.note_num() == 0:
        raise ValueError(f"prompt={prompt!r} has no notes to continue")
    seq = tokenizer.encode(score)
    ids = seq.ids
    if prompt_bars is not None:
        ids = ids[seq.bar_ids < prompt_bars]
    return np.concatenate([bos, ids], axis=0)


def decode_or_repair(tokenizer, ids: np.ndarray) -> tuple[Score, str | None]:
    """Decodes a sample; one that fails or holds no note is repaired by dropping the steps the tokenizer's
    grammar forbids. Returns (score, what was repaired or None); raises ValueError with both reasons."""
    try:
        score = tokenizer.decode(ids)
        problem = None if score.note_num() else "decoded to a score with no notes"
    except Exception as err:  # MidiTok's decoders raise many types on illegal sequences
        score, problem = None, f"{type(err).__name__}: {err}"
    if problem is None:
        return score, None
    repaired, dropped = tokenizer.grammar.repair(ids)
    try:
        score = tokenizer.decode(repaired)
    except Exception as err:
        raise ValueError(f"{problem}; after dropping {dropped} illegal steps: {type(err).__name__}: {err}") from err
    if score.note_num() == 0:
        raise ValueError(f"{problem}; still no notes after dropping {dropped} illegal steps")
    return score, f"{problem}; repaired by dropping {dropped} illegal steps"


def generate(cfg: DictConfig) -> dict[str, Any]:
    """Writes sample_NNN.mid files and index.json under cfg.output_dir; returns the index."""
    cfg = validate(cfg, GenerateSchema)
    model, tokenizer, hparams = load_model(cfg.ckpt, map_location=cfg.device)
    processors = [build(node, f"processors[{i}]") for i, node in enumerate(cfg.processors)]
    sampler = Sampler(model, tokenizer, processors, device=cfg.device)
    prompt = prompt_ids(tokenizer, cfg.prompt, cfg.prompt_bars)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples, failures = [], []
    started = time.perf_counter()
    with tqdm(total=cfg.n, desc="generating", unit="piece") as progress:
        for batch_start in range(0, cfg.n, cfg.batch_size):
            count = min(cfg.batch_size, cfg.n - batch_start)
            results = sampler.generate(prompt, n=count, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + batch_start)
            for offset, result in enumerate(results):
                index = batch_start + offset
                name = f"sample_{index:03d}.mid"
                entry = {"index": index, "n_tokens": int(len(result.ids)), "prompt_tokens": result.prompt_length, "stop_reason": result.stop_reason}
                try:
                    score, repaired = decode_or_repair(tokenizer, result.ids)
                    entry["n_notes"] = write_midi(score, out_dir / name)
                    entry["file"] = name
                    if repaired:
                        entry["repaired"] = repaired
                    samples.append(entry)
                except Exception as err:  # counted and reported, never dropped silently
                    failures.append({**entry, "reason": f"{type(err).__name__}: {err}"})
                progress.update(1)
    index = {
        "checkpoint": str(Path(cfg.ckpt).resolve()),
        "settings": OmegaConf.to_container(cfg, resolve=True),
        "tokenizer": tokenizer.name,
        "seconds": round(time.perf_counter() - started, 2),
        "written": len(samples),
        "repaired": sum("repaired" in entry for entry in samples),
        "failed": len(failures),
        "samples": samples,
        "failures": failures,
    }
    (out_dir / "index.json").write_text(json.dumps(index, indent=2))
    print(
        f"wrote {len(samples)} MIDI files to {out_dir} ({index['repaired']} repaired, {len(failures)} failed to decode; "
        "see index.json)"
    )
    return index
