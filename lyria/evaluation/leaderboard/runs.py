"""Runs under a folder (metrics.json and/or summary.json beside a resolved training config), read as data, and
grouped by config over seeds; a run whose files cannot be used is a `Skip` with the reason, never an exception."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Iterable

import yaml
from omegaconf import OmegaConf
from tqdm import tqdm

METRICS_FILE = "metrics.json"
SUMMARY_FILE = "summary.json"
# The training's own resolved copy first: Hydra's copy is unresolved and may belong to another app (generate, evaluate).
TRAIN_CONFIG_FILES = ("checkpoints/config.yaml", ".hydra/config.yaml")
OVERRIDES_FILE = ".hydra/overrides.yaml"
# Hydra records the chosen option of every config group (`model/mixer: attention_rope`) here.
HYDRA_FILE = ".hydra/hydra.yaml"
# A training config has a model; the configs of the generate and evaluate apps do not.
TRAIN_CONFIG_KEY = "model"
# Top-level objects of metrics.json that describe the evaluation rather than hold a metric family (timings and
# settings are numbers too, so they must be named here).
METRICS_DESCRIPTION_KEYS = (
    "version", "assets", "generated", "reference", "baseline_sets", "settings", "per_piece", "baseline", "per_style",
    "baseline_per_style", "unavailable", "seconds",
)
REFERENCE_FAMILIES_KEY = "baseline"
TRAIN_PREFIX = "train"
PIECE_PREFIX = "piece"
SAMPLE_SUFFIXES = (".mid", ".midi", ".wav", ".png")
DEFAULT_SAMPLES_DIR = "samples"


@dataclass
class Sample:
    """One generated piece: its name and its files by suffix (.mid, .wav, .png)."""

    name: str
    files: dict[str, Path]


@dataclass
class Run:
    """One run: where it is, its flattened config, its metrics and per-piece values."""

    path: Path
    config: dict[str, Any]
    overrides: list[str]
    seed: Any
    metrics: dict[str, float]
    choices: dict[str, str] = field(default_factory=dict)
    per_piece: dict[str, dict[str, float]] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Skip:
    path: Path
    reason: str


@dataclass
class Group:
    """Runs that share a config up to the ignored keys (seed, paths, ...): one row of the leaderboard."""

    key: str
    label: str
    runs: list[Run]
    # `key=value` strings true of every run: label parts, shared overrides (ignored keys left out), Hydra choices.
    settings: list[str] = field(default_factory=list)

    def describes(self, setting: str) -> bool:
        """Whether `setting` is one of this group's settings: `model/mixer=hierarchical`, or just `hierarchical`."""
        if "=" in setting:
            return setting in self.settings
        return any(known.split("=", 1)[1] == setting for known in self.settings if "=" in known)


class RunFileError(ValueError):
    """A run file that cannot be used; the message names the file and what is wrong."""


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys; lists and scalars are leaves."""
    if not isinstance(node, dict):
        return {prefix: node} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch(name, pattern) for pattern in patterns)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _numbers(flat: dict[str, Any], where: str, notes: list[str]) -> dict[str, float]:
    """The numeric leaves; non-finite ones are left out with a note (strings and lists are descriptions)."""
    numbers = {}
    for name, value in flat.items():
        number = _number(value)
        if number is None:
            continue
        if math.isfinite(number):
            numbers[name] = number
        else:
            notes.append(f"{where}: '{name}' is {value}, left out")
    return numbers


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunFileError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RunFileError(f"{path}: cannot be read ({err})") from None
    if not isinstance(data, dict):
        raise RunFileError(f"{path}: expected a JSON object at the top, found {type(data).__name__}")
    return data


def _read_yaml(path: Path) -> Any:
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except (OSError, yaml.YAMLError, ValueError) as err:
        raise RunFileError(f"{path}: not a readable YAML config ({str(err).splitlines()[0]})") from None


def _is_train_config(path: Path) -> bool:
    """Whether `path` is a training config; an unreadable one counts, so that loading reports it."""
    try:
        return TRAIN_CONFIG_KEY in (yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError, TypeError):
        return True


def _train_config(folder: Path) -> Path | None:
    return next((folder / name for name in TRAIN_CONFIG_FILES if (folder / name).is_file() and _is_train_config(folder / name)), None)


def _hydra_of_training(folder: Path) -> bool:
    """Whether `folder/.hydra` was written by the training: another app run in the same folder (an evaluation
    with hydra.run.dir=RUN) replaces it, and its overrides would then describe that app, not the run."""
    config = folder / TRAIN_CONFIG_FILES[1]
    return config.is_file() and _is_train_config(config)


def _run_folder(found: Path, root: Path) -> Path:
    """The nearest folder from `found` up to `root` that holds a training config; `found` itself when none does."""
    for folder in (found, *found.parents):
        if _train_config(folder) is not None:
            return folder
        if folder == root:
            break
    return found


def _metric_families(metrics: dict, path: Path, notes: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Run-level metrics (`family.metric`) and the real-vs-real reference values of the same families."""
    families = {k: v for k, v in metrics.items() if k not in METRICS_DESCRIPTION_KEYS and isinstance(v, dict)}
    reference = metrics.get(REFERENCE_FAMILIES_KEY) or {}
    if not isinstance(reference, dict):
        raise RunFileError(f"{path}: '{REFERENCE_FAMILIES_KEY}' should map metric families to values, found {type(reference).__name__}")
    return _numbers(flatten(families), str(path), notes), _numbers(flatten(reference), f"{path} ({REFERENCE_FAMILIES_KEY})", notes)


