"""Hugging Face datasets as a source: a column of MIDI bytes (or file paths), local or from the Hub, optionally streamed.

Listing reads only the id, style and a content hash of each row; parsing happens later in isolated
workers like every other source. A loaded (memory-mapped) dataset is reopened once per worker process
and rows are read by index, so a large dataset never travels through the worker pipes. A streamed
dataset cannot be indexed: its rows are read while listing (up to `max_pieces_per_style` per style)
and their bytes go to the workers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lyria.data import convert
from lyria.data.sources import PieceRef, _spread_order

# A local data file given as data.name is read with the packaged builder of its format.
_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}
_OPEN: dict[tuple, Any] = {}  # per process: loaded datasets by their load arguments


@dataclass(frozen=True)
class DatasetHandle:
    """How to (re)open one split of a dataset; small and picklable, so workers can open it themselves."""

    path: str
    split: str
    data_files: tuple[str, ...] | None = None
    config_name: str | None = None
    revision: str | None = None
    cache_dir: str | None = None
    streaming: bool = False

    @classmethod
    def from_name(cls, name: str, split: str, data_files: Sequence[str] | str | None = None, **kwargs) -> "DatasetHandle":
        local = Path(name).expanduser()
        if local.is_file() and local.suffix.lower() in _FILE_BUILDERS and data_files is None:
            return cls(_FILE_BUILDERS[local.suffix.lower()], split, (str(local.resolve()),), **kwargs)
        files = (data_files,) if isinstance(data_files, str) else tuple(data_files) if data_files else None
        return cls(str(local.resolve()) if local.exists() else name, split, files, **kwargs)

    def open(self):
        key = (self.path, self.split, self.data_files, self.config_name, self.revision, self.cache_dir, self.streaming)
        if key not in _OPEN:
            import datasets

            _OPEN[key] = datasets.load_dataset(
                self.path,
                name=self.config_name,
                split=self.split,
                data_files=list(self.data_files) if self.data_files else None,
                revision=self.revision,
                cache_dir=self.cache_dir,
                streaming=self.streaming,
            )
        return _OPEN[key]


def parse_midi_value(value: Any):
    """One cell of the MIDI column: bytes, a path, or HF's {"bytes": ..., "path": ...} struct -> Score."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return convert.read_midi_bytes(bytes(value))
    if isinstance(value, str):
        return convert.read_midi_file(value)
    raise convert.EmptyPieceError(f"no MIDI in this row (found {type(value).__name__})")


parse_midi_value.reads = "value"


def read_row(handle: DatasetHandle, column: str, index: int):
    """Worker: open the dataset (once per process) and parse row `index`."""
    return parse_midi_value(handle.open()[index][column])


def _content_digest(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, str) and Path(value).is_file():
        stat = Path(value).stat()
        return f"{value}:{stat.st_size}:{int(stat.st_mtime)}"
    data = bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else repr(value).encode()
    return hashlib.sha1(data).hexdigest()


@dataclass
class HFDatasetSource:
    """Rows of a Hugging Face dataset; the style is `style_column`'s value (or `default_style`)."""

    name: str
    column: str
    split: str = "train"
    style_column: str | None = None
    id_column: str | None = None
    default_style: str = "default"
    styles: Sequence[str] | None = None
    streaming: bool = False
    data_files: Any = None
    config_name: str | None = None
    revision: str | None = None
    cache_dir: str | None = None
    _listings: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name or not self.column:
            raise ValueError("data=hf_dataset needs data.name (a Hub id, a folder or a data file) and data.column (the MIDI column)")
        if self.streaming and self.style_column and not self.styles:
            raise ValueError(
                "data.streaming=true with data.source.style_column: list the styles in data.source.styles "
                "(a stream cannot be scanned for them without reading all of it)"
            )
        self.handle = DatasetHandle.from_name(
            str(self.name), self.split, self.data_files, config_name=self.config_name, revision=self.revision,
            cache_dir=str(self.cache_dir) if self.cache_dir else None, streaming=bool(self.streaming),
        )

    def _dataset(self):
        try:
            dataset = self.handle.open()
        except Exception as err:
            raise ValueError(f"data.name={self.name!r}: cannot load split {self.split!r}: {type(err).__name__}: {err}") from err
        columns = list(dataset.features) if dataset.features is not None else None
        for key, wanted in (("data.column", self.column), ("data.source.style_column", self.style_column), ("data.source.id_column", self.id_column)):
            if wanted is not None and columns is not None and wanted not in columns:
                raise ValueError(f"{key}={wanted!r} is not a column of {self.name}; its columns are {columns}")
        return dataset

    def _style_of(self, row: dict) -> str:
        value = row.get(self.style_column) if self.style_column else None
        return str(value) if value not in (None, "") else self.default_style

    @property
    def style_names(self) -> list[str]:
        if self.styles:
            return list(self.styles)
        if self.style_column is None:
            return [self.default_style]
        return sorted({self._style_of({self.style_column: v}) for v in self._dataset().unique(self.style_column)})

    def _ref(self, row: dict, index: int, parse, args) -> PieceRef:
        piece_id = str(row[self.id_column]) if self.id_column else f"{self.split}/{index:07d}"
        return PieceRef(piece_id, self._style_of(row), parse, args, _content_digest(row[self.column]), f"{self.name}[{self.split}]#{index}")

    def _streamed(self, max_pieces_per_style: int | None) -> dict[str, list[PieceRef]]:
        """Reads the stream until every style has its pieces (to its end when unbounded)."""
        styles = self.style_names
        by_style: dict[str, list[PieceRef]] = {s: [] for s in styles}
        for index, row in enumerate(self._dataset()):
            bucket = by_style.get(self._style_of(row))
            if bucket is None or (max_pieces_per_style is not None and len(bucket) >= max_pieces_per_style):
                continue
            bucket.append(self._ref(row, index, parse_midi_value, (row[self.column],)))
            if max_pieces_per_style is not None and all(len(b) >= max_pieces_per_style for b in by_style.values()):
                break
        return by_style

    def _indexed(self) -> dict[str, list[PieceRef]]:
        """Every row by index (its MIDI read only to hash it), in a fixed spread order per style."""
        dataset = self._dataset()
        wanted = set(self.style_names)
        by_style: dict[str, dict[str, PieceRef]] = {}
        columns = [c for c in (self.column, self.style_column, self.id_column) if c]
        for index, row in enumerate(dataset.select_columns(columns)):
            ref = self._ref(row, index, read_row, (self.handle, self.column, index))
            if ref.style in wanted:
                by_style.setdefault(ref.style, {})[ref.piece_id] = ref
        return {style: [refs[pid] for pid in _spread_order(list(refs))] for style, refs in by_style.items()}

    def pieces(self, max_pieces_per_style: int | None = None) -> list[PieceRef]:
        key = max_pieces_per_style if self.streaming else None
        if key not in self._listings:
            self._listings[key] = self._streamed(max_pieces_per_style) if self.streaming else self._indexed()
        refs = []
        for _, style_refs in sorted(self._listings[key].items()):
            refs.extend(style_refs if max_pieces_per_style is None else style_refs[:max_pieces_per_style])
        return refs
