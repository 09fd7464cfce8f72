"""lyria-export: a checkpoint as a folder of data only (safetensors, YAML, JSON) that generation loads with the
same logits and the same music for the same seed; a damaged or crafted folder is refused, naming the file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import torch
import yaml

from lyria.checkpoint import EXPORT_MODEL, EXPORT_WEIGHTS, load_model
from lyria.config import ConfigError, DisallowedTargetError
from lyria.errors import CheckpointError
from lyria.export import EXPORTED_FILES, export_model
from lyria.generation.generate import generate
from lyria.tokenizers import LyriaTokenizer
from lyria.training.module import LyriaLightningModule

MODEL = {
    "mixer": {"_target_": "lyria.models.mixers.AttentionMixer", "position": {"_target_": "lyria.models.positions.RotaryPosition"}},
    "conditioning": {"_target_": "lyria.models.conditioning.Conditioner"},
    "d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "dropout": 0.0, "max_seq_len": 64, "tie_embeddings": True,
}
TRAINING = {"optimizer": {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8}, "warmup_steps": 1, "total_steps": 10, "min_lr_ratio": 0.1}


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    tokenizer = LyriaTokenizer(styles=["a", "b"])
    module = LyriaLightningModule(MODEL, TRAINING, tokenizer.vocab_sizes, tokenizer.num_style_slots, tokenizer.pad_id, tokenizer.styles,
                                  note_counts=tokenizer.note_counts().tolist())
    with torch.no_grad():  # weights far from their initial values, so a mix-up would show
        for p in module.model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, run / "best.ckpt")
    tokenizer.save(run)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": MODEL, "training": TRAINING, "seed": 7}))
    return run / "best.ckpt"


def test_export_holds_data_only(checkpoint, tmp_path):
    folder = export_model(checkpoint, tmp_path / "exported")
    assert sorted(p.name for p in folder.iterdir()) == sorted(EXPORTED_FILES)
    for path in folder.iterdir():
        assert not path.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH), path
        head = path.read_bytes()[:2]
        assert head not in (b"PK", b"\x80\x02", b"\x80\x04", b"\x80\x05"), f"{path.name} looks like a pickle or zip archive"
    meta = yaml.safe_load((folder / EXPORT_MODEL).read_text())
    assert meta["format"] == "lyria-export" and meta["hyper_parameters"]["model"]["d_model"] == 32
    assert yaml.safe_load((folder / "config.yaml").read_text())["seed"] == 7  # the run's resolved config


def test_exported_model_gives_the_same_logits(checkpoint, tmp_path):
    folder = export_model(checkpoint, tmp_path / "exported")
    original, tokenizer, _ = load_model(checkpoint)
    exported, exported_tokenizer, hparams = load_model(folder)
    assert exported_tokenizer.vocab_sizes == tokenizer.vocab_sizes and hparams["style_names"] == ["a", "b"]
    tokens = torch.randint(tokenizer.num_special, tokenizer.vocab_size, (2, 40))
    style = {"style": torch.tensor([0, 1])}
    assert torch.equal(original(tokens, cond=style)[0], exported(tokens, cond=style)[0])


def test_generation_from_the_export_writes_the_same_midi(checkpoint, tmp_path, compose_train):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    folder = tmp_path / "exported"
    result = subprocess.run(
        [sys.executable, "-m", "lyria.cli.export", f"ckpt={checkpoint}", f"output_dir={folder}", f"hydra.run.dir={tmp_path / 'h'}"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    outputs = {}
    for name, ckpt in (("checkpoint", checkpoint), ("export", folder)):
        cfg = compose_train(f"ckpt={ckpt}", f"output_dir={tmp_path / name}", "n=2", "batch_size=2", "max_new_tokens=48", "seed=3",
                            "render.formats=[midi]", config_name="generate")
        index = generate(cfg)
        outputs[name] = {entry["files"]["midi"]: (tmp_path / name / entry["files"]["midi"]).read_bytes() for entry in index["samples"]}
    assert outputs["checkpoint"] and outputs["checkpoint"] == outputs["export"]


def test_an_existing_folder_is_not_overwritten_unless_asked(checkpoint, tmp_path):
    target = tmp_path / "exported"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="output_dir=.*exported exists and is not empty.*overwrite=true"):
        export_model(checkpoint, target)
    export_model(checkpoint, target, overwrite=True)
    assert not (target / "notes.txt").exists() and (target / EXPORT_WEIGHTS).is_file()


def test_a_damaged_export_is_named(checkpoint, tmp_path):
    folder = export_model(checkpoint, tmp_path / "exported")
    weights = folder / EXPORT_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable safetensors file"):
        load_model(folder)
    (folder / EXPORT_MODEL).unlink()
    with pytest.raises(CheckpointError, match=r"not a lyria-export folder: model\.yaml is missing"):
        load_model(folder)


def test_a_crafted_export_config_is_refused_before_anything_runs(checkpoint, tmp_path):
    folder = export_model(checkpoint, tmp_path / "exported")
    marker = tmp_path / "ran"
    meta = yaml.safe_load((folder / EXPORT_MODEL).read_text())
    meta["hyper_parameters"]["model"]["mixer"] = {"_target_": "os.system", "_args_": [f"touch {marker}"]}
    (folder / EXPORT_MODEL).write_text(yaml.safe_dump(meta))
    with pytest.raises(DisallowedTargetError, match=r"model\.yaml: hyper_parameters\.model\.mixer\._target_: refusing to load 'os.system'"):
        load_model(folder)
    # YAML tags that construct Python objects are not read either
    (folder / EXPORT_MODEL).write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(CheckpointError, match=r"model\.yaml is not readable YAML"):
        load_model(folder)
    assert not marker.exists()
