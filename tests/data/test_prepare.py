"""Preparation: cached conversion and tokenization, deterministic leak-free splits, reported skips."""

from __future__ import annotations

import json
import shutil

import pytest
from tests_support import make_score

from lyria.data import prepare as prepare_module
from lyria.data.prepare import NoUsablePiecesError, assign_split, prepare_data
from lyria.data.sources import MidiFolderSource
from lyria.tokenizers import LyriaTokenizer


def _prepare(folder, cache, tokenizer=None, **kwargs):
    return prepare_data(MidiFolderSource(str(folder)), tokenizer or LyriaTokenizer(), cache, num_proc=1, **kwargs)


def test_second_run_loads_from_cache_without_parsing(midi_folder, tmp_path, monkeypatch):
    first = _prepare(midi_folder, tmp_path / "cache")
    assert not first.report["cache_hit"]
    assert first.report_path.is_file() and first.report_path.parent == first.cache_path

    def no_parsing(*args, **kwargs):
        raise AssertionError("a cached preparation must not parse again")

    monkeypatch.setattr(prepare_module, "isolated_map", no_parsing)
    second = _prepare(midi_folder, tmp_path / "cache")
    assert second.report["cache_hit"]
    assert second.cache_path == first.cache_path
    assert list(second.splits["train"]["piece_id"]) == list(first.splits["train"]["piece_id"])


def test_changed_tokenizer_setting_rebuilds_tokens_but_reuses_parsed_scores(midi_folder, tmp_path, monkeypatch):
    first = _prepare(midi_folder, tmp_path / "cache")
    calls = []
    original = prepare_module.isolated_map
    monkeypatch.setattr(prepare_module, "isolated_map", lambda fn, items, **kw: calls.append(len(items)) or original(fn, items, **kw))
    other = _prepare(midi_folder, tmp_path / "cache", LyriaTokenizer(config={"num_velocities": 8}))
    assert other.cache_path != first.cache_path and not other.report["cache_hit"]
    assert calls == [0]  # parsed scores and cached parse failures: nothing to parse again
    assert sum(len(other.splits[s]) for s in ("train", "validation", "test")) == 12


def test_corrupt_and_empty_files_are_skipped_with_reasons(midi_folder, tmp_path):
    prepared = _prepare(midi_folder, tmp_path / "cache")
    report = json.loads(prepared.report_path.read_text())
    assert report["skipped_count"] == 2
    skipped = {s["piece_id"]: s for s in report["skipped"]}
    assert set(skipped) == {"jigs/corrupt.mid", "airs/empty.mid"}
    assert "empty file" in skipped["airs/empty.mid"]["reason"]
    assert skipped["jigs/corrupt.mid"]["reason"]
    assert report["pieces_listed"] == 14
    assert sum(report["pieces"].values()) == 12


def test_splits_are_by_piece_id_and_duplicates_never_cross_splits(midi_folder, tmp_path):
    # the same music under several names and styles
    for k in range(5):
        shutil.copy(midi_folder / "jigs" / "piece0.mid", midi_folder / "airs" / f"copy{k}.mid")
    prepared = _prepare(midi_folder, tmp_path / "cache", val_fraction=0.3, test_fraction=0.3)
    assert prepared.report["duplicates_removed"] == 5
    ids = {s: set(prepared.splits[s]["piece_id"]) for s in ("train", "validation", "test")}
    assert not (ids["train"] & ids["validation"]) and not (ids["train"] & ids["test"])
    for split, pieces in ids.items():
        for pid in pieces:
            assert assign_split(pid, 0.3, 0.3) == split


def test_validation_is_never_empty_when_there_are_pieces(midi_folder, tmp_path):
    prepared = _prepare(midi_folder, tmp_path / "cache", val_fraction=0.001, test_fraction=0.0)
    assert len(prepared.splits["validation"]) == 1


def test_no_usable_piece_is_an_error_naming_the_source(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.mid").write_bytes(b"not midi at all")
    (folder / "b.mid").write_bytes(b"")
    with pytest.raises(NoUsablePiecesError, match=r"MIDI folder .*broken.*none of 2 pieces"):
        _prepare(folder, tmp_path / "cache")


def test_a_style_keeps_its_slot_when_the_folder_gains_a_style(midi_folder, tmp_path):
    first = _prepare(midi_folder, tmp_path / "cache")
    before = LyriaTokenizer.load(first.cache_path).style_slots
    assert before == {"airs": 0, "jigs": 1}
    # "ballads" sorts before both: in order it would take slot 0 and move the others
    for k in range(3):
        path = midi_folder / "ballads" / f"b{k}.mid"
        path.parent.mkdir(parents=True, exist_ok=True)
        make_score([50 + k + i % 7 for i in range(20)]).dump_midi(str(path))
    tokenizer = LyriaTokenizer()
    second = _prepare(midi_folder, tmp_path / "cache", tokenizer)
    assert tokenizer.style_slots == {"airs": 0, "jigs": 1, "ballads": 2}
    assert second.report["style_slots"] == tokenizer.style_slots
    rows = second.splits["train"]
    assert all(slot == tokenizer.style_slots[style] for style, slot in zip(rows["style"], rows["style_id"]))
    assert LyriaTokenizer.load(second.cache_path).style_slots == tokenizer.style_slots
    # the reserved "no style" slot is never given
    assert tokenizer.null_style_slot not in tokenizer.style_slots.values()
