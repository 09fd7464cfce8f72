"""Every tokenizer (conf/tokenizer/*.yaml, and learned vocabularies) through prepare -> train -> generate -> MIDI.

Each run prepares all six corpus styles, so every tokenizer x style pair is prepared, trained on and
validated; runs also rotate the mixer and whether generation continues a prompt, so the cheap axes
are covered too without a full product.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from symusic import Score
from tokenizer_support import SINGLE_STREAM, STYLES, TOKENIZER_NAMES

from lyria.generation.generate import generate
from lyria.tokenizers import LyriaTokenizer
from lyria.training.train import train

MIXERS = ["attention_rope", "attention_alibi", "dilated_conv", "hierarchical", "attention_sliding", "hybrid_attention_conv"]
CASES = [(name, None) for name in TOKENIZER_NAMES] + [(name, 500) for name in SINGLE_STREAM[:2]]


@pytest.mark.slow
@pytest.mark.parametrize("index,case", list(enumerate(CASES)), ids=[f"{n}{'+bpe' if v else ''}" for n, v in CASES])
def test_tokenizer_prepare_train_generate_parse(index, case, compose_train, tmp_path, test_split_pieces):
    name, learned = case
    mixer = MIXERS[index % len(MIXERS)]
    cfg = compose_train(
        f"tokenizer={name}",
        f"tokenizer.learned_vocab_size={learned if learned else 'null'}",
        f"model/mixer={mixer}",
        "data.max_pieces_per_style=3",
        "data.val_fraction=0.2",
    )
    metrics, objects = train(cfg)
    report = objects["prepared"].report
    assert set(report["per_style"]) == set(STYLES) and all(report["per_style"][s]["tokens"] > 0 for s in STYLES)
    assert metrics["global_step"] == cfg.trainer.max_steps
    assert metrics["val/nll_per_note"] > 0 and metrics["val/bits_per_note"] > 0
    checkpoint = Path(objects["paths"]["best_checkpoint"])
    stored = LyriaTokenizer.load(checkpoint.parent)
    assert stored.is_trained == bool(learned) and stored.vocab_sizes == objects["tokenizer"].vocab_sizes

    overrides = [f"ckpt={checkpoint}", "n=3", "max_new_tokens=48", f"output_dir={tmp_path / 'samples'}"]
    if index % 2:  # continue the first bars of a test piece
        prompt = tmp_path / "prompt.mid"
        test_split_pieces[STYLES[index % len(STYLES)]][0][1].dump_midi(str(prompt))
        overrides += [f"prompt={prompt}", "prompt_bars=2"]
    if stored.is_compound:
        overrides.append("field_temperature={Pitch: 1.1}")
    index_json = generate(compose_train(*overrides, config_name="generate"))
    assert index_json["failed"] == 0, index_json["failures"]
    for sample in index_json["samples"]:
        score = Score(str(tmp_path / "samples" / sample["files"]["midi"]))
        assert score.note_num() == sample["n_notes"] > 0
