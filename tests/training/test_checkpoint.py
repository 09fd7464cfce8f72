"""Checkpoints: plain containers that load with weights_only; broken files give errors naming them."""

from __future__ import annotations

import pytest
import torch

from lyria.tokenizers import LyriaTokenizer
from lyria.training.module import LyriaLightningModule
from lyria.training.train import load_model

MODEL = {
    "mixer": {"_target_": "lyria.models.mixers.AttentionMixer", "position": {"_target_": "lyria.models.positions.RotaryPosition"}},
    "conditioning": {"_target_": "lyria.models.conditioning.Conditioner"},
    "d_model": 32,
    "n_layers": 1,
    "n_heads": 2,
    "d_ff": 64,
    "dropout": 0.0,
    "max_seq_len": 32,
}
TRAINING = {"optimizer": {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8}, "warmup_steps": 1, "total_steps": 10, "min_lr_ratio": 0.1}


@pytest.fixture
def checkpoint(tmp_path):
    tokenizer = LyriaTokenizer(styles=["a", "b"])
    module = LyriaLightningModule(MODEL, TRAINING, tokenizer.vocab_sizes, tokenizer.num_style_slots, tokenizer.pad_id, tokenizer.styles)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    tokenizer.save(tmp_path)
    return path, module


def test_checkpoint_round_trip_with_weights_only(checkpoint):
    path, module = checkpoint
    model, tokenizer, hparams = load_model(path)
    tokens = torch.randint(tokenizer.num_special, tokenizer.vocab_size, (1, 10))
    assert torch.equal(model(tokens)[0], module.model.eval()(tokens)[0])
    assert tokenizer.styles == ["a", "b"] and hparams["style_names"] == ["a", "b"]


def test_truncated_checkpoint_is_named(checkpoint):
    path, _ = checkpoint
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"model.ckpt is not a readable checkpoint \(truncated or corrupt\?\)"):
        load_model(path)


def test_foreign_checkpoint_and_mismatched_tokenizer_are_named(checkpoint, tmp_path):
    path, _ = checkpoint
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="has no 'state_dict'"):
        load_model(tmp_path / "other.ckpt")
    LyriaTokenizer(config={"num_velocities": 4}).save(tmp_path)
    with pytest.raises(ValueError, match="does not belong to this checkpoint"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_model(tmp_path / "missing.ckpt")
