"""Source files -> Score cache -> token ids in a Hugging Face Arrow dataset, with a skip report.

Two caches, both under `data.cache_dir`:
- `scores/`: each piece converted once (a MIDI file and its metadata, or a record of why it failed),
  keyed by the piece's own fingerprint, so bounding or widening the corpus re-parses nothing.
- `tokens/<key>/`: the tokenized splits; the key covers the pieces, the split settings and every
  tokenizer setting, so a changed setting rebuilds and an unchanged one loads in seconds.
`style_slots/<source>.json` keeps each source's style-to-slot map, so a style keeps its slot (and its
style token) when the source gains a style; new styles take free slots.
`data_report.json` sits beside the token cache: counts per style and split, and every skipped piece
with its stage and reason.

Every piece is bounded (`InputLimits`, `data.limits`): its file size before parsing, its notes and length
after parsing and before anything converts or tokenizes it, its tokens after tokenizing. Parsing and
tokenizing both run in isolated worker processes with a time limit, so a piece that crashes or hangs
either one is a counted skip too. Each row keeps its piece's `score_path` (relative to `data.cache_dir`), so evaluation
reads the reference music from the parsed scores rather than from decoded tokens.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from symusic import Score

from lyria.data.convert import input_bytes
from lyria.data.isolated import isolated_map
from lyria.data.limits import InputLimits, LimitExceeded, score_beats, score_seconds
from lyria.data.notes import notes_from_score
from lyria.data.sources import PieceRef
from lyria.tokenizers import LyriaTokenizer
from lyria.tokenizers.base import NOTE_LOSS_REASONS

# the reasons that remove notes (the others change a note, or count tempo events)
NOTES_REMOVED = ("drums_dropped", "pitch_out_of_range")
from lyria.tokenizers.learned import learn_or_load

log = logging.getLogger(__name__)

CONVERTER_VERSION = 1
DATASET_VERSION = 5  # rows keep score_path (relative to data.cache_dir) and notes in / out with the reasons notes were lost; tokenized in isolated workers, bounded
SPLITS = ("train", "validation", "test")


class NoUsablePiecesError(RuntimeError):
    """A source gave no piece that could be parsed and tokenized."""


@dataclass
class PreparedData:
    """The tokenized splits, and where the cache and the report are."""

    splits: Any  # datasets.DatasetDict with SPLITS
    report: dict
    report_path: Path
    cache_path: Path
    styles: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        """The data cache folder (`data.cache_dir`) the token cache and the Score cache live in."""
        return self.cache_path.parent.parent

    def score_paths(self, split: str) -> list[Path]:
        """The parsed Score (MIDI) file of every piece of `split`, in row order."""
        return [self.data_dir / path for path in self.splits[split]["score_path"]]


@contextmanager
def _locked(path: Path):
    """One preparer at a time per cache folder (every DDP rank runs the same preparation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _score_key(ref: PieceRef) -> str:
    return _digest([CONVERTER_VERSION, ref.piece_id, ref.parse.__module__, ref.parse.__name__, ref.fingerprint])


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def convert_piece(job: tuple[PieceRef, str, InputLimits]) -> dict:
    """Worker: parse one piece within the limits, store it as MIDI + metadata. Runs in an isolated process."""
    ref, prefix, limits = job
    size = input_bytes(ref.parse, ref.args)
    if size is not None:
        limits.check_bytes(size)
    score = ref.load()
    limits.check_score(score)  # before the notes are copied into the note schema
    piece = notes_from_score(score)
    if len(piece) == 0:
        raise ValueError("no notes")
    meta = {
        "piece_id": ref.piece_id,
        "style": ref.style,
        "content_hash": piece.content_hash(),
        "n_notes": len(piece),
        "duration_beats": piece.duration_beats,
        "length_beats": score_beats(score),
        "length_seconds": score_seconds(score),
    }
    _atomic_write(Path(prefix + ".mid"), score.dumps_midi())
    _atomic_write(Path(prefix + ".json"), json.dumps(meta).encode())
    return meta


def convert_pieces(
    refs: Sequence[PieceRef], cache_dir: Path, num_proc: int, timeout_s: float, limits: InputLimits | None = None
) -> tuple[list[dict], list[dict]]:
    """Returns (converted metadata with `score_path`, skips). Parse failures are cached; timeouts and pieces over
    the limits are tried again next run (the limits may have changed); cached pieces are checked against them.

    `score_path` is the cached MIDI file (under `cache_dir`, as given); `score_file` the same path relative to it.
    """
    limits = limits or InputLimits()
    scores_dir = cache_dir / "scores"
    converted, skipped, todo = [], [], []
    for ref in refs:
        key = _score_key(ref)
        prefix = scores_dir / key[:2] / key
        if (meta_path := prefix.with_suffix(".json")).exists() and prefix.with_suffix(".mid").exists():
            meta = _with_lengths(json.loads(meta_path.read_text()), prefix)
            try:
                limits.check_meta(meta)
            except LimitExceeded as err:
                skipped.append(_skip(ref, "limits", str(err)))
                continue
            converted.append(_with_score_path(meta, prefix))
        elif (skip_path := prefix.with_suffix(".skip.json")).exists():
            skipped.append(json.loads(skip_path.read_text()))
        else:
            prefix.parent.mkdir(parents=True, exist_ok=True)
            todo.append((ref, str(prefix), limits))
    if todo:
        log.info("converting %d pieces (%d cached) with %d processes", len(todo), len(converted), num_proc)
    for outcome in isolated_map(convert_piece, todo, num_proc=num_proc, timeout_s=timeout_s, desc="converting"):
        ref, prefix, _ = todo[outcome.index]
        if outcome.ok:
            converted.append(_with_score_path(outcome.value, Path(prefix)))
            continue
        over_limit = outcome.error == LimitExceeded.__name__
        skip = _skip(ref, "limits" if over_limit else "parse", outcome.reason)
        skipped.append(skip)
        if not over_limit and outcome.error != "timeout":
            _atomic_write(Path(prefix + ".skip.json"), json.dumps(skip).encode())
    return converted, skipped


def _skip(ref: PieceRef, stage: str, reason: str) -> dict:
    return {"piece_id": ref.piece_id, "style": ref.style, "origin": ref.origin, "stage": stage, "reason": reason}


def _with_lengths(meta: dict, prefix: Path) -> dict:
    """Cached metadata written before lengths were recorded gets them from its cached MIDI file (once)."""
    if "length_beats" in meta and "length_seconds" in meta:
        return meta
    score = Score(str(prefix.with_suffix(".mid")))
    meta = {**meta, "length_beats": score_beats(score), "length_seconds": score_seconds(score)}
    _atomic_write(prefix.with_suffix(".json"), json.dumps(meta).encode())
    return meta


def _with_score_path(meta: dict, prefix: Path) -> dict:
    path = prefix.with_suffix(".mid")
    return {**meta, "score_path": str(path), "score_file": path.relative_to(prefix.parents[2]).as_posix()}


def assign_split(piece_id: str, val_fraction: float, test_fraction: float, salt: str = "") -> str:
    """Deterministic split by a hash of the piece id: the same piece always lands in the same split."""
    u = int(hashlib.sha1(f"split:{salt}{piece_id}".encode()).hexdigest()[:12], 16) / float(16**12)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "validation"
    return "train"


def dedupe_and_split(pieces: list[dict], val_fraction: float, test_fraction: float, salt: str) -> tuple[list[dict], list[dict]]:
    """Removes exact duplicates (same notes) keeping the first piece id, then splits by piece id.

    Keeping one copy of each duplicate group means no piece of a held-out split has a twin in
    training. If the validation split comes out empty, the train piece nearest the cut moves there.
    """
    pieces = sorted(pieces, key=lambda p: p["piece_id"])
    kept, duplicates, seen = [], [], {}
    for piece in pieces:
        if piece["content_hash"] in seen:
            duplicates.append({"piece_id": piece["piece_id"], "duplicate_of": seen[piece["content_hash"]]})
            continue
        seen[piece["content_hash"]] = piece["piece_id"]
        kept.append({**piece, "split": assign_split(piece["piece_id"], val_fraction, test_fraction, salt)})
    if kept and val_fraction > 0 and not any(p["split"] == "validation" for p in kept):
        train = [p for p in kept if p["split"] == "train"]
        if len(train) >= 2:
            min(train, key=lambda p: hashlib.sha1(f"split:{salt}{p['piece_id']}".encode()).hexdigest())["split"] = "validation"
    return kept, duplicates


class _Encoder:
    """Worker (isolated process): cached score file -> (ids, bar ids) within the token limit; raises otherwise."""

    def __init__(self, tokenizer: LyriaTokenizer, limits: InputLimits) -> None:
        self.tokenizer = tokenizer
        self.limits = limits
        self.note_counts = tokenizer.note_counts()

    def __call__(self, score_path: str) -> tuple[np.ndarray, np.ndarray, dict]:
        score = Score(score_path)
        seq = self.tokenizer.encode(score)
        if len(seq) == 0:
            raise ValueError("encodes to zero tokens")
        self.limits.check_tokens(len(seq))
        notes = {
            "notes_in": int(score.note_num()),
            "notes_out": self.tokenizer.notes_in_ids(seq.ids, self.note_counts),
            "note_losses": self.tokenizer.note_losses(score),
        }
        return seq.ids, seq.bar_ids, notes


def tokenize_pieces(
    tokenizer: LyriaTokenizer, pieces: list[dict], limits: InputLimits, num_proc: int, timeout_s: float
) -> tuple[dict[int, tuple[np.ndarray, np.ndarray, dict]], list[dict]]:
    """(ids, bar ids and note counts by position in `pieces`, skips). Each piece is tokenized in an isolated worker with a
    time limit: one the tokenizer rejects, crashes or hangs on, or that is over `max_tokens`, is a skip."""
    encoded, skipped = {}, []
    paths = [p["score_path"] for p in pieces]
    encoder = _Encoder(tokenizer, limits)
    for outcome in isolated_map(encoder, paths, num_proc=num_proc, timeout_s=timeout_s, desc="tokenizing"):
        if outcome.ok:
            encoded[outcome.index] = outcome.value
            continue
        piece = pieces[outcome.index]
        stage = "limits" if outcome.error == LimitExceeded.__name__ else "tokenize"
        reason = outcome.reason
        if outcome.error == "timeout":
            reason += " (data.tokenize_timeout_s)"
        skipped.append({"piece_id": piece["piece_id"], "style": piece["style"], "stage": stage, "reason": reason})
    return encoded, skipped


def prepare_data(
    source,
    tokenizer: LyriaTokenizer,
    cache_dir: str | Path,
    max_pieces_per_style: int | None = None,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    split_salt: str = "",
    num_proc: int = 2,
    parse_timeout_s: float = 60.0,
    limits: InputLimits | None = None,
    tokenize_timeout_s: float = 120.0,
) -> PreparedData:
    """Runs (or loads from cache) the whole preparation for one source and tokenizer; pieces over `limits`
    (default: `InputLimits()`) are skipped and reported."""
    import datasets

    limits = limits or InputLimits()
    cache_dir = Path(cache_dir)
    with _locked(cache_dir / ".lock"):
        assign_style_slots(source, tokenizer, cache_dir)
        started = time.perf_counter()
        refs = source.pieces(max_pieces_per_style)
        # pieces the source itself set aside (e.g. a style not in data.source.styles), counted as skips
        listed_skips = list(getattr(source, "skipped", []) or [])
        if not refs:
            raise NoUsablePiecesError(
                f"{source.name}: no pieces found" + (f" ({len(listed_skips)} skipped: {listed_skips[0]['reason']})" if listed_skips else "")
            )
        key = _digest(
            [
                DATASET_VERSION,
                sorted((r.piece_id, _score_key(r)) for r in refs),
                tokenizer.settings(),
                sorted(tokenizer.style_slots.items()),
                sorted(skip["piece_id"] for skip in listed_skips),
                val_fraction,
                test_fraction,
                split_salt,
                limits.bounds(),
                tokenize_timeout_s,
            ]
        )
        token_dir = cache_dir / "tokens" / key
        report_path = token_dir / "data_report.json"
        if (token_dir / "dataset_dict.json").exists() and report_path.exists():
            splits = datasets.load_from_disk(str(token_dir))
            if tokenizer.learned_vocab_size is not None:  # the ids were made with the vocabulary stored beside them
                tokenizer.use_learned_vocabulary(LyriaTokenizer.load(token_dir))
            report = json.loads(report_path.read_text())
            report["cache_hit"] = True
            log.info("loaded cached dataset %s in %.2f s", token_dir, time.perf_counter() - started)
            return PreparedData(splits, report, report_path, token_dir, list(tokenizer.styles))

        converted, skipped = convert_pieces(refs, cache_dir, num_proc, parse_timeout_s, limits)
        skipped = listed_skips + skipped
        kept, duplicates = dedupe_and_split(converted, val_fraction, test_fraction, split_salt)
        if not kept:
            raise NoUsablePiecesError(
                f"{source.name}: none of {len(refs)} pieces could be parsed; first reasons: "
                + "; ".join(f"{s['piece_id']}: {s['reason']}" for s in skipped[:3])
            )
        if tokenizer.learned_vocab_size is not None:
            learn_or_load(tokenizer, [p for p in kept if p["split"] == "train"], cache_dir / "vocab")
        encoded, tokenize_skips = tokenize_pieces(tokenizer, kept, limits, num_proc, tokenize_timeout_s)
        skipped += tokenize_skips
        rows = [(p, encoded[i]) for i, p in enumerate(kept) if i in encoded]
        table = datasets.Dataset.from_dict(
            {
                "piece_id": [p["piece_id"] for p, _ in rows],
                "style": [p["style"] for p, _ in rows],
                "style_id": [tokenizer.style_slot(p["style"]) for p, _ in rows],
                "split": [p["split"] for p, _ in rows],
                "n_notes": [p["n_notes"] for p, _ in rows],
                "score_path": [p["score_file"] for p, _ in rows],
                "ids": [ids.tolist() for _, (ids, _, _) in rows],
                "bar_ids": [bars.tolist() for _, (_, bars, _) in rows],
                "n_tokens": [len(ids) for _, (ids, _, _) in rows],
                "notes_in": [notes["notes_in"] for _, (_, _, notes) in rows],
                "notes_out": [notes["notes_out"] for _, (_, _, notes) in rows],
                "note_losses": [notes["note_losses"] for _, (_, _, notes) in rows],
            }
        )
        if len(table) == 0:
            raise NoUsablePiecesError(
                f"{source.name}: no piece survived tokenization with {tokenizer.name}; first reasons: "
                + "; ".join(f"{s['piece_id']}: {s['reason']}" for s in tokenize_skips[:3])
            )
        splits = datasets.DatasetDict(
            {s: table.filter(lambda r, s=s: r["split"] == s, new_fingerprint=f"{key}-{s}") for s in SPLITS}
        )
        report = _report(source, refs, tokenizer, splits, skipped, duplicates, time.perf_counter() - started)
        report["limits"] = limits.bounds()
        splits.save_to_disk(str(token_dir))
        tokenizer.save(token_dir)
        report_path.write_text(json.dumps(report, indent=2))
        log.info(
            "prepared %d pieces (%d skipped, %d duplicates) in %.1f s -> %s",
            sum(len(splits[s]) for s in SPLITS),
            len(skipped),
            len(duplicates),
            report["seconds"],
            token_dir,
        )
        report["cache_hit"] = False
        return PreparedData(splits, report, report_path, token_dir, list(tokenizer.styles))


STYLE_SLOTS_DIR = "style_slots"


def slot_map_path(source, cache_dir: str | Path) -> Path:
    """Where a source's style-to-slot map lives: one file per source identity (a folder, a corpus, a dataset)."""
    key = str(getattr(source, "slot_map_key", None) or source.name)
    return Path(cache_dir) / STYLE_SLOTS_DIR / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def assign_style_slots(source, tokenizer: LyriaTokenizer, cache_dir: str | Path) -> dict[str, int]:
    """Gives each of the source's styles its persisted slot, new styles the lowest slots no style of this source
    ever had, and writes the map back. Call under the cache lock. Returns the tokenizer's style slots."""
    path = slot_map_path(source, cache_dir)
    key = str(getattr(source, "slot_map_key", None) or source.name)
    persisted: dict[str, int] = {}
    if path.is_file():
        try:
            persisted = {str(k): int(v) for k, v in json.loads(path.read_text())["slots"].items()}
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a style slot map ({err}); delete it to assign slots afresh") from err
    usable = tokenizer.num_style_slots - 1
    for style in source.style_names:
        if style in tokenizer.style_slots:
            continue
        slot = persisted.get(style)
        if slot is None or slot >= usable or slot in tokenizer.style_slots.values():
            taken = set(persisted.values()) | set(tokenizer.style_slots.values())
            slot = next((s for s in range(usable) if s not in taken), None)
            if slot is None:  # every slot this source ever used is taken: reuse one no current style holds
                slot = next((s for s in range(usable) if s not in tokenizer.style_slots.values()), None)
            if slot is None:
                tokenizer.add_style(style)  # raises, naming num_style_slots
            persisted = {k: v for k, v in persisted.items() if v != slot}
            persisted[style] = slot
        tokenizer.add_style(style, slot)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"source": key, "slots": dict(sorted(persisted.items(), key=lambda kv: kv[1]))}, indent=2))
    os.replace(tmp, path)
    return dict(tokenizer.style_slots)


