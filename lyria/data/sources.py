"""Data sources: each lists its pieces as `PieceRef`s (id, style, how to parse) without parsing them.

Parsing happens later, isolated, in worker processes (lyria.data.isolated); a source only reads
directory listings and, for ABC collections, the text it splits into tunes.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from lyria.data import convert

MIDI_SUFFIXES = (".mid", ".midi")


@dataclass(frozen=True)
class PieceRef:
    """One piece to parse: `parse(*args)` returns a symusic Score. `fingerprint` changes when the input does."""

    piece_id: str
    style: str
    parse: Callable
    args: tuple
    fingerprint: str
    origin: str

    def load(self):
        return self.parse(*self.args)


@dataclass(frozen=True)
class StyleSpec:
    """A style of the music21 corpus: its label, the corpus folder and the file types to read."""

    name: str
    composer: str
    extensions: Sequence[str]


def _file_fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{int(stat.st_mtime)}"


def _spread_order(piece_ids: list[str]) -> list[str]:
    """A fixed order that is not alphabetical, so a bounded subset samples the whole collection.

    Salted differently from the split hash: otherwise the first N pieces would all share one split.
    """
    return sorted(piece_ids, key=lambda pid: hashlib.sha1(f"order:{pid}".encode()).hexdigest())


_ABC_TUNE_START = re.compile(r"^X:", re.MULTILINE)


def split_abc(text: str) -> list[tuple[str, str]]:
    """Splits an ABC collection into (tune number, tune text with the file header prepended)."""
    starts = [m.start() for m in _ABC_TUNE_START.finditer(text)]
    if not starts:
        return []
    header = text[: starts[0]].strip()
    tunes = []
    for begin, end in zip(starts, starts[1:] + [len(text)]):
        body = text[begin:end].strip()
        number = body.splitlines()[0][2:].strip() or str(len(tunes) + 1)
        tunes.append((number, f"{header}\n\n{body}\n" if header else f"{body}\n"))
    return tunes


class Music21CorpusSource:
    """Pieces bundled with music21 (no network); ABC collections become one piece per tune."""

    def __init__(self, styles: Sequence[dict | StyleSpec]) -> None:
        self.styles = [s if isinstance(s, StyleSpec) else StyleSpec(**s) for s in styles]
        if not self.styles:
            raise ValueError("data.source.styles is empty: name at least one music21 corpus folder")

    @property
    def name(self) -> str:
        return "music21 corpus (" + ", ".join(s.composer for s in self.styles) + ")"

    # one style-to-slot map for the whole corpus, whichever of its folders a config names
    slot_map_key = "music21 corpus"

    @property
    def style_names(self) -> list[str]:
        return [s.name for s in self.styles]

    def pieces(self, max_pieces_per_style: int | None = None) -> list[PieceRef]:
        from music21 import corpus

        corpus_root = Path(corpus.__file__).parent
        refs: list[PieceRef] = []
        for spec in self.styles:
            suffixes = {"." + e.lstrip(".").lower() for e in spec.extensions}
            paths = sorted(
                Path(str(p)) for p in corpus.getComposer(spec.composer) if Path(str(p)).suffix.lower() in suffixes
            )
            if not paths:
                raise ValueError(
                    f"music21 corpus folder {spec.composer!r} (style {spec.name!r}) has no {sorted(suffixes)} files"
                )
            style_refs: dict[str, PieceRef] = {}
            for path in paths:
                rel = path.relative_to(corpus_root).as_posix()
                if path.suffix.lower() == ".abc":
                    for number, tune in split_abc(path.read_text(encoding="latin-1")):
                        pid = f"{rel}#{number}"
                        digest = hashlib.sha1(tune.encode()).hexdigest()
                        style_refs[pid] = PieceRef(pid, spec.name, convert.parse_abc_tune, (tune,), digest, rel)
                else:
                    style_refs[rel] = PieceRef(
                        rel, spec.name, convert.parse_music21_file, (str(path),), _file_fingerprint(path), rel
                    )
            order = _spread_order(list(style_refs))
            if max_pieces_per_style is not None:
                order = order[:max_pieces_per_style]
            refs.extend(style_refs[pid] for pid in order)
        return refs


class MidiFolderSource:
    """Every .mid/.midi file under `path`; the style is the first sub-folder's name, or a CSV's label."""

    def __init__(
        self,
        path: str,
        styles_csv: str | None = None,
        default_style: str = "default",
        styles: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(os.path.expanduser(str(path)))
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.path={path!r} is not a directory")
        self.default_style = default_style
        self.csv_styles = self._read_csv(styles_csv) if styles_csv else None
        self._styles = list(styles) if styles else None
        # files whose style is not in `styles`: counted skips in the data report (filled by `pieces`)
        self.skipped: list[dict] = []

    def _read_csv(self, styles_csv: str) -> dict[str, str]:
        path = Path(styles_csv)
        if not path.is_absolute():
            path = self.root / path
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"path", "style"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: a styles CSV needs the columns 'path' and 'style', found {reader.fieldnames}")
            return {row["path"]: row["style"] for row in reader}

    @property
    def name(self) -> str:
        return f"MIDI folder {self.root}"

    def _files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES)

    def _style_of(self, rel: Path) -> str:
        if self.csv_styles is not None:
            return self.csv_styles.get(rel.as_posix(), self.default_style)
        return rel.parts[0] if len(rel.parts) > 1 else self.default_style

    @property
    def style_names(self) -> list[str]:
        if self._styles is not None:
            return self._styles
        return sorted({self._style_of(p.relative_to(self.root)) for p in self._files()})

    def pieces(self, max_pieces_per_style: int | None = None) -> list[PieceRef]:
        by_style: dict[str, list[PieceRef]] = {}
        self.skipped = []
        for path in self._files():
            rel = path.relative_to(self.root)
            style = self._style_of(rel)
            if self._styles is not None and style not in self._styles:
                self.skipped.append({
                    "piece_id": rel.as_posix(), "style": style, "origin": str(path), "stage": "list",
                    "reason": f"style {style!r} is not in data.source.styles {self._styles}",
                })
                continue
            ref = PieceRef(rel.as_posix(), style, convert.read_midi_file, (str(path),), _file_fingerprint(path), str(path))
            by_style.setdefault(style, []).append(ref)
        refs = []
        for style in sorted(by_style):
            chosen = {r.piece_id: r for r in by_style[style]}
            order = _spread_order(list(chosen))
            if max_pieces_per_style is not None:
                order = order[:max_pieces_per_style]
            refs.extend(chosen[pid] for pid in order)
        return refs
