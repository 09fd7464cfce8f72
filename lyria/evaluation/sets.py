"""Piece sets to evaluate: generated samples (a folder, read through its index.json when present), any
MIDI folder, and the splits of prepared data read from the Score cache.

Files from outside (samples, MIDI folders, prompts) are parsed in isolated worker processes with a time
limit and within the per-piece bounds (`data.limits`), as in data preparation: a file that fails or is
over a bound is a counted, reported skip. Pieces of prepared data are
read back from the Score cache that preparation wrote.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from symusic import Score

from lyria.data.convert import read_midi_file
from lyria.data.isolated import isolated_map
from lyria.data.limits import InputLimits
from lyria.data.notes import PieceNotes, notes_from_score
from lyria.data.sources import MIDI_SUFFIXES, MidiFolderSource
from lyria.evaluation.assets import digest
from lyria.evaluation.base import PieceSet
from lyria.generation.pieces import parse_bars  # how lyria-generate writes the infilled bars in index.json

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"


def read_notes(job: str | tuple[str, InputLimits]) -> PieceNotes:
    """Worker: a MIDI file (within the limits, when given) in the note schema (an empty or note-less file is an error)."""
    path, limits = job if isinstance(job, tuple) else (job, None)
    if limits is not None:
        limits.check_file(path)
    score = read_midi_file(path)
    if limits is not None:
        limits.check_score(score)
    return notes_from_score(score)


def parse_files(
    paths: list[str], num_proc: int, timeout_s: float, desc: str, limits: InputLimits | None = None
) -> tuple[dict[int, PieceNotes], list[dict]]:
    """Parsed pieces by position in `paths`, and the skips (path and reason). `limits`: default InputLimits()."""
    pieces, skipped = {}, []
    limits = limits or InputLimits()
    jobs = [(path, limits) for path in paths]
    for outcome in isolated_map(read_notes, jobs, num_proc=num_proc, timeout_s=timeout_s, desc=desc):
        if outcome.ok:
            pieces[outcome.index] = outcome.value
        else:
            skipped.append({"file": paths[outcome.index], "reason": outcome.reason})
    return pieces, skipped


def read_index(folder: Path) -> dict[str, Any] | None:
    """The folder's index.json, or None when it has none; a broken one is an error naming the file."""
    path = folder / INDEX_FILE
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); fix it or remove it to evaluate every MIDI file in {folder}"
        ) from err
    if not isinstance(index, dict) or not isinstance(index.get("samples", []), list):
        raise ValueError(f"{path} has no 'samples' list")
    return index


def _sample_entries(folder: Path, index: dict | None) -> list[dict]:
    """One entry per sample file: index.json's, or every MIDI file of the folder.

    Only the MIDI file is required (`file`, or `files.midi` as lyria-generate writes it); samples written
    without MIDI (`render.formats` without `midi`) cannot be evaluated and are an error naming them.
    `style` is read when present. A sample that continues a real piece gets
    `ground_truth` (the prompt file) and `prompt_bars`; one that fills bars of a real piece, `ground_truth`
    (the infill file) and `infill_bars` ([first, end), 0-based), from the sample's own fields or else from
    index.json's `settings` (lyria-generate's `prompt` / `prompt_bars`, `infill` / `bars`).
    """
    if index is None:
        return [{"file": p.name} for p in sorted(folder.iterdir()) if p.suffix.lower() in MIDI_SUFFIXES]
    settings = index.get("settings") or {}
    entries = []
    for position, sample in enumerate(index.get("samples", [])):
        if not isinstance(sample, dict):
            raise ValueError(f"{folder / INDEX_FILE}: samples[{position}] is not an object")
        # lyria-generate lists each sample's files by format ({"files": {"midi": ...}}); `file` is the plain form
        files = sample.get("files") if isinstance(sample.get("files"), dict) else {}
        midi = sample.get("file") or files.get("midi")
        if not midi:
            raise ValueError(
                f"{folder / INDEX_FILE}: samples[{position}] has no MIDI file ('file', or 'files.midi'; "
                "lyria-generate writes one when render.formats includes midi)"
            )
        entry = {**sample, "file": midi}
        if entry.get("infill_bars") is None and settings.get("infill") and settings.get("bars"):
            entry["ground_truth"], entry["infill_bars"] = settings["infill"], list(parse_bars(settings["bars"]))
        elif entry.get("infill_bars") is not None:
            entry["ground_truth"] = entry.get("infill") or settings.get("infill")
        elif entry.get("prompt") or settings.get("prompt"):
            entry["ground_truth"] = entry.get("prompt") or settings["prompt"]
            entry.setdefault("prompt_bars", settings.get("prompt_bars"))
        entries.append(entry)
    return entries


