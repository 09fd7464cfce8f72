"""Per-piece bounds: oversized files, too many notes, too long, too many tokens, and a tokenizer that crashes or
hangs are counted skips with their reasons; the bounds can be changed without re-parsing."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from symusic import Note, Score, Tempo, Track

from lyria.cli import CONF_DIR
from lyria.config import DataConfig, GenerateSchema
from lyria.data.limits import InputLimits, LimitExceeded
from lyria.data import prepare as prepare_module
from lyria.data.prepare import NoUsablePiecesError, prepare_data
from lyria.data.sources import MidiFolderSource
from lyria.tokenizers import LyriaTokenizer
from tests_support import make_score


def _prepare(folder, cache, tokenizer=None, **kwargs):
    return prepare_data(MidiFolderSource(str(folder)), tokenizer or LyriaTokenizer(), cache, num_proc=1, **kwargs)


def _skips(prepared) -> dict[str, dict]:
    return {s["piece_id"]: s for s in json.loads(prepared.report_path.read_text())["skipped"]}


def _many_notes(count: int) -> Score:
    score = Score(480)
    track = Track("dense", 0, False)
    time_ = np.arange(count, dtype=np.int32) * 10
    track.notes = Note.from_numpy(
        time=time_, duration=np.full(count, 10, np.int32), pitch=(60 + time_ % 24).astype(np.int8), velocity=np.full(count, 80, np.int8)
    )
    score.tracks.append(track)
    score.tempos.append(Tempo(0, qpm=120))
    return score


@pytest.fixture
def hostile_folder(midi_folder: Path) -> Path:
    """The valid pieces of `midi_folder`, plus a 50 MB file, a million-note piece and a piece whose two notes lie
    a million quarter notes apart (huge delta times: a tokenizer writes a Bar token for every empty bar)."""
    big = midi_folder / "airs" / "huge.mid"
    with open(big, "wb") as handle:
        handle.write(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk" + (50 * 2**20).to_bytes(4, "big"))
        handle.truncate(50 * 2**20)
    _many_notes(1_000_000).dump_midi(str(midi_folder / "airs" / "million.mid"))
    far = make_score([60, 62])
    far.tracks[0].notes.append(Note(480 * 1_000_000, 480, 64, 80))
    far.dump_midi(str(midi_folder / "jigs" / "far.mid"))
    return midi_folder


def test_oversized_dense_and_endless_pieces_are_skipped_before_tokenizing(hostile_folder, tmp_path):
    prepared = _prepare(hostile_folder, tmp_path / "cache")
    skips = _skips(prepared)
    assert skips["airs/huge.mid"]["stage"] == "limits"
    assert "file size 52,428,800 bytes > data.limits.max_file_bytes=10,485,760" == skips["airs/huge.mid"]["reason"]
    assert skips["airs/million.mid"]["stage"] == "limits"
    assert skips["airs/million.mid"]["reason"].startswith("notes 1,000,000 > data.limits.max_notes=200,000")
    assert skips["jigs/far.mid"]["stage"] == "limits" and "data.limits.max_beats" in skips["jigs/far.mid"]["reason"]
    assert prepared.report["skipped_by_stage"] == {"limits": 3, "parse": 2}
    assert prepared.report["limits"] == InputLimits().bounds()
    assert sum(prepared.report["pieces"].values()) == 12
    assert max(max(prepared.splits[s]["n_tokens"], default=0) for s in ("train", "validation", "test")) < 1000


def test_changed_limits_apply_to_cached_pieces_without_parsing_them_again(midi_folder, tmp_path, monkeypatch):
    make_score([60 + i % 12 for i in range(96)]).dump_midi(str(midi_folder / "airs" / "long.mid"))
    everything = _prepare(midi_folder, tmp_path / "cache")
    assert sum(everything.report["pieces"].values()) == 13
    calls = []
    original = prepare_module.isolated_map
    monkeypatch.setattr(
        prepare_module, "isolated_map", lambda fn, items, **kw: calls.append((kw["desc"], len(items))) or original(fn, items, **kw)
    )
    # the short pieces last 24 quarter notes (12 s at 120 bpm), the long one 96 (48 s)
    shorter = _prepare(midi_folder, tmp_path / "cache", limits=InputLimits(max_seconds=30.0))
    assert calls[0] == ("converting", 0)  # the cached scores are checked against the new bound, not parsed again
    assert _skips(shorter)["airs/long.mid"] == {
        "piece_id": "airs/long.mid", "style": "airs", "origin": str(midi_folder / "airs" / "long.mid"), "stage": "limits",
        "reason": "length 48 s > data.limits.max_seconds=30",
    }
    fewer = _prepare(midi_folder, tmp_path / "cache", limits=InputLimits(max_tokens=300))
    assert _skips(fewer)["airs/long.mid"]["stage"] == "limits"
    assert _skips(fewer)["airs/long.mid"]["reason"].endswith("> data.limits.max_tokens=300")
    assert sum(fewer.report["pieces"].values()) == 12
    assert fewer.cache_path != everything.cache_path  # the bounds are part of the token cache key
    with pytest.raises(NoUsablePiecesError, match="length 12 s > data.limits.max_seconds=11"):
        _prepare(midi_folder, tmp_path / "cache", limits=InputLimits(max_seconds=11.0))
    again = _prepare(midi_folder, tmp_path / "cache")  # pieces over a bound are not remembered as failures
    assert again.report["cache_hit"] and sum(again.report["pieces"].values()) == 13


class _FragileTokenizer(LyriaTokenizer):
    """Dies on pieces of 24 notes starting on pitch 60, hangs on those starting on pitch 55 (in the worker)."""

    def encode(self, score):
        first = score.tracks[0].notes[0].pitch
        if first == 60 and os.environ.get("LYRIA_TEST_FRAGILE") == "crash":
            os._exit(11)
        if first == 55:
            time.sleep(120)
        return super().encode(score)


def test_a_tokenizer_that_crashes_or_hangs_costs_only_its_pieces(midi_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("LYRIA_TEST_FRAGILE", "crash")
    for path in list(midi_folder.rglob("piece[1-5].mid")):
        path.unlink()  # one piece per style: jigs/piece0 (pitch 60 first), airs/piece0 (pitch 55 first)
    make_score([70, 72, 74, 76] * 6).dump_midi(str(midi_folder / "airs" / "ok.mid"))
    started = time.monotonic()
    prepared = _prepare(midi_folder, tmp_path / "cache", tokenizer=_FragileTokenizer(), tokenize_timeout_s=2.0)
    assert time.monotonic() - started < 60
    skips = _skips(prepared)
    assert skips["jigs/piece0.mid"]["stage"] == "tokenize" and "exit code 11" in skips["jigs/piece0.mid"]["reason"]
    assert skips["airs/piece0.mid"]["stage"] == "tokenize"
    assert "timed out after 2 s" in skips["airs/piece0.mid"]["reason"]
    assert sum(prepared.report["pieces"].values()) == 1


def test_limits_refuse_with_the_setting_name_and_reject_nonsense():
    limits = InputLimits(max_notes=10, where="input_limits")
    with pytest.raises(LimitExceeded, match=r"^notes 24 > input_limits.max_notes=10$"):
        limits.check_score(make_score(list(range(60, 84))))
    InputLimits(max_notes=None).check_score(_many_notes(300_000))  # null turns a bound off
    with pytest.raises(ValueError, match="data.limits.max_tokens=0"):
        InputLimits(max_tokens=0)
    with pytest.raises(ValueError, match="unknown key"):
        InputLimits.from_config({"max_note": 5})


def test_config_defaults_are_the_library_defaults():
    """conf/data, conf/generate.yaml and the schemas all state the same bounds as InputLimits()."""
    expected = InputLimits().bounds()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for name in sorted(p.stem for p in (Path(CONF_DIR) / "data").glob("*.yaml")):
            cfg = compose(config_name="train", overrides=[f"data={name}"])
            assert InputLimits.from_config(cfg.data.limits).bounds() == expected, name
        cfg = compose(config_name="generate", overrides=["ckpt=x"])
        assert InputLimits.from_config(cfg.input_limits).bounds() == expected
    assert InputLimits.from_config(vars(DataConfig().limits)).bounds() == expected
    assert InputLimits.from_config(vars(GenerateSchema().input_limits)).bounds() == expected


def test_the_size_of_every_sources_input_is_known_before_parsing(tmp_path):
    from lyria.data.convert import input_bytes, parse_abc_tune, parse_music21_file, read_midi_file
    from lyria.data.hf import parse_midi_value, read_row

    path = tmp_path / "a.mid"
    path.write_bytes(b"x" * 123)
    assert input_bytes(read_midi_file, (str(path),)) == 123
    assert input_bytes(parse_music21_file, (str(path),)) == 123
    assert input_bytes(parse_abc_tune, ("X:1\nK:C\nCDE|\n",)) == 13
    assert input_bytes(parse_midi_value, ({"bytes": b"abcd", "path": None},)) == 4
    assert input_bytes(parse_midi_value, (str(path),)) == 123
    assert input_bytes(read_row, (None, "midi", 3)) is None  # read by index in the worker: bounded after parsing
