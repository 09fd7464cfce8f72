"""The renderer contract: a renderer writes Scores in one format; formats register by name (`render.formats`).

A renderer that fails on a piece costs that piece that format only: the failure and its reason are reported,
the other formats are still written, and no partial file is left behind.
"""

from __future__ import annotations

import difflib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence, TypeVar

from symusic import Score

from lyria.config import ConfigError
from lyria.errors import DiskFullError, is_disk_full

T = TypeVar("T")


class Registry:
    """Names a user may write in a config, mapped to lyria's own classes (the allow-list for that key)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def add(cls: type[T]) -> type[T]:
            if name in self._classes:
                raise ValueError(f"{self.key}: '{name}' is registered twice ({self._classes[name].__name__}, {cls.__name__})")
            self._classes[name] = cls
            return cls

        return add

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str, where: str | None = None) -> type:
        if name not in self._classes:
            hint = difflib.get_close_matches(str(name), self.names(), n=1)
            raise ConfigError(
                f"{where or self.key}: unknown choice '{name}'"
                + (f"; did you mean '{hint[0]}'?" if hint else "")
                + f" Allowed: {self.names()}"
            )
        return self._classes[name]


class Renderer(ABC):
    """Writes one format. `suffix` names the file type; `from_settings` reads the `render` config section."""

    suffix: ClassVar[str]

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Renderer:
        return cls()

    @abstractmethod
    def write(self, score: Score, path: Path) -> None:
        """Writes `score` to `path`; raises with a reason the user can act on when the score cannot be written."""

    def write_batch(self, scores: Sequence[Score], paths: Sequence[Path]) -> None:
        """Several pieces at once; renderers that gain from batching (audio) override it."""
        for score, path in zip(scores, paths):
            self.write(score, path)


FORMATS = Registry("render.formats")


def check_length(score: Score, max_seconds: float) -> None:
    """Refuses a piece longer than `max_seconds`: an undertrained model can place a note hours in, and the
    formats whose cost grows with the length (audio, sheet music) would then exhaust memory or time."""
    seconds = score.to("second").end() if score.note_num() else 0.0
    if seconds > max_seconds:
        raise ValueError(f"the piece lasts {seconds:.0f} s, longer than render.max_seconds={max_seconds:g}")


@dataclass
class Rendered:
    """What one piece became: a file per format written, a reason per format that failed."""

    files: dict[str, Path] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def build_renderers(settings: Mapping[str, Any]) -> dict[str, Renderer]:
    """One renderer per name in `settings["formats"]`; an unknown name is a ConfigError listing the formats."""
    formats = list(settings["formats"])
    if len(set(formats)) != len(formats):
        raise ConfigError(f"render.formats lists a format twice: {formats}")
    return {name: FORMATS.get(name, f"render.formats[{i}]").from_settings(settings) for i, name in enumerate(formats)}


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp{path.suffix}")  # keeps the suffix: some writers pick the format by it


def render_batch(scores: Sequence[Score], stems: Sequence[str | Path], renderers: Mapping[str, Renderer]) -> list[Rendered]:
    """Writes `stem + suffix` for every piece and format; a batch that fails is retried piece by piece, so a
    failure is charged to the piece that caused it."""
    stems = [Path(stem) for stem in stems]
    for stem in stems:
        stem.parent.mkdir(parents=True, exist_ok=True)
    results = [Rendered() for _ in scores]
    for name, renderer in renderers.items():
        paths = [stem.with_name(stem.name + renderer.suffix) for stem in stems]
        temporary = [_temporary(path) for path in paths]
        try:
            renderer.write_batch(scores, temporary)
            outcomes: list[Exception | None] = [None] * len(scores)
        except Exception:  # noqa: BLE001  (find which piece failed, below)
            outcomes = []
            for score, tmp in zip(scores, temporary):
                try:
                    renderer.write(score, tmp)
                    outcomes.append(None)
                except Exception as err:  # noqa: BLE001  (every library raises its own types; reported per piece)
                    outcomes.append(err)
        full = next((err for err in outcomes if err is not None and is_disk_full(err)), None)
        if full is not None:  # not a fault of the piece: stop, keeping every file written so far
            for tmp in temporary:
                tmp.unlink(missing_ok=True)
            raise DiskFullError(
                f"disk full while writing {renderer.suffix} files in {stems[0].parent} (files written before are intact); "
                "free some space and run again"
            ) from full
        for result, path, tmp, err in zip(results, paths, temporary, outcomes):
            if err is None and tmp.is_file():
                os.replace(tmp, path)
                result.files[name] = path
            else:
                tmp.unlink(missing_ok=True)
                result.failures[name] = _reason(err) if err else f"{type(renderer).__name__} wrote no file"
    return results


def render(score: Score, stem: str | Path, renderers: Mapping[str, Renderer]) -> Rendered:
    """Writes one piece in every format of `renderers` (see `build_renderers`)."""
    return render_batch([score], [stem], renderers)[0]
