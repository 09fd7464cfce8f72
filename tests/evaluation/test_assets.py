"""Evaluation assets: built once, read back without pickle, rebuilt when damaged, and compared by version and hash."""

from __future__ import annotations

import numpy as np
import pytest

from lyria.evaluation.assets import AssetMismatchError, AssetStore, assert_comparable, digest


def test_an_asset_is_built_once_and_read_back(tmp_path):
    store = AssetStore(tmp_path)
    builds = []

    def build():
        builds.append(1)
        return {"values": np.arange(5), "names": np.array(["a", "b"])}

    first = store.arrays("features/test", 1, {"pieces": "abc"}, build)
    second = AssetStore(tmp_path).arrays("features/test", 1, {"pieces": "abc"}, build)
    assert len(builds) == 1
    np.testing.assert_array_equal(first["values"], second["values"])
    assert second["names"].tolist() == ["a", "b"]
    assert store.used["features/test"] == {"version": 1, "hash": digest(["features/test", 1, {"pieces": "abc"}])}
    AssetStore(tmp_path).arrays("features/test", 2, {"pieces": "abc"}, build)  # a new format version rebuilds
    assert len(builds) == 2


def test_a_damaged_asset_is_rebuilt_and_json_assets_round_trip(tmp_path):
    store = AssetStore(tmp_path)
    store.arrays("index", 1, "key", lambda: {"codes": np.arange(3)})
    (path,) = (tmp_path / "index").glob("*.npz")
    path.write_bytes(b"truncated")
    again = AssetStore(tmp_path).arrays("index", 1, "key", lambda: {"codes": np.arange(4)})
    assert again["codes"].tolist() == [0, 1, 2, 3]
    assert AssetStore(tmp_path).json("baseline", 1, "k", lambda: {"x": 1.5}) == {"x": 1.5}
    assert AssetStore(tmp_path).json("baseline", 1, "k", lambda: {"x": 2.0}) == {"x": 1.5}
    assert AssetStore(None).json("baseline", 1, "k", lambda: {"x": 2.0}) == {"x": 2.0}  # no folder: nothing kept


def test_runs_compare_only_with_the_same_assets():
    run = {"version": 1, "assets": {"split_manifest": {"version": 1, "hash": "a"}, "baseline": {"version": 1, "hash": "b"}}}
    other_baseline = {
        "version": 1,
        "assets": {"split_manifest": {"version": 1, "hash": "a"}, "baseline": {"version": 1, "hash": "c"}},
    }
    assert_comparable(run, other_baseline)
    assert_comparable(run, {"version": 1, "assets": {"memorization_index": {"version": 1, "hash": "z"}}})
    with pytest.raises(AssetMismatchError, match="split_manifest"):
        assert_comparable(run, {"version": 1, "assets": {"split_manifest": {"version": 1, "hash": "other"}}})
    with pytest.raises(AssetMismatchError, match="format versions"):
        assert_comparable(run, {"version": 2, "assets": {}})
