"""The evaluation contract: sets of pieces in the note schema, metric families and per-piece metrics by name.

A family compares a generated set with a reference set (and the training set where it needs one) and
returns plain finite numbers, or None with the reason; per-piece values are arrays aligned with the
generated set's pieces, so that a leaderboard can bootstrap over pieces and pair them across runs.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from lyria.config import ConfigError
from lyria.data.notes import NOTE_DTYPE, PieceNotes

__all__ = ["NOTE_DTYPE", "PieceNotes", "PieceSet", "EvalInputs", "FamilyResult", "Family", "FAMILIES", "PIECE_METRICS"]


@dataclass
class PieceSet:
    """Named pieces with their styles (None: unknown) and, for generated sets, each sample's index entry.

    `cache` holds what several families derive from the same pieces (feature table, evaluation tokens),
    computed once per set; `key` identifies the pieces when they come from a dataset (an asset hash).
    """

    label: str
    names: list[str]
    pieces: Sequence[PieceNotes]  # a list, or pieces read on first use (sets.CachedScores)
    styles: list[str | None]
    entries: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    key: str | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.pieces) == len(self.styles)):
            raise ValueError(f"{self.label}: {len(self.names)} names, {len(self.pieces)} pieces, {len(self.styles)} styles")
        if not self.entries:
            self.entries = [{} for _ in range(len(self.pieces))]

    def __len__(self) -> int:
        return len(self.pieces)

    def cached(self, name: str, compute: Callable[[], Any]) -> Any:
        if name not in self.cache:
            self.cache[name] = compute()
        return self.cache[name]

    def subset(self, indices: Sequence[int], label: str | None = None) -> "PieceSet":
        """The chosen pieces (per-piece cached arrays follow them; set-level caches do not)."""
        indices = [int(i) for i in indices]
        cache = {
            name: value.take(indices) if hasattr(value, "take") else value
            for name, value in self.cache.items()
            if name in _PER_PIECE_CACHES
        }
        return PieceSet(
            label or self.label,
            [self.names[i] for i in indices],
            [self.pieces[i] for i in indices],
            [self.styles[i] for i in indices],
            [self.entries[i] for i in indices],
            [],
            None,
            cache,
        )

    @property
    def has_styles(self) -> bool:
        return any(style is not None for style in self.styles)


# caches whose value has `take(indices)` (one row per piece), so a subset keeps them
_PER_PIECE_CACHES = {"features", "eval_tokens"}


@dataclass
class EvalInputs:
    """What a family may read: the generated set, the reference, the training set, shared settings and services.

    `assets` caches expensive derived data (an `AssetStore`, or None to compute everything afresh);
    `model` is the checkpoint's model with held-out pieces (coherence.ModelInputs) when the generated set
    names one; `ground_truth` the real piece each generated sample continues or fills (None where none);
    `data` the prepared data (lyria.data.prepare.PreparedData) the reference and training sets come from.
    """

    generated: PieceSet
    reference: PieceSet
    train: PieceSet | None = None
    seed: int = 0
    feature_settings: Any = None
    assets: Any = None
    model: Any = None
    ground_truth: list[PieceNotes | None] | None = None
    data: Any = None
    role: str = "generated"  # "generated", or "baseline" for the real-vs-real pass


@dataclass
class FamilyResult:
    """One family's numbers. `unavailable` maps a metric (or "*" for the whole family) to why it has no value."""

    values: dict[str, float | None] = field(default_factory=dict)
    per_piece: dict[str, np.ndarray] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    assets: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def not_available(cls, reason: str) -> "FamilyResult":
        return cls(unavailable={"*": reason})

    def set(self, name: str, value: Any, reason: str = "not defined for these pieces") -> None:
        """Stores a finite float, or None with `reason` when the value is missing or not finite."""
        number = plain_number(value)
        self.values[name] = number
        if number is None:
            self.unavailable.setdefault(name, reason)


def plain_number(value: Any) -> float | None:
    """A finite Python float, or None (NaN, inf and None all become None)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def nanmean(values: np.ndarray) -> float:
    """Mean over the finite entries; NaN when there are none (without numpy's empty-slice warning)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan


class Family:
    """A metric family: `compute(inputs) -> FamilyResult`. Subclasses set `name` and register themselves.

    `needs_train`: the family compares with the training set (memorization); `baseline`: whether the
    real-vs-real pass runs it too (a family about the model itself, such as style fidelity, may not).
    """

    name: str = ""
    needs_train: bool = False
    baseline: bool = True

    def compute(self, inputs: EvalInputs) -> FamilyResult:
        raise NotImplementedError

    def settings(self) -> dict:
        """The settings that change this family's numbers (recorded in metrics.json and asset keys)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


FAMILIES: dict[str, type[Family]] = {}


def register_family(cls: type[Family]) -> type[Family]:
    if not cls.name or cls.name in FAMILIES:
        raise ValueError(f"metric family {cls.__name__} needs a unique name, got {cls.name!r}")
    FAMILIES[cls.name] = cls
    return cls


@dataclass(frozen=True)
class PieceMetric:
    """A per-piece metric: `fn(piece, **settings) -> float`, NaN where it is not defined for the piece."""

    name: str
    family: str
    fn: Callable[..., float]


PIECE_METRICS: dict[str, PieceMetric] = {}


def piece_metric(family: str, name: str | None = None) -> Callable[[Callable], Callable]:
    """Registers a per-piece metric function under its name (the function's own name by default)."""

    def decorate(fn: Callable) -> Callable:
        key = name or fn.__name__
        if key in PIECE_METRICS:
            raise ValueError(f"per-piece metric {key!r} is registered twice")
        PIECE_METRICS[key] = PieceMetric(key, family, fn)
        return fn

    return decorate


def metrics_of(family: str) -> list[str]:
    return [name for name, metric in PIECE_METRICS.items() if metric.family == family]


def check_metric_names(family: str, names: Sequence[str] | None, where: str) -> list[str]:
    """The chosen per-piece metrics of `family` (all when None); an unknown name fails naming the choices."""
    known = metrics_of(family)
    if names is None:
        return known
    for metric in names:
        if metric not in known:
            hint = difflib.get_close_matches(str(metric), known, n=1)
            raise ConfigError(
                f"{where}: unknown {family} metric {metric!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" Known: {known}"
            )
    return list(names)