def _report(source, refs, tokenizer, splits, skipped, duplicates, seconds) -> dict:
    per_style: dict[str, dict[str, Any]] = {}
    def empty() -> dict[str, Any]:
        return {s: 0 for s in SPLITS} | {"tokens": 0, "notes_in": 0, "notes_out": 0, "notes_lost": dict.fromkeys(NOTE_LOSS_REASONS, 0)}

    for split in SPLITS:
        columns = splits[split].select_columns(["style", "n_tokens", "notes_in", "notes_out", "note_losses"]).to_dict()
        for style, n_tokens, notes_in, notes_out, losses in zip(*columns.values()):
            entry = per_style.setdefault(style, empty())
            entry[split] += 1
            entry["tokens"] += n_tokens
            entry["notes_in"] += notes_in
            entry["notes_out"] += notes_out
            for reason, count in losses.items():
                entry["notes_lost"][reason] += count
    for skip in skipped:
        if skip["style"] in tokenizer.styles:  # not a style the source set aside as unlisted
            per_style.setdefault(skip["style"], empty())
    for entry in per_style.values():
        # what the named reasons do not explain (e.g. MidiTok merging notes that share pitch, onset and track)
        named = sum(entry["notes_lost"][reason] for reason in NOTES_REMOVED)
        entry["notes_lost"]["other"] = entry["notes_in"] - entry["notes_out"] - named
    notes_in = sum(e["notes_in"] for e in per_style.values())
    notes_out = sum(e["notes_out"] for e in per_style.values())
    return {
        "source": source.name,
        "tokenizer": tokenizer.name,
        "styles": list(tokenizer.styles),
        "style_slots": dict(tokenizer.style_slots),
        "pieces_listed": len(refs),
        "pieces": {s: len(splits[s]) for s in SPLITS},
        "per_style": per_style,
        "skipped_count": len(skipped),
        "skipped_by_stage": dict(sorted(Counter(s["stage"] for s in skipped).items())),
        "skipped": sorted(skipped, key=lambda s: s["piece_id"]),
        "duplicates_removed": len(duplicates),
        "duplicates": duplicates,
        # notes of the kept pieces before and after tokenization, and why notes went missing or changed (per style
        # in per_style): counts of notes, except tempo_changes_dropped (tempo events)
        "notes": {"in": notes_in, "out": notes_out,
                  "lost": {r: sum(e["notes_lost"][r] for e in per_style.values()) for r in (*NOTE_LOSS_REASONS, "other")}},
        "mean_tokens_per_piece": float(np.mean(splits["train"]["n_tokens"])) if len(splits["train"]) else 0.0,
        "seconds": round(seconds, 2),
    }
