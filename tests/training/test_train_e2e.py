"""The main job end to end on the real configs: train, checkpoint, resume exactly, generate."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from symusic import Score

from lyria.generation.generate import generate
from lyria.checkpoint import load_model
from lyria.training.train import train
from tests_support import make_score


class BatchRecorder(L.Callback):
    """Records a digest of every training batch with the global step it was used at."""

    def __init__(self) -> None:
        self.batches: dict[int, str] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        digest = hashlib.sha1(batch["tokens"].numpy().tobytes() + batch["targets"].numpy().tobytes()).hexdigest()
        self.batches[trainer.global_step] = digest


@pytest.mark.slow
def test_train_then_generate_on_default_data(compose_train, tmp_path):
    cfg = compose_train()
    metrics, objects = train(cfg)
    paths = objects["paths"]
    assert metrics["global_step"] == cfg.trainer.max_steps
    assert torch.isfinite(torch.tensor(metrics["final_val_loss"]))
    assert metrics["unigram_val_loss"] > 0
    # Six styles of the music21 corpus, each a label
    report = json.loads(Path(paths["data_report"]).read_text())
    assert len(report["styles"]) >= 6 and set(report["per_style"]) == set(report["styles"])
    # The checkpoint holds plain containers only
    state = torch.load(paths["last_checkpoint"], weights_only=True)
    assert state["global_step"] == cfg.trainer.max_steps
    assert (Path(paths["best_checkpoint"]).parent / "tokenizer.json").is_file()
    assert (Path(paths["run_dir"]) / "summary.txt").read_text().count("unigram baseline") == 1

    gen_cfg = compose_train(
        f"ckpt={paths['best_checkpoint']}",
        "n=3",
        "max_new_tokens=64",
        "top_k=8",
        f"output_dir={tmp_path / 'samples'}",
        config_name="generate",
    )
    index = generate(gen_cfg)
    # the grammar mask (on in the default processors) keeps every sample decodable
    assert index["failed"] == 0 and index["written"] == 3, index["failures"]
    for sample in index["samples"]:
        score = Score(str(tmp_path / "samples" / sample["files"]["midi"]))
        assert score.note_num() == sample["n_notes"] > 0
        # every default format is written, or its failure is listed with a reason
        assert set(sample["files"]) | set(sample.get("render_failures", {})) == {"midi", "musicxml", "wav", "png"}
        assert all((tmp_path / "samples" / name).stat().st_size > 0 for name in sample["files"].values())
    for failure in index["failures"]:
        assert failure["reason"]

    # continuation: the prompt's first two bars come first in every sample
    prompt = tmp_path / "prompt.mid"
    make_score([60, 62, 64, 65, 67, 65, 64, 62, 60, 59, 60, 62]).dump_midi(str(prompt))
    continued = generate(
        compose_train(
            f"ckpt={paths['best_checkpoint']}", "n=2", "max_new_tokens=16", f"prompt={prompt}", "prompt_bars=2",
            f"output_dir={tmp_path / 'continued'}", config_name="generate",
        )
    )
    tokenizer = objects["tokenizer"]
    prompt_ids = tokenizer.encode(Score(str(prompt)))
    expected_prompt = 1 + int((prompt_ids.bar_ids < 2).sum())
    assert all(s["prompt_tokens"] == expected_prompt for s in continued["samples"] + continued["failures"])
    for sample in continued["samples"]:
        notes = Score(str(tmp_path / "continued" / sample["files"]["midi"])).tracks[0].notes
        assert [n.pitch for n in notes][:8] == [60, 62, 64, 65, 67, 65, 64, 62]


@pytest.mark.slow
def test_resume_from_last_checkpoint_sees_the_same_next_batch(compose_train, tmp_path):
    # batch_size 4 over ~20 pieces: 5+ batches an epoch, so step 3 is mid-epoch
    common = ["data.batch_size=4", "trainer.val_check_interval=100", "trainer.limit_val_batches=0", "callbacks.model_checkpoint.monitor=null"]
    full = BatchRecorder()
    train(compose_train(*common, "trainer.max_steps=7", f"paths.output_dir={tmp_path / 'full'}"), callbacks=[full])

    first = BatchRecorder()
    train(compose_train(*common, "trainer.max_steps=3", f"paths.output_dir={tmp_path / 'part'}"), callbacks=[first])
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3

    resumed = BatchRecorder()
    train(
        compose_train(*common, "trainer.max_steps=7", f"paths.output_dir={tmp_path / 'resumed'}", f"ckpt_path={last}"),
        callbacks=[resumed],
    )
    assert min(resumed.batches) == 3
    assert {s: first.batches[s] for s in range(3)} == {s: full.batches[s] for s in range(3)}
    assert resumed.batches == {s: full.batches[s] for s in range(3, 7)}


@pytest.mark.slow
def test_midi_folder_with_corrupt_and_empty_files_trains_and_reports_skips(compose_train, midi_folder):
    cfg = compose_train("data=midi_folder", f"data.path={midi_folder}", "data.max_pieces_per_style=null")
    metrics, objects = train(cfg)
    report = objects["prepared"].report
    assert report["skipped_count"] == 2
    reasons = {Path(s["piece_id"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"corrupt.mid", "empty.mid"}
    assert "empty" in reasons["empty.mid"]
    assert report["styles"] == ["airs", "jigs"]
    assert metrics["global_step"] == cfg.trainer.max_steps
    model, tokenizer, _ = load_model(objects["paths"]["best_checkpoint"])
    assert tokenizer.styles == ["airs", "jigs"]


@pytest.mark.slow
def test_command_line_apps_run_as_modules_and_keep_the_resolved_config(tmp_path, shared_cache):
    run = tmp_path / "cli"
    common = [f"paths.cache_dir={shared_cache}", "data.max_pieces_per_style=4", "data.num_proc=1", "model.d_model=64",
              "model.n_layers=2", "model.d_ff=128", "model.max_seq_len=128"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    subprocess.run(
        [sys.executable, "-m", "lyria.cli.train", "trainer=debug", f"hydra.run.dir={run}", *common],
        check=True, env=env, capture_output=True, timeout=600,
    )
    assert (run / ".hydra" / "config.yaml").is_file()
    assert list((run / "wandb").glob("offline-run-*")), "the default wandb logger runs offline"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metrics"]["global_step"] == 6
    out = subprocess.run(
        [sys.executable, "-m", "lyria.cli.generate", f"ckpt={run / 'checkpoints' / 'best.ckpt'}", "n=2", "max_new_tokens=32",
         f"hydra.run.dir={run / 'samples'}"],
        check=True, env=env, capture_output=True, text=True, timeout=600,
    )
    index = json.loads((run / "samples" / "index.json").read_text())
    assert index["failed"] == 0 and index["written"] == 2, index["failures"]
    assert f"wrote {index['written']} samples as midi/musicxml/wav/png" in out.stdout


@pytest.mark.slow
def test_a_short_training_run_beats_the_unigram_baseline_clearly(compose_train):
    cfg = compose_train("trainer.max_steps=150", "trainer.val_check_interval=50", "trainer.limit_val_batches=null",
                        "training.warmup_steps=20", "training.optimizer.lr=3e-3", "callbacks.sample_monitor=null")
    metrics, _ = train(cfg)
    assert metrics["global_step"] == 150 and "undertrained" not in metrics
    # a model that learned nothing of the music sits at the unigram loss; this one must be well below it
    assert metrics["final_val_loss"] < 0.75 * metrics["unigram_val_loss"], metrics


@pytest.mark.slow
@pytest.mark.parametrize("steps", [4, 5])  # mid-epoch, and the epoch's last batch (5 batches an epoch)
def test_the_last_step_off_the_validation_interval_is_checkpointed_and_extends_exactly(compose_train, tmp_path, steps):
    common = ["data.batch_size=4", "trainer.val_check_interval=3", "trainer.limit_val_batches=1"]
    full = BatchRecorder()
    train(compose_train(*common, "trainer.max_steps=8", f"paths.output_dir={tmp_path / 'full'}"), callbacks=[full])

    metrics, _ = train(compose_train(*common, f"trainer.max_steps={steps}", f"paths.output_dir={tmp_path / 'part'}"))
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == steps  # not 3, the last validation's step

    resumed = BatchRecorder()
    train(compose_train(*common, "trainer.max_steps=8", f"paths.output_dir={tmp_path / 'more'}", f"ckpt_path={last}"), callbacks=[resumed])
    assert resumed.batches == {s: full.batches[s] for s in range(steps, 8)}
