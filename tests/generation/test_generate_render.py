"""generate() renders each sample in every `render.formats` and lists the files, or why a format failed, in index.json."""

from __future__ import annotations

import json

import pytest
import soundfile
import torch
from symusic import Score

from lyria.config import ConfigError
from lyria.generation.generate import generate
from lyria.render.musicxml import MusicXmlRenderer
from lyria.tokenizers import LyriaTokenizer
from lyria.training.module import LyriaLightningModule

MODEL = {
    "mixer": {"_target_": "lyria.models.mixers.AttentionMixer", "position": {"_target_": "lyria.models.positions.RotaryPosition"}},
    "conditioning": {"_target_": "lyria.models.conditioning.Conditioner"},
    "d_model": 32,
    "n_layers": 1,
    "n_heads": 2,
    "d_ff": 64,
    "dropout": 0.0,
    "max_seq_len": 96,
}
TRAINING = {"optimizer": {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8}, "warmup_steps": 1, "total_steps": 10, "min_lr_ratio": 0.1}


@pytest.fixture
def untrained_checkpoint(tmp_path):
    """A randomly initialised model: its samples are odd music, which is what the renderers must survive."""
    torch.manual_seed(0)
    tokenizer = LyriaTokenizer()
    module = LyriaLightningModule(MODEL, TRAINING, tokenizer.vocab_sizes, tokenizer.num_style_slots, tokenizer.pad_id, tokenizer.styles)
    path = tmp_path / "ckpt" / "model.ckpt"
    path.parent.mkdir()
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    tokenizer.save(path.parent)
    return path


def test_every_sample_is_written_in_every_format(untrained_checkpoint, compose_train, tmp_path, one_thread):
    out = tmp_path / "samples"
    cfg = compose_train(f"ckpt={untrained_checkpoint}", "n=3", "batch_size=2", "max_new_tokens=80", f"output_dir={out}",
                        "render.sample_rate=16000", config_name="generate")
    index = generate(cfg)
    assert index["failed"] == 0 and index["written"] == 3, index["failures"]  # the grammar mask is on
    assert set(index["render_failed"]) == {"midi", "musicxml", "wav", "png"}
    for sample in index["samples"]:
        failed = sample.get("render_failures", {})
        assert set(sample["files"]) | set(failed) == {"midi", "musicxml", "wav", "png"}
        stem = f"sample_{sample['index']:03d}"
        assert {name: (out / file).name for name, file in sample["files"].items()} == {
            name: f"{stem}{suffix}" for name, suffix in {"midi": ".mid", "musicxml": ".musicxml", "wav": ".wav", "png": ".png"}.items() if name not in failed
        }
        assert all((out / file).is_file() for file in sample["files"].values())
    first = index["samples"][0]
    assert Score(str(out / first["files"]["midi"])).note_num() == first["n_notes"]
    assert soundfile.info(str(out / first["files"]["wav"])).samplerate == 16000
    assert json.loads((out / "index.json").read_text())["samples"] == index["samples"]


def test_a_format_that_fails_is_listed_with_its_reason(untrained_checkpoint, compose_train, tmp_path, monkeypatch, one_thread):
    def refuse(self, score, path):
        raise RuntimeError("no engraver today")

    monkeypatch.setattr(MusicXmlRenderer, "write", refuse)
    out = tmp_path / "samples"
    cfg = compose_train(f"ckpt={untrained_checkpoint}", "n=2", "max_new_tokens=40", f"output_dir={out}",
                        "render.formats=[midi,musicxml]", config_name="generate")
    index = generate(cfg)
    assert index["render_failed"] == {"midi": 0, "musicxml": index["written"]}
    for sample in index["samples"]:
        assert sample["render_failures"] == {"musicxml": "RuntimeError: no engraver today"}
        assert set(sample["files"]) == {"midi"}
    assert not list(out.glob("*.musicxml")) and not list(out.glob(".*"))


def test_an_unknown_format_fails_before_sampling(compose_train, tmp_path):
    (tmp_path / "unread.ckpt").write_bytes(b"never loaded: the format check comes first")
    cfg = compose_train(f"ckpt={tmp_path / 'unread.ckpt'}", "render.formats=[midi,mp3]", config_name="generate")
    with pytest.raises(ConfigError, match=r"render.formats\[1\]: unknown choice 'mp3'"):
        generate(cfg)
