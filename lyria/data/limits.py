"""Bounds on one input piece: file size, notes, length in quarter notes and in seconds, tokens.

Every path that reads music from outside (data preparation, `prompt=` / `infill=`, evaluation folders)
checks a piece against these bounds, as early as each can be known: the file size before parsing, the
notes and the length after parsing and before the notes are converted or tokenized, the tokens after
tokenizing. A piece over a bound is refused with a one-line reason (`LimitExceeded`); data preparation
and evaluation count it as a skip, lyria-generate stops with the reason.

The defaults lie far above real music (a four-hour opera in one file, every note of a large orchestral
score) and far below what exhausts memory or time: a hostile file with huge delta times spans millions of
quarter notes, and a tokenizer writes a Bar token for each of its empty bars.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

DEFAULT_MAX_FILE_BYTES = 10 * 2**20
DEFAULT_MAX_NOTES = 200_000
DEFAULT_MAX_BEATS = 100_000.0
DEFAULT_MAX_SECONDS = 4 * 3600.0
DEFAULT_MAX_TOKENS = 2_000_000


class LimitExceeded(ValueError):
    """A piece (or its file) is over one of the configured bounds; the message names the bound and the setting."""

    refusal = True  # a reason, not a fault: reported without a traceback location


@dataclass(frozen=True)
class InputLimits:
    """Per-piece bounds; None turns one off. `where` is the config prefix the messages name (e.g. data.limits)."""

    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES
    max_notes: int | None = DEFAULT_MAX_NOTES
    max_beats: float | None = DEFAULT_MAX_BEATS
    max_seconds: float | None = DEFAULT_MAX_SECONDS
    max_tokens: int | None = DEFAULT_MAX_TOKENS
    where: str = "data.limits"

    def __post_init__(self) -> None:
        for name, value in self.bounds().items():
            if value is not None and not value > 0:
                raise ValueError(f"{self.where}.{name}={value}: a bound must be positive, or null to turn it off")

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None, where: str = "data.limits") -> "InputLimits":
        """From a config node (missing keys keep their defaults)."""
        values = dict(node or {})
        unknown = sorted(set(values) - set(cls.__dataclass_fields__) - {"where"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(cls().bounds())}")
        values.pop("where", None)
        return cls(**values, where=where)

    def bounds(self) -> dict[str, Any]:
        """The bounds by name (what the data cache key and the report record)."""
        values = asdict(self)
        values.pop("where")
        return values

    def _refuse(self, what: str, value: float, name: str, bound: float, unit: str = "") -> None:
        raise LimitExceeded(f"{what} {value:,.0f}{unit} > {self.where}.{name}={bound:,.0f}")

    def check_file(self, path: str | Path) -> int:
        """The file's size in bytes; refuses a file over `max_file_bytes` before anything reads it."""
        size = os.stat(path).st_size
        self.check_bytes(size)
        return size

    def check_bytes(self, size: int) -> None:
        if self.max_file_bytes is not None and size > self.max_file_bytes:
            self._refuse("file size", size, "max_file_bytes", self.max_file_bytes, " bytes")

    def check_score(self, score) -> None:
        """Notes, then length in quarter notes, then in seconds, of a parsed symusic Score (cheap: no copy of
        the notes unless the first two pass)."""
        notes = int(score.note_num())
        if self.max_notes is not None and notes > self.max_notes:
            self._refuse("notes", notes, "max_notes", self.max_notes)
        if self.max_beats is None and self.max_seconds is None:
            return
        beats = score_beats(score)
        if self.max_beats is not None and beats > self.max_beats:
            self._refuse("length", beats, "max_beats", self.max_beats, " quarter notes")
        if self.max_seconds is not None:
            seconds = score_seconds(score)
            if seconds > self.max_seconds:
                self._refuse("length", seconds, "max_seconds", self.max_seconds, " s")

    def check_meta(self, meta: Mapping[str, Any]) -> None:
        """The same bounds on a converted piece's cached metadata (n_notes, length_beats, length_seconds)."""
        if self.max_notes is not None and meta["n_notes"] > self.max_notes:
            self._refuse("notes", meta["n_notes"], "max_notes", self.max_notes)
        if self.max_beats is not None and meta["length_beats"] > self.max_beats:
            self._refuse("length", meta["length_beats"], "max_beats", self.max_beats, " quarter notes")
        if self.max_seconds is not None and meta["length_seconds"] > self.max_seconds:
            self._refuse("length", meta["length_seconds"], "max_seconds", self.max_seconds, " s")

    def check_tokens(self, count: int) -> None:
        if self.max_tokens is not None and count > self.max_tokens:
            self._refuse("tokens", count, "max_tokens", self.max_tokens)


def _tracks_end(score) -> float:
    """The end of the last event of any track (notes, controls, pedals, bends; 0 when none), in the score's unit.

    Global events (tempos, time signatures, markers) do not count: tokens hold no time past the last note."""
    return float(max((track.end() for track in score.tracks), default=0))


def score_beats(score) -> float:
    """How long the tracks of a Score last, in quarter notes."""
    if score.ttype == "Tick":
        return _tracks_end(score) / max(1, score.ticks_per_quarter)
    return _tracks_end(score if score.ttype == "Quarter" else score.to("quarter"))


def score_seconds(score) -> float:
    """How long the tracks of a Score last, in seconds (through its tempo map)."""
    return _tracks_end(score if score.ttype == "Second" else score.to("second"))


__all__ = ["InputLimits", "LimitExceeded", "score_beats", "score_seconds"]
