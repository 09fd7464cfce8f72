"""A style-conditioned model trained briefly on two clearly different styles generates each of them: style
fidelity, scored by lyria-evaluate with the data's own classifier, is well above chance (0.5).
On the 2-core build machine (shared): fidelity 1.0 (16 of 16 samples), about 105 s."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from lyria.cli import CONF_DIR
from test_style_classifier import write_corpus


@pytest.mark.slow
def test_a_style_conditioned_model_generates_its_styles_well_above_chance(compose_train, tmp_path, one_thread):
    from lyria.evaluation.evaluate import evaluate
    from lyria.generation.generate import generate
    from lyria.training.train import train

    corpus = write_corpus(tmp_path / "corpus", per_style=16)
    cfg = compose_train(
        "data=midi_folder", f"data.path={corpus}", "data.max_pieces_per_style=null", "data.test_fraction=0.3",
        "data.val_fraction=0.1", "data.transpose=[0,0]", "model/conditioning=style_token", "model.style_output=true", "trainer.max_steps=400",
        "trainer.val_check_interval=200",
    )
    _, objects = train(cfg)
    checkpoint = objects["paths"]["best_checkpoint"]
    samples = tmp_path / "samples"
    generate(compose_train(
        f"ckpt={checkpoint}", "style=all", "n=8", "batch_size=8", "max_new_tokens=256", "render.formats=[midi]",
        f"output_dir={samples}", config_name="generate",
    ))
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        evaluation = compose(config_name="evaluate", overrides=[
            f"generated={samples}", f"paths.cache_dir={cfg.paths.cache_dir}", "eval=fast", f"output_dir={tmp_path / 'evaluation'}",
            "eval.num_proc=1", "quiet=true",
        ])
    document = evaluate(evaluation)
    style = document["style"]
    assert document["generated"]["styles"] == {"airs": 8, "jigs": 8}
    assert style["chance"] == 0.5 and style["fidelity"] >= 0.8, style
    assert style["fidelity.airs"] >= 0.6 and style["fidelity.jigs"] >= 0.6, style