def _per_piece(metrics: dict, run_metrics: dict[str, float], path: Path, notes: list[str]) -> dict[str, dict[str, float]]:
    """Per-piece values by metric name. A bare name joins the one run-level metric `family.name`, if exactly one
    exists; otherwise it becomes `piece.name`. A dotted name is kept as it is."""
    per_piece = metrics.get("per_piece") or {}
    if not isinstance(per_piece, dict):
        raise RunFileError(f"{path}: 'per_piece' should map piece names to {{metric: value}}, found {type(per_piece).__name__}")
    by_metric: dict[str, dict[str, float]] = {}
    for piece, values in per_piece.items():
        if not isinstance(values, dict):
            raise RunFileError(f"{path}: per_piece['{piece}'] should be {{metric: value}}, found {type(values).__name__}")
        for name, value in _numbers(flatten(values), f"{path} per_piece['{piece}']", notes).items():
            by_metric.setdefault(name, {})[str(piece)] = value
    renamed = {}
    for name, values in by_metric.items():
        if "." not in name:
            owners = [metric for metric in run_metrics if metric.endswith(f".{name}")]
            name = owners[0] if len(owners) == 1 else f"{PIECE_PREFIX}.{name}"
        renamed[name] = values
    return renamed


def _samples(metrics: dict, metrics_dir: Path, run_dir: Path, limit: int) -> list[Sample]:
    generated = metrics.get("generated") if isinstance(metrics.get("generated"), dict) else {}
    candidates = []
    if isinstance(generated.get("dir"), str):
        given = Path(generated["dir"])
        candidates += [given] if given.is_absolute() else [metrics_dir / given, run_dir / given]
    candidates.append(run_dir / DEFAULT_SAMPLES_DIR)
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is None or limit <= 0:
        return []
    by_name: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in SAMPLE_SUFFIXES and path.is_file():
            by_name.setdefault(path.stem, {})[path.suffix.lower()] = path
    return [Sample(name, files) for name, files in list(by_name.items())[:limit]]


def _choices(path: Path) -> dict[str, str]:
    """Hydra's recorded group choices; optional (a run copied without `.hydra/` has none)."""
    try:
        choices = ((yaml.safe_load(path.read_text()) or {}).get("hydra") or {}).get("runtime", {}).get("choices") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in choices.items() if v is not None and not str(k).startswith("hydra/")}


def load_run(folder: Path, metrics_path: Path | None, summary_path: Path | None, samples_per_run: int) -> Run:
    """Reads one run; raises RunFileError naming the file when something cannot be used."""
    config_path = _train_config(folder)
    if config_path is None:
        raise RunFileError(f"{folder}: no training config ({' or '.join(TRAIN_CONFIG_FILES)} with a '{TRAIN_CONFIG_KEY}' section)")
    config = _read_yaml(config_path)
    if not isinstance(config, dict):
        raise RunFileError(f"{config_path}: expected a mapping at the top, found {type(config).__name__}")
    overrides_path = folder / OVERRIDES_FILE
    training_hydra = _hydra_of_training(folder)
    overrides = _read_yaml(overrides_path) if training_hydra and overrides_path.is_file() else []
    if not isinstance(overrides, list):
        raise RunFileError(f"{overrides_path}: expected a list of overrides, found {type(overrides).__name__}")

    notes: list[str] = []
    metrics: dict[str, float] = {}
    per_piece: dict[str, dict[str, float]] = {}
    reference: dict[str, float] = {}
    samples: list[Sample] = []
    if summary_path is not None:
        summary = _read_json(summary_path)
        if not isinstance(summary.get("metrics"), dict):
            raise RunFileError(f"{summary_path}: no 'metrics' object (a lyria training summary has one)")
        metrics.update(_numbers(flatten(summary["metrics"], TRAIN_PREFIX), str(summary_path), notes))
    if metrics_path is not None:
        evaluation = _read_json(metrics_path)
        families, reference = _metric_families(evaluation, metrics_path, notes)
        metrics.update(families)
        per_piece = _per_piece(evaluation, families, metrics_path, notes)
        samples = _samples(evaluation, metrics_path.parent, folder, samples_per_run)
    flat_config = flatten(config)
    return Run(
        choices=_choices(folder / HYDRA_FILE) if training_hydra else {},
        path=folder,
        config=flat_config,
        overrides=[str(o) for o in overrides],
        seed=flat_config.get("seed"),
        metrics=metrics,
        per_piece=per_piece,
        reference=reference,
        samples=samples,
        notes=notes,
    )


