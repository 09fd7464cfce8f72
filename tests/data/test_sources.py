"""Sources list pieces (id, style, parser) without parsing; ABC collections split into tunes."""

from __future__ import annotations

import pytest

from lyria.data.convert import parse_abc_tune
from lyria.data.sources import MidiFolderSource, Music21CorpusSource, split_abc

ABC = """%abc collection header
M:4/4

X:1
T:First
K:C
CDEF|GABc|

X:2
T:Second
K:G
GABc|d4|
"""


def test_split_abc_gives_one_tune_per_x_field_with_the_header():
    tunes = split_abc(ABC)
    assert [number for number, _ in tunes] == ["1", "2"]
    assert all(text.startswith("%abc collection header") for _, text in tunes)
    assert "T:Second" in tunes[1][1] and "T:First" not in tunes[1][1]
    assert parse_abc_tune(tunes[1][1]).note_num() == 5


def test_music21_source_bounds_each_style_and_labels_it():
    styles = [
        {"name": "chorale", "composer": "bach", "extensions": ["mxl"]},
        {"name": "folk", "composer": "essenFolksong", "extensions": ["abc"]},
    ]
    refs = Music21CorpusSource(styles).pieces(max_pieces_per_style=5)
    assert [r.style for r in refs] == ["chorale"] * 5 + ["folk"] * 5
    assert all("#" in r.piece_id for r in refs if r.style == "folk")  # one piece per tune
    assert refs == Music21CorpusSource(styles).pieces(max_pieces_per_style=5)  # deterministic


def test_music21_source_names_a_folder_without_matching_files():
    with pytest.raises(ValueError, match="monteverdi.*no \\['.wav'\\] files"):
        Music21CorpusSource([{"name": "x", "composer": "monteverdi", "extensions": ["wav"]}]).pieces()


def test_midi_folder_styles_from_subfolders_and_from_csv(midi_folder):
    source = MidiFolderSource(str(midi_folder))
    assert source.style_names == ["airs", "jigs"]
    assert {r.style for r in source.pieces()} == {"airs", "jigs"}
    (midi_folder / "labels.csv").write_text("path,style\njigs/piece0.mid,reel\n")
    labelled = MidiFolderSource(str(midi_folder), styles_csv="labels.csv", default_style="other")
    styles = {r.piece_id: r.style for r in labelled.pieces()}
    assert styles["jigs/piece0.mid"] == "reel" and styles["jigs/piece1.mid"] == "other"


def test_midi_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        MidiFolderSource(str(tmp_path / "nowhere"))
    (tmp_path / "bad.csv").write_text("file,label\n")
    with pytest.raises(ValueError, match="'path' and 'style'"):
        MidiFolderSource(str(tmp_path), styles_csv="bad.csv")
