"""Versioned evaluation assets: split manifests, feature tables, the memorization index, baselines, classifiers.

An asset is identified by its name, a format version and the hash of everything it was computed from
(the pieces and the settings). It is stored as `.npz` (numpy arrays, read without pickle) or `.json`
under the store's folder, written atomically, and read back on the next run. `metrics.json` records
every asset a run used, so that two runs compare only when they used the same ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

# assets that may differ between comparable runs: the baseline is sized to each run's generated set
NOT_COMPARED = ("baseline",)


class AssetMismatchError(ValueError):
    """Two evaluations used different versions of an evaluation asset; their numbers do not compare."""


def digest(obj: Any) -> str:
    """A short, stable hash of a JSON-able object."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    sha = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:16]


def split_manifest(piece_ids: list[str], content_hashes: list[str], styles: list[str | None]) -> dict:
    """Which pieces (and which music: their content hashes) a split holds; its hash names the split's assets."""
    rows = sorted(zip(piece_ids, content_hashes, [s or "" for s in styles]))
    return {"n_pieces": len(rows), "hash": digest(rows)}


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Writes `path` through a temporary file beside it: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


class AssetStore:
    """Loads or builds assets under `root` (None: build every time, keep nothing) and records those used."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None
        self.used: dict[str, dict] = {}

    def record(self, name: str, version: int, hash_: str) -> None:
        self.used[name] = {"version": int(version), "hash": hash_}

    def _path(self, name: str, version: int, key_hash: str, suffix: str) -> Path | None:
        if self.root is None:
            return None
        return self.root / name / f"v{version}-{key_hash}{suffix}"

    def arrays(self, name: str, version: int, key: Any, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The asset's arrays: read from disk when this (version, key) was built before, else built and saved."""
        key_hash = digest([name, version, key])
        self.record(name, version, key_hash)
        path = self._path(name, version, key_hash, ".npz")
        if path is not None and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    return {k: data[k] for k in data.files}
            except (OSError, ValueError) as err:  # a truncated file is rebuilt, not trusted
                log.warning("rebuilding evaluation asset %s: %s", path, err)
        arrays = build()
        if path is not None:
            atomic_write(path, lambda tmp: _save_npz(tmp, arrays))
            log.info("saved evaluation asset %s", path)
        return arrays

    def json(self, name: str, version: int, key: Any, build: Callable[[], Any]) -> Any:
        """Like `arrays` for a JSON-able value."""
        key_hash = digest([name, version, key])
        self.record(name, version, key_hash)
        path = self._path(name, version, key_hash, ".json")
        if path is not None and path.is_file():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError) as err:
                log.warning("rebuilding evaluation asset %s: %s", path, err)
        value = build()
        if path is not None:
            atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value)))
        return value


def assert_comparable(first: dict, second: dict) -> None:
    """Raises AssetMismatchError unless two metrics.json documents used the same version and hash of every asset
    both used (the split manifest, reference features, evaluation tokens, memorization index, classifier).

    An asset that only one of them used (a family the other did not run) is no conflict.
    """
    if first.get("version") != second.get("version"):
        raise AssetMismatchError(f"metrics.json format versions differ: {first.get('version')} vs {second.get('version')}")
    a, b = first.get("assets", {}), second.get("assets", {})
    for name in sorted(set(a) & set(b) - set(NOT_COMPARED)):
        if a[name] != b[name]:
            raise AssetMismatchError(
                f"evaluation asset {name!r} differs ({a[name]} vs {b[name]}): the runs were scored against different "
                "data or settings; re-evaluate one of them against the other's assets"
            )
