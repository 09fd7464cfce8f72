"""lyria-evaluate reads a sample folder as lyria-generate writes it: index.json lists each sample's files by format."""

from __future__ import annotations

import json

import pytest

from lyria.evaluation.sets import load_generated
from evaluation_support import random_piece, write_samples


def test_index_with_files_by_format_is_read_as_lyria_generate_writes_it(tmp_path):
    folder = write_samples(tmp_path / "samples", [random_piece(seed, n_notes=20) for seed in range(3)])
    index = json.loads((folder / "index.json").read_text())
    for entry in index["samples"]:
        entry["files"] = {"midi": entry.pop("file"), "png": "unused.png"}
    (folder / "index.json").write_text(json.dumps(index))
    generated, _, read = load_generated(folder, num_proc=1)
    assert len(generated) == 3 and read is not None


def test_an_index_entry_without_a_midi_file_names_the_entry(tmp_path):
    folder = write_samples(tmp_path / "samples", [random_piece(0, n_notes=20)])
    index = json.loads((folder / "index.json").read_text())
    index["samples"][0] = {"index": 0, "files": {"wav": "sample_000.wav"}}
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"samples\[0\] has no MIDI file.*render.formats includes midi"):
        load_generated(folder, num_proc=1)
