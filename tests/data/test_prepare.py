"""Preparation: cached conversion and tokenization, deterministic leak-free splits, reported skips."""

from __future__ import annotations

import json
import shutil

import pytest
from symusic import Note, Tempo, TimeSignature, Track
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
    monkeypatch.setattr(
        prepare_module, "isolated_map", lambda fn, items, **kw: calls.append((kw["desc"], len(items))) or original(fn, items, **kw)
    )
    other = _prepare(midi_folder, tmp_path / "cache", LyriaTokenizer(config={"num_velocities": 8}))
    assert other.cache_path != first.cache_path and not other.report["cache_hit"]
    # parsed scores and cached parse failures: nothing to parse again; the 12 pieces are tokenized anew
    assert calls == [("converting", 0), ("tokenizing", 12)]
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


def _lossy_score(tpq: int = 480, first: int = 60):
    """Every reason a note is lost or changed, each a known number of times (4/4, one note per beat)."""
    score = make_score([first, 62, 64, 65, 10, 120, 67, 69], tpq=tpq)  # 2 pitches outside 21..109
    score.tracks[0].notes.append(Note(8 * tpq, 20 * tpq, 72, 80))  # 20 beats, longer than the longest Duration (12)
    violin = Track("violin", 40, False)  # program 40 collapses onto the merged track's program 0
    for beat in range(3):
        violin.notes.append(Note(beat * tpq, tpq, 76 + beat, 80))
    drums = Track("drums", 0, True)
    for beat in range(5):
        drums.notes.append(Note(beat * tpq, tpq // 2, 36, 100))
    score.tracks.append(violin)
    score.tracks.append(drums)
    for tick, qpm in ((4 * tpq, 90), (6 * tpq, 90), (7 * tpq, 140)):  # two changes (the second 90 is none)
        score.tempos.append(Tempo(tick, qpm=qpm))
    score.time_signatures[0] = TimeSignature(0, 4, 4)
    return score


def test_data_report_counts_notes_in_and_out_per_style_and_each_reason(tmp_path):
    folder = tmp_path / "midi"
    (folder / "lossy").mkdir(parents=True)
    (folder / "clean").mkdir()
    for k in range(3):
        _lossy_score(first=60 + k).dump_midi(str(folder / "lossy" / f"piece{k}.mid"))
        make_score([60 + k, 62, 64, 65, 67]).dump_midi(str(folder / "clean" / f"piece{k}.mid"))
    report = _prepare(folder, tmp_path / "cache").report
    lossy, clean = report["per_style"]["lossy"], report["per_style"]["clean"]
    assert lossy["notes_in"] == 3 * (9 + 3 + 5)
    assert lossy["notes_lost"] == {"drums_dropped": 15, "programs_collapsed": 9, "pitch_out_of_range": 6,
                                   "duration_clipped": 3, "tempo_changes_dropped": 6, "other": 0}
    assert lossy["notes_out"] == lossy["notes_in"] - 15 - 6
    assert clean["notes_in"] == clean["notes_out"] == 15
    assert not any(clean["notes_lost"].values())
    assert report["notes"] == {"in": 66, "out": 45, "lost": lossy["notes_lost"]}


def test_programs_and_drums_are_kept_with_use_programs(tmp_path):
    folder = tmp_path / "midi" / "lossy"
    folder.mkdir(parents=True)
    _lossy_score().dump_midi(str(folder / "piece.mid"))
    tokenizer = LyriaTokenizer(config={"use_programs": True, "one_token_stream_for_programs": True, "use_pitchdrum_tokens": True})
    lost = _prepare(folder.parent, tmp_path / "cache", tokenizer).report["notes"]["lost"]
    assert lost["drums_dropped"] == 0 and lost["programs_collapsed"] == 0 and lost["pitch_out_of_range"] == 2


def test_a_file_of_a_style_not_listed_is_a_counted_skip(midi_folder, tmp_path):
    source = MidiFolderSource(str(midi_folder), styles=["jigs"])
    prepared = prepare_data(source, LyriaTokenizer(), tmp_path / "cache", num_proc=1)
    report = prepared.report
    unlisted = [s for s in report["skipped"] if s["stage"] == "list"]
    assert len(unlisted) == 7 and {s["style"] for s in unlisted} == {"airs"}  # 6 pieces and the empty file
    assert all("not in data.source.styles" in s["reason"] for s in unlisted)
    assert report["skipped_count"] == 7 + 1  # and jigs' corrupt file
    assert set(report["per_style"]) == {"jigs"} and sum(report["pieces"].values()) == 6


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
