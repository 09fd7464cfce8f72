"""Fuzz: over a thousand malformed MIDI files of 24 kinds through data preparation (parsing, limits, tokenization),
lyria-evaluate's generated= folder, a whole lyria-evaluate run, and prompt= continuation: nothing crashes or
hangs, and every file is kept, skipped with a reason or refused with a one-line message.

The prompt= stage and the whole evaluation take a fixed share of every kind (each forks a reader per file or
scores every kept piece); benchmarks/fuzz_inputs.py runs every file through every stage.
"""

from __future__ import annotations

import time

import pytest

import midi_fuzz
from lyria.data.prepare import SPLITS

PER_KIND = 42  # 24 kinds: 1,008 files
SUBSET = 4  # files of each kind through prompt= continuation and the whole evaluation


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    written = midi_fuzz.write_corpus(root / "corpus", PER_KIND, seed=13)
    return root, written


@pytest.mark.slow
def test_malformed_midi_never_crashes_or_hangs(corpus, one_thread):
    root, written = corpus
    paths = [p for kind in written.values() for p in kind]
    assert len(paths) >= 1000 and len(written) >= 20
    started = time.monotonic()

    # data preparation: every listed file is kept, skipped with a stage and a reason, or a duplicate
    prepared = midi_fuzz.fuzz_prepare(root / "corpus", root / "cache")
    report = prepared["report"]
    kept = sum(report["pieces"].values())
    assert report["pieces_listed"] == len(paths)
    assert kept + report["skipped_count"] + report["duplicates_removed"] == len(paths)
    assert set(report["skipped_by_stage"]) <= {"parse", "limits", "tokenize"} and report["skipped_by_stage"]["parse"] > 0
    assert prepared["by_kind"]["valid"].get("kept", 0) + prepared["by_kind"]["valid"].get("duplicates", 0) == PER_KIND
    assert prepared["by_kind"]["random_bytes"].get("kept", 0) == 0
    assert max(n for s in SPLITS for n in prepared["prepared"].splits[s]["n_tokens"]) <= 2_000_000

    # huge delta times: skipped for their length before any tokenizer sees millions of empty bars
    endless = [s for s in report["skipped"] if s["style"] == "huge_delta_times" and s["stage"] == "limits"]
    assert endless and all("data.limits.max_beats" in s["reason"] or "max_seconds" in s["reason"] for s in endless)

    # lyria-evaluate's generated= folder: read or skipped with a reason, every file
    flat = root / "flat"
    flat.mkdir()
    for path in paths:
        (flat / path.name).write_bytes(path.read_bytes())
    folder = midi_fuzz.fuzz_evaluate_folder(flat)
    assert len(folder["pieces"]) + len(folder["pieces"].skipped) == len(paths)
    assert folder["by_kind"]["valid"]["read"] == PER_KIND

    # prompt= continuation and a whole evaluation on a share of every kind
    subset = [p for kind in written.values() for p in kind[:SUBSET]]
    prompts = midi_fuzz.fuzz_prompts(subset)
    assert prompts["crashes"] == []
    assert sum(sum(v.values()) for v in prompts["by_kind"].values()) == len(subset)
    assert prompts["by_kind"]["valid"] == {"continued": SUBSET}
    assert prompts["by_kind"]["random_bytes"] == {"refused_reading": SUBSET}
    few = root / "few"
    few.mkdir()
    for path in subset:
        (few / path.name).write_bytes(path.read_bytes())
    document = midi_fuzz.fuzz_evaluate(few, root / "corpus", root / "cache", root / "evaluation")
    assert document["generated"]["n_pieces"] + document["generated"]["skipped"] == len(subset)
    assert all(skip["reason"] for skip in document["generated"]["skips"])
    assert time.monotonic() - started < 600  # no stage hung (each is bounded by its time limits)