def load_generated(
    folder: str | Path, num_proc: int = 2, timeout_s: float = 60.0, limits: InputLimits | None = None
) -> tuple[PieceSet, list[PieceNotes | None], dict | None]:
    """(the generated set, the real piece each sample continues or fills (None where none), index.json or None)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"generated={str(folder)!r} is not a folder of samples")
    index = read_index(folder)
    entries = _sample_entries(folder, index)
    if not entries:
        raise ValueError(f"generated={str(folder)!r} holds no MIDI files and no {INDEX_FILE} listing any")
    paths = [str(folder / e["file"]) for e in entries]
    parsed, skipped = parse_files(paths, num_proc, timeout_s, "reading samples", limits)
    if skipped:
        log.warning("%d of %d samples in %s skipped (listed under generated.skips in metrics.json); first: %s: %s",
                    len(skipped), len(paths), folder, Path(skipped[0]["file"]).name, skipped[0]["reason"])
    kept = sorted(parsed)
    if not kept:
        reasons = "; ".join(f"{Path(s['file']).name}: {s['reason']}" for s in skipped[:3])
        raise ValueError(f"none of the {len(paths)} samples in {folder} could be read: {reasons}")
    chosen = [entries[i] for i in kept]
    generated = PieceSet(
        "generated",
        [e["file"] for e in chosen],
        [parsed[i] for i in kept],
        [e.get("style") for e in chosen],
        chosen,
        skipped,
    )
    originals = sorted({str(e["ground_truth"]) for e in chosen if e.get("ground_truth")})
    truth_by_path, truth_skips = parse_files(originals, num_proc, timeout_s, "reading prompts", limits)
    for skip in truth_skips:
        log.warning("%s cannot be read (%s): the samples made from it get no continuation scores", skip["file"], skip["reason"])
    truths = {originals[i]: piece for i, piece in truth_by_path.items()}
    ground_truth = [truths.get(str(e.get("ground_truth"))) if e.get("ground_truth") else None for e in chosen]
    return generated, ground_truth, index


def load_midi_folder(
    folder: str | Path, label: str, num_proc: int = 2, timeout_s: float = 60.0, limits: InputLimits | None = None
) -> PieceSet:
    """Every MIDI file under `folder` (style: first sub-folder's name, as `data=midi_folder` reads it)."""
    source = MidiFolderSource(str(folder))
    refs = source.pieces()
    if not refs:
        raise ValueError(f"reference={str(folder)!r} holds no .mid/.midi files")
    parsed, skipped = parse_files([r.args[0] for r in refs], num_proc, timeout_s, f"reading {label}", limits)
    kept = sorted(parsed)
    if not kept:
        raise ValueError(f"none of the {len(refs)} MIDI files under {folder} could be read; first: {skipped[0]['reason']}")
    return PieceSet(
        label,
        [refs[i].piece_id for i in kept],
        [parsed[i] for i in kept],
        [refs[i].style for i in kept],
        skipped=skipped,
        key=digest(sorted((refs[i].piece_id, refs[i].fingerprint) for i in kept)),
    )


class CachedScores(Sequence):
    """Pieces of the Score cache, each read on first use: a run whose assets are built reads few of them."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self._pieces: dict[int, PieceNotes] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> PieceNotes:
        index = range(len(self.paths))[index]
        if index not in self._pieces:
            self._pieces[index] = notes_from_score(Score(str(self.paths[index])))
        return self._pieces[index]


def split_key(prepared, split: str) -> str:
    """The hash of a split's manifest (piece ids, their cached scores, styles): names the split's assets."""
    table = prepared.splits[split]
    return digest(sorted(zip(table["piece_id"], table["score_path"], table["style"])))


def load_split(prepared, split: str) -> PieceSet:
    """A split of prepared data; pieces are read from the Score cache when first used."""
    table = prepared.splits[split]
    return PieceSet(
        split,
        list(table["piece_id"]),
        CachedScores(prepared.score_paths(split)),
        list(table["style"]),
        key=split_key(prepared, split),
    )
