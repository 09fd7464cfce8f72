"""prompt= / infill= files: a broken, oversized or parser-crashing file is a one-line error naming the setting and
the file, never a traceback from inside the parser or a hang; impossible meters and tempos are dropped."""

from __future__ import annotations

import os

import pytest
from symusic import Score

from lyria.data.limits import InputLimits
from lyria.generation import pieces as pieces_module
from lyria.generation.pieces import read_midi
from midi_fuzz import END, melody, midi, tempo, time_signature
from tests_support import make_score


def _one_line_error(path, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        read_midi(path, *args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_broken_files_are_one_line_errors_naming_the_setting(tmp_path):
    truncated = tmp_path / "truncated.mid"
    good = tmp_path / "good.mid"
    make_score([60, 62, 64, 65]).dump_midi(str(good))
    truncated.write_bytes(good.read_bytes()[:30])
    message = _one_line_error(truncated, "prompt")
    assert message.startswith(f"prompt={str(truncated)!r} is not a readable MIDI file: RuntimeError: ")
    (tmp_path / "empty.mid").write_bytes(b"")
    assert _one_line_error(tmp_path / "empty.mid", "infill").startswith("infill=")
    with pytest.raises(FileNotFoundError, match="no such MIDI file"):
        read_midi(tmp_path / "missing.mid")
    assert read_midi(good).note_num() == 4


def test_files_over_the_limits_are_refused_naming_the_bound(tmp_path):
    path = tmp_path / "long.mid"
    make_score([60] * 40).dump_midi(str(path))
    assert _one_line_error(path, limits=InputLimits(max_notes=30, where="input_limits")) == (
        f"prompt={str(path)!r} is over a limit: notes 40 > input_limits.max_notes=30"
    )
    assert "max_file_bytes" in _one_line_error(path, limits=InputLimits(max_file_bytes=100, where="input_limits"))
    assert "max_seconds=10" in _one_line_error(path, limits=InputLimits(max_seconds=10.0, where="input_limits"))


def test_a_parser_that_crashes_is_an_error_not_a_dead_process(tmp_path, monkeypatch):
    path = tmp_path / "a.mid"
    make_score([60, 62]).dump_midi(str(path))
    monkeypatch.setattr(pieces_module, "Score", lambda *args: os._exit(7))  # the read runs in a forked worker
    assert "worker process died (exit code 7)" in _one_line_error(path)


def test_impossible_meters_and_tempos_are_dropped(tmp_path):
    path = tmp_path / "odd.mid"
    events = tempo(0, 0) + time_signature(0, 4, 255) + time_signature(0, 0, 2) + time_signature(0, 3, 2)
    import random

    path.write_bytes(midi(events + melody(random.Random(0), 8) + END))
    raw = Score(str(path))
    assert len(raw.time_signatures) == 3 and raw.tempos[0].mspq == 0
    score = read_midi(path)
    assert [(ts.numerator, ts.denominator) for ts in score.time_signatures] == [(3, 4)]
    assert len(score.tempos) == 0
