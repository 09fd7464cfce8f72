"""Hugging Face datasets as a source, on local parquet files the tests write (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests_support import make_score

from lyria.config import TrainSchema, build, validate
from lyria.data.hf import HFDatasetSource
from lyria.training.train import build_tokenizer_and_data, train

STYLES = ("airs", "jigs")


def midi_bytes(style: str, k: int) -> bytes:
    base = 55 if style == "airs" else 62
    score = make_score([base + (k + 5 * i) % 12 for i in range(20)], numerator=3 if style == "jigs" else 4)
    return score.dumps_midi()


@pytest.fixture
def midi_parquet(tmp_path) -> Path:
    """Six pieces per style as MIDI bytes, one corrupt and one empty row."""
    rows = [(midi_bytes(style, k), style, f"{style}-{k}") for k in range(6) for style in STYLES]
    rows += [(b"MThd\x00\x00\x00\x06not midi at all", "jigs", "corrupt"), (b"", "airs", "empty")]
    path = tmp_path / "tunes.parquet"
    pq.write_table(pa.table({"midi": [r[0] for r in rows], "genre": [r[1] for r in rows], "title": [r[2] for r in rows]}), path)
    return path


def hf_config(compose_train, path: Path, *overrides: str):
    return validate(
        compose_train("data=hf_dataset", f"data.name={path}", "data.column=midi", "data.source.id_column=title", *overrides),
        TrainSchema,
    )


def test_parquet_rows_prepare_with_isolated_parsing_and_a_skip_report(compose_train, midi_parquet):
    cfg = hf_config(compose_train, midi_parquet, "data.source.style_column=genre", "data.max_pieces_per_style=null")
    tokenizer, prepared = build_tokenizer_and_data(cfg)
    report = prepared.report
    assert report["styles"] == list(STYLES) and tokenizer.styles == list(STYLES)
    assert sum(report["pieces"].values()) == 12
    skipped = {s["piece_id"]: s for s in report["skipped"]}
    assert set(skipped) == {"corrupt", "empty"}
    assert all(s["stage"] == "parse" and s["reason"] for s in skipped.values())
    assert "empty" in skipped["empty"]["reason"].lower()
    assert json.loads(Path(prepared.report_path).read_text())["skipped_count"] == 2
    _, again = build_tokenizer_and_data(cfg)
    assert again.report["cache_hit"] and again.cache_path == prepared.cache_path


def test_streaming_reads_only_the_pieces_it_keeps(midi_parquet, tmp_path):
    source = HFDatasetSource(
        str(midi_parquet), "midi", style_column="genre", id_column="title", styles=list(STYLES), streaming=True, cache_dir=str(tmp_path / "hf")
    )
    refs = source.pieces(max_pieces_per_style=2)
    assert [r.piece_id for r in refs] == ["airs-0", "airs-1", "jigs-0", "jigs-1"]  # the first rows of the stream
    assert refs[0].load().note_num() == 20


def test_a_column_of_file_paths(tmp_path):
    paths = []
    for k in range(3):
        paths.append(tmp_path / f"piece{k}.mid")
        paths[-1].write_bytes(midi_bytes("airs", k))
    table = tmp_path / "paths.parquet"
    pq.write_table(pa.table({"file": [str(p) for p in paths]}), table)
    refs = HFDatasetSource(str(table), "file", cache_dir=str(tmp_path / "hf")).pieces()
    assert sorted(r.piece_id for r in refs) == ["train/0000000", "train/0000001", "train/0000002"]
    assert {r.style for r in refs} == {"default"} and all(r.load().note_num() == 20 for r in refs)


def test_mistakes_are_named(compose_train, midi_parquet, tmp_path):
    cfg = hf_config(compose_train, midi_parquet, "data.column=notes")
    with pytest.raises(ValueError, match=r"data.column='notes' is not a column .*\['midi', 'genre', 'title'\]"):
        build(cfg.data.source, "data.source").pieces()
    with pytest.raises(ValueError, match="data.source.styles"):
        HFDatasetSource(str(midi_parquet), "midi", style_column="genre", streaming=True)
    with pytest.raises(ValueError, match="cannot load split 'validation'"):
        HFDatasetSource(str(midi_parquet), "midi", split="validation", cache_dir=str(tmp_path / "hf")).pieces()


@pytest.mark.slow
def test_training_on_a_parquet_dataset(compose_train, midi_parquet):
    cfg = compose_train(
        "data=hf_dataset",
        f"data.name={midi_parquet}",
        "data.column=midi",
        "data.source.style_column=genre",
        "data.val_fraction=0.2",
        "data.max_pieces_per_style=null",
    )
    metrics, objects = train(cfg)
    assert metrics["global_step"] == cfg.trainer.max_steps
    assert objects["prepared"].report["skipped_count"] == 2
