"""`generate(cfg)`: load a checkpoint, write `n` new pieces, continuations of `prompt=` or infillings of `infill=` in
every `render.formats` (MIDI, MusicXML, WAV, piano roll), with index.json.

`style=NAME` (a style the checkpoint knows), a list of names, or `all` writes `n` pieces of each style;
`cfg_scale=S` guides them towards their style (classifier-free guidance). index.json records each sample's
requested `style`."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from lyria.checkpoint import load_model
from lyria.config import ConfigError, GenerateSchema, build, check_arguments, validate
from lyria.data.limits import InputLimits
from lyria.files import atomic_write
from lyria.generation.pieces import Piece, continue_piece, harmonize, infill_piece, new_pieces, read_midi, style_conditioning
from lyria.generation.quantize import check_quantize, quantize_model
from lyria.generation.sampler import ContextWindow, Limits, Sampler
from lyria.render import Renderer, build_renderers, render_batch

log = logging.getLogger(__name__)


def build_sampler(cfg: DictConfig) -> Sampler:
    """The model of `cfg.ckpt` behind the processors and context window `cfg` lists."""
    window = ContextWindow(keep_fraction=cfg.window.keep_fraction, opening_bars=cfg.window.opening_bars)
    processors = [build(node, f"processors[{i}]") for i, node in enumerate(cfg.processors)]
    quantize = check_quantize(cfg.get("quantize"), cfg.device)  # before the checkpoint is read
    model, tokenizer, _ = load_model(cfg.ckpt, map_location=cfg.device)
    model = quantize_model(model, quantize, cfg.device)
    return Sampler(model, tokenizer, processors, device=cfg.device, window=window)


def _read_midi(path: str, what: str, limits: InputLimits):
    """The prompt or infill file within the input limits; one that does not read is the user's to fix (a
    ConfigError naming the key)."""
    try:
        return read_midi(path, what, limits)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err)) from err


def _mode(cfg: DictConfig) -> str:
    if cfg.melody is not None:
        given = [key for key in ("prompt", "infill", "cfg_scale") if cfg.get(key) is not None]
        if given:
            raise ConfigError(f"melody={cfg.melody!r} writes a setting of a melody; it does not combine with {given}")
        return "harmonize"
    if cfg.prompt is not None and cfg.infill is not None:
        raise ConfigError(f"prompt={cfg.prompt!r} and infill={cfg.infill!r}: give one of them (continue a piece, or fill its bars)")
    if cfg.infill is not None and cfg.bars is None:
        raise ConfigError(f"infill={cfg.infill!r} needs bars=FIRST-LAST (1-based, inclusive), e.g. bars=5-8")
    if cfg.bars is not None and cfg.infill is None:
        raise ConfigError(f"bars={cfg.bars!r} says which bars of infill=FILE.mid to write anew; infill is not set")
    return "continue" if cfg.prompt is not None else "infill" if cfg.infill is not None else "new"


def requested_styles(style: Any, sampler: Sampler, cfg_scale: float | None) -> list[str | None]:
    """The styles `style=` asks for (None: no style), each checked against the checkpoint before anything is sampled."""
    if style is None:
        styles: list[str | None] = [None]
    elif isinstance(style, str) and style == "all":
        styles = list(sampler.tokenizer.styles)
        if not styles or not sampler.model.conditional:
            raise ConfigError("style=all: this checkpoint knows no styles (an unconditional model, or data without styles)")
    elif isinstance(style, (list, tuple)) or OmegaConf.is_list(style):
        styles = [str(s) for s in style]
        if not styles:
            raise ConfigError("style=[]: name at least one style, or style=all")
    else:
        styles = [str(style)]
    for name in styles:
        try:
            style_conditioning(sampler, name, cfg_scale, 1)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if len(set(styles)) != len(styles):
        raise ConfigError(f"style={styles}: a style is named twice")
    return styles


def generate(cfg: DictConfig) -> dict[str, Any]:
    """Writes sample_NNN.{mid,musicxml,wav,png} (the formats of cfg.render) and index.json under cfg.output_dir;
    returns the index."""
    cfg = validate(cfg, GenerateSchema)
    check_arguments(cfg.processors, "processors")
    mode = _mode(cfg)
    renderers = build_renderers(cfg.render)  # an unknown format or a missing FluidSynth fails here, before sampling
    limits = Limits(max_new_tokens=cfg.max_new_tokens, max_bars=cfg.max_bars, max_seconds=cfg.max_seconds)
    input_limits = InputLimits.from_config(cfg.input_limits, "input_limits")
    source = None  # the prompt or the piece to infill, read (and refused) before the model is loaded
    if mode != "new":
        what = {"continue": "prompt", "infill": "infill", "harmonize": "melody"}[mode]
        source = _read_midi(cfg[what], what, input_limits)
    sampler = build_sampler(cfg)
    styles = requested_styles(cfg.style, sampler, cfg.cfg_scale)
    if cfg.cfg_scale is not None and not getattr(sampler.model.conditioner, "dropout", 0.0):
        log.warning("cfg_scale=%s: the model was trained without condition dropout, so its unconditional stream is untrained", cfg.cfg_scale)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pieces: list[Piece] = []
    with tqdm(total=cfg.n * len(styles), desc="generating", unit="piece") as progress:
        for style in styles:
            # every style draws from the same seeds: samples i of two styles differ by their style only
            common = dict(n=cfg.n, seed=cfg.seed, limits=limits, batch_size=cfg.batch_size, style=style, cfg_scale=cfg.cfg_scale)
            if mode == "continue":
                made = continue_piece(sampler, source, prompt_bars=cfg.prompt_bars, progress=progress.update, **common)
            elif mode == "infill":
                made = infill_piece(sampler, source, str(cfg.bars), progress=progress.update, **common)
            elif mode == "harmonize":
                common.pop("cfg_scale")
                made = harmonize(sampler, source, progress=progress.update, **common)
            else:
                made = new_pieces(sampler, progress=progress.update, **common)
            for piece in made:
                piece.index += len(pieces)
                piece.style = style
            pieces += made
    samples, failures = _render(pieces, out_dir, renderers, cfg.batch_size)
    render_failed = {name: sum(name in entry.get("render_failures", {}) for entry in samples) for name in renderers}
    index = {
        "checkpoint": str(Path(cfg.ckpt).resolve()),
        "mode": mode,
        "settings": OmegaConf.to_container(cfg, resolve=True),
        "tokenizer": sampler.tokenizer.name,
        "styles": styles,
        "cfg_scale": cfg.cfg_scale,
        "seconds": round(time.perf_counter() - started, 2),
        "written": len(samples),
        "repaired": sum("repaired" in entry for entry in samples),
        "failed": len(failures),
        "stop_reasons": dict(Counter(entry["stop_reason"] for entry in samples + failures)),
        "render_failed": render_failed,
        **_task_summary(pieces),
        "samples": samples,
        "failures": failures,
    }
    atomic_write(out_dir / "index.json", json.dumps(index, indent=2), what="sample index")
    unrendered = "".join(f", {count} without {name}" for name, count in render_failed.items() if count)
    print(
        f"wrote {len(samples)} samples as {'/'.join(renderers)} to {out_dir} ({index['repaired']} repaired, "
        f"{len(failures)} failed to decode{unrendered}; stopped by {index['stop_reasons']}; see index.json)"
    )
    if "soprano_equal_rate" in index:
        print(
            f"soprano equals the given melody in {index['soprano_equal_rate']:.0%} of the samples; "
            f"mean share of the melody's notes kept: {index['soprano_note_match_mean']:.0%}"
        )
    return index


def _render(pieces: list[Piece], out_dir: Path, renderers: Mapping[str, Renderer], batch_size: int) -> tuple[list[dict], list[dict]]:
    """Index entries of the pieces written (their file per format, and why a format failed) and of those that
    could not be decoded; renders `batch_size` pieces at a time."""
    samples, failures, decoded = [], [], []
    for piece in pieces:
        entry = _entry(piece)
        notes = piece.score.note_num() if piece.score is not None else 0
        if notes == 0:
            failures.append({**entry, "reason": piece.error or "the decoded score has no notes"})
            continue
        entry["n_notes"] = notes
        decoded.append((entry, piece))
    with tqdm(total=len(decoded), desc="rendering", unit="piece") as progress:
        for first in range(0, len(decoded), batch_size):
            batch = decoded[first : first + batch_size]
            stems = [out_dir / f"sample_{piece.index:03d}" for _, piece in batch]
            for (entry, _), rendered in zip(batch, render_batch([piece.score for _, piece in batch], stems, renderers)):
                entry["files"] = {name: path.name for name, path in rendered.files.items()}
                if "midi" in entry["files"]:
                    entry["file"] = entry["files"]["midi"]  # the sample's MIDI file, which lyria-evaluate reads
                if rendered.failures:
                    entry["render_failures"] = rendered.failures
                samples.append(entry)
            progress.update(len(batch))
    return samples, failures


def _task_summary(pieces: list[Piece]) -> dict[str, Any]:
    """Harmonization: how often the generated soprano equals the given melody, and its mean note match."""
    measured = [piece.metrics for piece in pieces if piece.metrics]
    if not measured or "soprano_equal" not in measured[0]:
        return {}
    return {
        "soprano_equal_rate": round(sum(m["soprano_equal"] for m in measured) / len(pieces), 4),
        "soprano_note_match_mean": round(sum(m["soprano_note_match"] for m in measured) / len(pieces), 4),
    }


def _entry(piece: Piece) -> dict[str, Any]:
    result = piece.result
    entry = {
        "index": piece.index,
        "style": piece.style,
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
    if piece.metrics:
        entry.update(piece.metrics)
    return entry