def collect_runs(root: str | Path, samples_per_run: int = 3, exclude: Iterable[Path] = ()) -> tuple[list[Run], list[Skip]]:
    """Every run under `root` (recursively), and the skipped ones with their reasons."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs folder {root} does not exist (runs=DIR should point at a sweep or study folder)")
    excluded = [Path(p).resolve() for p in exclude]
    found: dict[Path, dict[str, list[Path]]] = {}
    for name in (METRICS_FILE, SUMMARY_FILE):
        for path in sorted(root.rglob(name)):
            if any(path.resolve().is_relative_to(e) for e in excluded):
                continue
            found.setdefault(_run_folder(path.parent, root), {}).setdefault(name, []).append(path)

    runs, skips = [], []
    for folder, files in tqdm(sorted(found.items()), desc="reading runs", unit="run", disable=len(found) < 20):
        several = [paths for paths in files.values() if len(paths) > 1]
        if several:
            skips.append(Skip(folder, f"several files for one run: {', '.join(str(p) for p in several[0])}"))
            continue
        try:
            runs.append(load_run(folder, files.get(METRICS_FILE, [None])[0], files.get(SUMMARY_FILE, [None])[0], samples_per_run))
        except RunFileError as err:
            skips.append(Skip(folder, str(err)))
    return runs, skips


def override_key(override: str) -> str:
    """`+model/mixer=x` -> `model/mixer`."""
    return override.lstrip("+~").split("=", 1)[0]


def _dotted(key: str) -> str:
    return key.replace("/", ".")


def config_identity(run: Run, ignore: Iterable[str]) -> dict[str, Any]:
    """The config that defines what was trained: every key but the ignored ones (seed, paths, logging...)."""
    ignore = list(ignore)
    return {key: value for key, value in run.config.items() if not matches(key, ignore)}


def _stable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _shown(key: str, value: Any) -> str:
    # A `_target_` names a class: its last component reads well in a label.
    text = value if isinstance(value, str) else _stable(value)
    return text.rsplit(".", 1)[-1] if key.endswith("_target_") else text


def _shared_overrides(runs: list[Run], ignore: list[str]) -> dict[str, str]:
    """The overrides every run of a group has (of those that recorded any), by key; ignored keys left out."""
    recorded = [run for run in runs if run.overrides] or runs
    first = {override_key(o): o for o in recorded[0].overrides if not matches(_dotted(override_key(o)), ignore)}
    return {k: o for k, o in first.items() if all(o in run.overrides for run in recorded[1:])}


def _override_labels(members: dict[str, list[Run]], shared: dict[str, dict[str, str]]) -> dict[str, str]:
    """Per group, the overrides (or, where a group lacks one, its Hydra choice or config value for that key) on
    which groups differ."""
    keys = list(dict.fromkeys(k for overrides in shared.values() for k in overrides))
    varying = [k for k in keys if len({overrides.get(k) for overrides in shared.values()}) > 1]

    def part(group: str, key: str) -> str | None:
        if key in shared[group]:
            return shared[group][key]
        run = next((r for r in members[group] if r.choices), members[group][0])
        if key in run.choices:
            return f"{key}={run.choices[key]}"
        return f"{key}={_shown(key, run.config[_dotted(key)])}" if _dotted(key) in run.config else None

    return {group: " ".join(p for k in varying if (p := part(group, k))) for group in members}


def _config_labels(identities: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Per group, its values of the config keys that differ between groups."""
    keys = list(dict.fromkeys(k for identity in identities.values() for k in identity))
    varying = [k for k in keys if len({_stable(identity.get(k)) for identity in identities.values()}) > 1]
    return {group: " ".join(f"{k}={_shown(k, identity.get(k))}" for k in varying) for group, identity in identities.items()}


def group_runs(runs: list[Run], ignore: Iterable[str]) -> list[Group]:
    """Runs grouped by config identity; each group is labelled by the overrides that tell it apart.

    Where overrides do not tell groups apart (no overrides file, or equal overrides over changed defaults), the
    label lists the config values that differ between groups instead.
    """
    ignore = list(ignore)
    identities: dict[str, dict[str, Any]] = {}
    members: dict[str, list[Run]] = {}
    for run in runs:
        identity = config_identity(run, ignore)
        key = hashlib.sha1(_stable(identity).encode()).hexdigest()[:12]
        identities[key] = identity
        members.setdefault(key, []).append(run)

    shared = {key: _shared_overrides(group, ignore) for key, group in members.items()}
    labels = _override_labels(members, shared)
    if len(members) > 1 and (not all(labels.values()) or len(set(labels.values())) < len(labels)):
        labels = _config_labels(identities)
    if len(members) == 1:
        labels = {key: "all runs" for key in members}
    return sorted(
        (
            Group(
                key=key,
                label=labels[key],
                runs=sorted(group, key=_seed_order),
                settings=[*labels[key].split(), *shared[key].values(), *(f"{k}={v}" for r in group for k, v in r.choices.items())],
            )
            for key, group in members.items()
        ),
        key=lambda group: group.label,
    )


def _seed_order(run: Run) -> tuple:
    numeric = isinstance(run.seed, (int, float)) and not isinstance(run.seed, bool)
    return (0, run.seed, "", str(run.path)) if numeric else (1, 0, str(run.seed), str(run.path))
