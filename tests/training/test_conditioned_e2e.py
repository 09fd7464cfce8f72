"""A style-conditioned run end to end: train with a conditioning scheme, then `style=all` writes n pieces per
style, index.json records each one's style, and an unknown style fails naming the known ones."""

from __future__ import annotations

import json

import pytest
import torch

from lyria.checkpoint import load_model
from lyria.config import ConfigError
from lyria.generation.generate import generate
from lyria.training.train import train


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["style_token", "adaln"])
def test_conditioned_training_then_every_style_is_generated(compose_train, midi_folder, tmp_path, scheme):
    cfg = compose_train(
        "data=midi_folder", f"data.path={midi_folder}", "data.max_pieces_per_style=null", f"model/conditioning={scheme}",
        "model.conditioning.dropout=0.5", "model.style_output=true",
    )
    metrics, objects = train(cfg)
    assert metrics["global_step"] == cfg.trainer.max_steps
    if scheme == "style_token":  # the style token heads every training crop
        batch = next(iter(objects["datamodule"].train_dataloader()))
        tokenizer = objects["tokenizer"]
        allowed = {tokenizer.style_token_id(s) for s in range(tokenizer.num_style_slots)}
        assert set(batch["tokens"][:, 1].tolist()) <= allowed
    checkpoint = objects["paths"]["best_checkpoint"]
    model, tokenizer, hparams = load_model(checkpoint)
    assert hparams["style_slots"] == tokenizer.style_slots == {"airs": 0, "jigs": 1}
    with torch.no_grad():  # style_output starts at zero; a few steps already tell the styles apart
        a, _ = model(torch.tensor([[tokenizer.bos_id]]), cond={"style": torch.tensor([0])})
        b, _ = model(torch.tensor([[tokenizer.bos_id]]), cond={"style": torch.tensor([1])})
    assert not torch.equal(a, b)

    out = tmp_path / "samples"
    gen = compose_train(
        f"ckpt={checkpoint}", "style=all", "cfg_scale=2.0", "n=2", "batch_size=2", "max_new_tokens=24",
        "render.formats=[midi]", f"output_dir={out}", config_name="generate",
    )
    index = generate(gen)
    entries = index["samples"] + index["failures"]
    assert sorted((e["index"], e["style"]) for e in entries) == [(0, "airs"), (1, "airs"), (2, "jigs"), (3, "jigs")]
    assert json.loads((out / "index.json").read_text())["styles"] == ["airs", "jigs"]

    bad = compose_train(f"ckpt={checkpoint}", "style=reels", "n=1", f"output_dir={out}", config_name="generate")
    with pytest.raises(ConfigError, match=r"style='reels' is not a style this checkpoint knows; it knows \['airs', 'jigs'\]"):
        generate(bad)
