"""lyria-generate end to end on a model trained with the infilling objective: whole pieces, continuation
and infilling through the real configs, every sample written; settings that cannot work are named."""

from __future__ import annotations

import json

import pytest
from symusic import Score
from tests_support import make_score

from lyria.config import ConfigError
from lyria.generation.generate import generate
from lyria.training.train import train


@pytest.fixture
def infilling_checkpoint(compose_train):
    metrics, objects = train(compose_train("training.infilling_rate=0.5", "trainer.max_steps=4", "trainer.limit_val_batches=1"))
    return objects["paths"]["last_checkpoint"]


@pytest.mark.slow
def test_new_pieces_continuations_and_infillings(infilling_checkpoint, compose_train, tmp_path):
    piece = tmp_path / "piece.mid"
    make_score([60 + (i * 7) % 12 for i in range(40)], numerator=4).dump_midi(str(piece))
    runs = {
        "new": ["max_bars=3", "max_new_tokens=400"],
        "continue": [f"prompt={piece}", "prompt_bars=2", "max_bars=4", "max_new_tokens=400"],
        "infill": [f"infill={piece}", "bars=3-4", "max_new_tokens=300"],
    }
    for mode, overrides in runs.items():
        out = tmp_path / mode
        index = generate(compose_train(f"ckpt={infilling_checkpoint}", "n=3", "batch_size=2", f"output_dir={out}", *overrides, config_name="generate"))
        assert index["mode"] == mode and index["failed"] == 0 and index["written"] == 3
        assert json.loads((out / "index.json").read_text())["stop_reasons"] == index["stop_reasons"]
        assert sum(index["stop_reasons"].values()) == 3
        original = Score(str(piece)).tracks[0].notes
        for sample in index["samples"]:
            notes = Score(str(out / sample["files"]["midi"])).tracks[0].notes
            if mode == "infill":  # bars 3-4 of 4/4 at 480 ticks per quarter: ticks [3840, 7680)
                outside = [(n.time, n.pitch) for n in notes if not 3840 <= n.time < 7680]
                assert outside == [(n.time, n.pitch) for n in original if not 3840 <= n.time < 7680]
            if mode == "continue":
                assert [(n.time, n.pitch) for n in notes if n.time < 3840] == [(n.time, n.pitch) for n in original if n.time < 3840]
            if mode != "infill":
                assert sample["stop_reason"] in ("eos", "max_bars", "max_new_tokens") and sample["bars"] <= 4


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["prompt=a.mid", "infill=b.mid", "bars=1-2"], "give one of them"),
        (["infill=b.mid"], "needs bars=FIRST-LAST"),
        (["bars=2-3"], "infill is not set"),
        (["max_bars=0"], "max_bars=0 is not allowed: expected an integer >= 1"),
        (["window.keep_fraction=1.5"], "keep_fraction"),
        ([], r"ckpt='.*missing\.ckpt' is not allowed: expected an existing file or folder"),
    ],
)
def test_settings_that_cannot_work_are_named(compose_train, overrides, message, tmp_path):
    (tmp_path / "a.mid").write_bytes(b"")
    (tmp_path / "b.mid").write_bytes(b"")
    (tmp_path / "dummy.ckpt").write_bytes(b"")  # the settings are checked before the checkpoint is read
    overrides = [f"{o.split('=')[0]}={tmp_path / o.split('=')[1]}" if o.endswith(".mid") else o for o in overrides]
    ckpt = tmp_path / ("missing.ckpt" if not overrides else "dummy.ckpt")
    cfg = compose_train(f"ckpt={ckpt}", *overrides, config_name="generate")
    with pytest.raises((ConfigError, ValueError), match=message):
        generate(cfg)


def test_infilling_needs_a_tokenizer_that_marks_bars(compose_train):
    with pytest.raises(ConfigError, match="training.infilling_rate=0.5 needs a tokenizer whose tokens mark bars"):
        train(compose_train("tokenizer=tsd", "training.infilling_rate=0.5"))
