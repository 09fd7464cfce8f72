"""lyria-evaluate's generated= and reference= folders: a file over data.limits or unreadable is a counted skip
with its reason; the others are read."""

from __future__ import annotations

from lyria.data.limits import InputLimits
from lyria.evaluation.sets import load_generated, load_midi_folder
from tests_support import make_score


def test_folders_skip_files_over_the_limits_and_broken_files(tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    make_score([60, 62, 64, 65]).dump_midi(str(folder / "short.mid"))
    make_score([60] * 64).dump_midi(str(folder / "long.mid"))
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x05\x01\xe0MTrk\xff\xff")
    limits = InputLimits(max_notes=50)
    generated, _, _ = load_generated(folder, num_proc=1, limits=limits)
    assert generated.names == ["short.mid"]
    skips = {skip["file"].rsplit("/", 1)[-1]: skip["reason"] for skip in generated.skipped}
    assert skips["long.mid"] == "notes 64 > data.limits.max_notes=50"
    assert skips["broken.mid"].startswith("RuntimeError: ")
    reference = load_midi_folder(folder, "reference", num_proc=1, limits=InputLimits(max_file_bytes=200))
    assert reference.names == ["short.mid"] and len(reference.skipped) == 2
    assert any("data.limits.max_file_bytes=200" in skip["reason"] for skip in reference.skipped)
    assert len(load_midi_folder(folder, "reference", num_proc=1).names) == 2  # default bounds keep both pieces
