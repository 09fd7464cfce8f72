"""Checkpoints: plain containers that load with weights_only; broken files give errors naming them; a crafted
checkpoint or tokenizer file that names a class outside the allow-list is refused before anything runs."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch

from lyria.checkpoint import load_model
from lyria.config import DisallowedTargetError
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


@pytest.fixture
def planted_module(tmp_path, monkeypatch):
    """An importable module that creates a marker file when imported and holds a mixer and a tokenizer class."""
    marker = tmp_path / "imported"
    (tmp_path / "planted_payload.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "import miditok\n"
        "from lyria.models.mixers import AttentionMixer\n"
        "class Mixer(AttentionMixer):\n    pass\n"
        "class Tokenizer(miditok.REMI):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("planted_payload", None)


def _payloads(marker) -> dict[str, tuple[list[str], object]]:
    """(key path inside hyper_parameters.model, value): each would create `marker` if its targets ran
    (the first three did, through Hydra's recursive instantiate, before the allow-list)."""
    touch = {"_target_": "pathlib.Path.touch", "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}]}
    return {
        "inside_a_mixer_parameter": (["mixer", "window"], touch),
        "inside_the_position": (["mixer", "position", "base"], touch),
        "conditioning_arguments": (["conditioning", "_args_"], [touch]),
        "os_system_as_mixer": (["mixer"], {"_target_": "os.system", "_args_": [f"touch {marker}"]}),
        "through_a_lyria_module": (["mixer", "window"], {"_target_": "lyria.data.prepare.os.system", "_args_": [f"touch {marker}"]}),
        "private_lyria_helper": (["mixer", "window"], {"_target_": "lyria.data.prepare._atomic_write", "_args_": [str(marker), b"x"]}),
        "planted_module": (["mixer", "_target_"], "planted_payload.Mixer"),
    }


@pytest.mark.parametrize("case", list(_payloads("m")))
def test_crafted_checkpoint_is_refused_before_anything_runs(checkpoint, tmp_path, planted_module, case):
    path, _ = checkpoint
    marker = tmp_path / "payload_ran"
    keys, payload = _payloads(marker)[case]
    state = torch.load(path, weights_only=True)
    crafted = copy.deepcopy(state)
    node = crafted["hyper_parameters"]["model"]
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = payload
    torch.save(crafted, path)
    torch.load(path, weights_only=True)  # a plain-data file: weights_only alone does not catch it
    with pytest.raises(DisallowedTargetError, match=r"model\.ckpt: hyper_parameters\.model\.(mixer|conditioning).*_target_.*refusing|is not a"):
        load_model(path)
    assert not marker.exists() and not planted_module.exists()


def test_refusal_names_the_key_and_the_target(checkpoint):
    path, _ = checkpoint
    state = torch.load(path, weights_only=True)
    state["hyper_parameters"]["model"]["mixer"]["position"] = {"_target_": "os.system", "_args_": ["true"]}
    torch.save(state, path)
    with pytest.raises(DisallowedTargetError) as caught:
        load_model(path)
    assert "hyper_parameters.model.mixer.position._target_" in str(caught.value)
    assert "'os.system'" in str(caught.value) and "lyria.models" not in str(caught.value).split("allowed are")[0]


def test_a_lyria_class_of_the_wrong_kind_is_refused(checkpoint):
    path, _ = checkpoint
    state = torch.load(path, weights_only=True)
    state["hyper_parameters"]["model"]["mixer"]["_target_"] = "lyria.data.sources.MidiFolderSource"
    torch.save(state, path)
    with pytest.raises(DisallowedTargetError, match=r"'lyria.data.sources.MidiFolderSource' is not a lyria.models.mixers.base.Mixer"):
        load_model(path)


@pytest.mark.parametrize("miditok_class", ["planted_payload.Tokenizer", "os.system", "lyria.checkpoint.torch.nn.Module", "miditok.TokenizerConfig"])
def test_crafted_tokenizer_file_is_refused_before_its_class_is_imported(checkpoint, planted_module, miditok_class):
    path, _ = checkpoint
    tokenizer_file = path.parent / "tokenizer.json"
    params = json.loads(tokenizer_file.read_text())
    params["lyria"]["miditok_class"] = miditok_class
    tokenizer_file.write_text(json.dumps(params))
    with pytest.raises(DisallowedTargetError, match=r"tokenizer.json: lyria.miditok_class: refusing to load|is not a miditok"):
        load_model(path)
    with pytest.raises(DisallowedTargetError, match=r"lyria.miditok_class"):
        LyriaTokenizer.load(tokenizer_file)
    assert not planted_module.exists()


def test_tokenizer_file_keys_cannot_replace_methods(checkpoint):
    path, _ = checkpoint
    tokenizer_file = path.parent / "tokenizer.json"
    params = json.loads(tokenizer_file.read_text())
    params["encode"] = "not a method"
    tokenizer_file.write_text(json.dumps(params))
    with pytest.raises(ValueError, match=r"keys \['encode'\] would replace methods of REMI"):
        LyriaTokenizer.load(tokenizer_file)
