"""Every command-line tool given an unknown key, a wrong type or an impossible value exits non-zero at start-up
with one line on stderr naming the key and what is allowed; no traceback (LYRIA_DEBUG=1 shows one)."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lyria.cli import user_errors
from tests_support import make_score

# (tool, arguments, a regex the one-line message must match: the key, and what is allowed). FILES: a folder with
# `dummy.ckpt` (any file: the values are checked before it is read), `corrupt.ckpt`, `runs/` and `samples/`.
CASES = [
    # lyria-train
    ("train", ["training.optimizer.lr=-1"], r"training\.optimizer\.lr=-1\.0 is not allowed: expected a number > 0"),
    ("train", ["training.lrr=1"], r"unknown config key 'training\.lrr'.*Allowed keys under 'training'"),
    ("train", ["+training.optimizer.learning_rate=1"], r"'training\.optimizer\.learning_rate'.*Allowed keys.*'lr'"),
    ("train", ["data.batch_size=many"], r"config key 'data\.batch_size'.*could not be converted to Integer"),
    ("train", ["data.batch_size=0"], r"data\.batch_size=0 is not allowed: expected an integer >= 1"),
    ("train", ["model/mixer=attention_sliding", "model.max_seq_len=64"], r"model\.mixer\.window=128 is not allowed.*model\.max_seq_len=64"),
    ("train", ["data.source.styles.0.composer=bachh"], r"data\.source\.styles\[0\]\.composer='bachh'.*did you mean 'bach'"),
    ("train", ["model=lm_typo"], r"Could not find 'model/lm_typo'.*options in 'model': lm_base, lm_small"),
    ("train", ["training.nonfinite=ignore"], r"training\.nonfinite='ignore' is not allowed: expected one of \['stop', 'skip'\]"),
    ("train", ["training.cpu_allocator=fast"], r"training\.cpu_allocator='fast' is not allowed: expected one of \['keep', 'default'\]"),
    ("train", ["model.n_heads=3"], r"model\.d_model=256 is not allowed with model\.n_heads=3"),
    ("train", ["data.val_fraction=0.6", "data.test_fraction=0.5"], r"data\.val_fraction=0\.6 plus data\.test_fraction=0\.5"),
    ("train", ["ckpt_path=nowhere.ckpt"], r"ckpt_path='nowhere\.ckpt' is not allowed: expected an existing file"),
    ("train", ["model.dropout=1.5"], r"model\.dropout=1\.5 is not allowed: expected a number >= 0 and < 1"),
    ("train", ["trainer.max_steps=0"], r"trainer\.max_steps=0 is not allowed: expected -1 \(no limit\) or an integer >= 1"),
    ("train", ["seed=-5"], r"seed=-5 is not allowed"),
    ("train", ["seed=x="], r"cannot parse the command-line override.*seed=x="),
    # lyria-generate
    ("generate", [], r"config key 'ckpt' is required"),
    ("generate", ["ckpt=missing.ckpt"], r"ckpt='missing\.ckpt' is not allowed: expected an existing file or folder"),
    ("generate", ["ckpt=dummy.ckpt", "n=0"], r"n=0 is not allowed: expected an integer >= 1"),
    ("generate", ["ckpt=dummy.ckpt", "top_p=2"], r"top_p=2\.0 is not allowed: expected a number > 0 and <= 1"),
    ("generate", ["ckpt=dummy.ckpt", "temperature=-1"], r"temperature=-1\.0 is not allowed: expected a number > 0"),
    ("generate", ["ckpt=dummy.ckpt", "top_k=0"], r"top_k=0 is not allowed"),
    ("generate", ["ckpt=dummy.ckpt", "+temprature=2"], r"unknown config key 'temprature'; did you mean 'temperature'"),
    ("generate", ["ckpt=dummy.ckpt", "prompt=broken.mid"], r"prompt='broken\.mid' is not a readable MIDI file: RuntimeError: MiniMidi"),
    ("generate", ["ckpt=dummy.ckpt", "infill=tune.mid", "bars=1-2", "input_limits.max_notes=2"],
     r"infill='tune\.mid' is over a limit: notes 4 > input_limits\.max_notes=2 "),
    ("generate", ["ckpt=dummy.ckpt", "prompt=missing.mid"], r"prompt='missing\.mid' is not allowed: expected an existing file"),
    ("generate", ["ckpt=dummy.ckpt", "max_new_tokens=0"], r"max_new_tokens=0 is not allowed"),
    ("generate", ["ckpt=dummy.ckpt", "window.keep_fraction=1.5"], r"window\.keep_fraction=1\.5 is not allowed: expected a number > 0 and < 1"),
    ("generate", ["ckpt=dummy.ckpt", "render.backend=timidity"], r"render\.backend='timidity' is not allowed: expected one of \['synth', 'fluidsynth'\]"),
    ("generate", ["ckpt=dummy.ckpt", "cfg_scale=-1"], r"cfg_scale=-1\.0 is not allowed: expected a number >= 0"),
    ("train", ["model/conditioning=style_token", "model.conditioning.dropout=1"], r"model\.conditioning\.dropout=1(\.0)? is not allowed"),
    ("generate", ["ckpt=dummy.ckpt", "+field_temperature={Pitch: -1}"], r"field_temperature\.Pitch=-1(\.0)? is not allowed: expected a number > 0"),
    # lyria-evaluate
    ("evaluate", [], r"config key 'generated' is required"),
    ("evaluate", ["generated=nowhere"], r"generated='nowhere' is not allowed: expected an existing folder"),
    ("evaluate", ["generated=samples", "reference=testt"], r"reference='testt' is not allowed: expected 'test' or 'validation' or 'train' or an existing folder"),
    ("evaluate", ["generated=samples", "eval.num_proc=0"], r"eval\.num_proc=0 is not allowed"),
    ("evaluate", ["generated=samples", "+eval.foo=1"], r"unknown config key 'eval\.foo'.*Allowed keys under 'eval'"),
    ("evaluate", ["generated=samples", "training_data=nowhere.yaml"], r"training_data='nowhere\.yaml' is not allowed: expected 'auto' or 'composed' or an existing file"),
    ("evaluate", ["generated=samples", "checkpoint=missing.ckpt"], r"checkpoint='missing\.ckpt' is not allowed"),
    # lyria-leaderboard
    ("leaderboard", [], r"config key 'runs' is required"),
    # (Hydra makes runs/leaderboard, its output folder, before lyria starts)
    ("leaderboard", ["runs=nowhere"], r"runs='nowhere': no usable runs under nowhere"),
    ("leaderboard", ["runs=runs", "confidence=1.5"], r"confidence=1\.5 is not allowed: expected a number > 0 and < 1"),
    ("leaderboard", ["runs=runs", "n_resamples=0"], r"n_resamples=0 is not allowed: expected an integer >= 100"),
    ("leaderboard", ["runs=runs", "alpha=x"], r"config key 'alpha'.*could not be converted to Float"),
    ("leaderboard", ["runs=runs", "+rank=x"], r"unknown config key 'rank'; did you mean 'rank_by'"),
    # lyria-export
    ("export", ["ckpt=missing.ckpt", "output_dir=out"], r"ckpt='missing\.ckpt' is not allowed"),
    ("export", ["ckpt=dummy.ckpt"], r"config key 'output_dir' is required"),
]
# These get past the value checks and fail a moment later (a tokenizer, a class signature, a checkpoint read):
# still at start-up, but after importing torch and Lightning (seconds each).
SLOW_CASES = [
    ("train", ["+trainer.max_stepz=3"], r"unknown config key 'trainer\.max_stepz'; did you mean 'trainer\.max_steps'.*accepts"),
    ("train", ["training.infilling_rate=0.5", "tokenizer=tsd"], r"training\.infilling_rate=0\.5 needs a tokenizer whose tokens mark bars"),
    ("generate", ["ckpt=dummy.ckpt", "render.formats=[midi,mp3]"], r"render\.formats\[1\].*'mp3'.*\['midi', 'musicxml', 'png', 'wav'\]"),
    ("generate", ["ckpt=corrupt.ckpt"], r"corrupt\.ckpt is not a readable checkpoint \(truncated or corrupt\?\)"),
    ("export", ["ckpt=corrupt.ckpt", "output_dir=out"], r"corrupt\.ckpt is not a readable checkpoint"),
    # found once the model and the piece are read (a real checkpoint with a 64-token context)
    ("generate", ["ckpt=model/best.ckpt", "infill=short.mid", "bars=50-60", "render.formats=[midi]"], r"bars=50-60: the piece has \d+ bars"),
    ("generate", ["ckpt=model/best.ckpt", "prompt=long.mid", "window.keep_fraction=0.02", "render.formats=[midi]"],
     r"the prompt's pinned part has \d+ tokens but only \d+ are kept when the context \(64\) is full: shorten the prompt"),
    ("generate", ["ckpt=model/best.ckpt", "prompt=long.mid", "max_bars=2", "render.formats=[midi]"], r"max_bars=2 leaves no room after the prompt's \d+ bars"),
    ("generate", ["ckpt=model/best.ckpt", "style=jazz", "render.formats=[midi]"], r"style.*'jazz'"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "dummy.ckpt").write_bytes(b"checked for existence only")
    (root / "corrupt.ckpt").write_bytes(b"PK\x03\x04 truncated")
    (root / "runs").mkdir()
    (root / "samples").mkdir()
    (root / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x10\x00\x00\x90")
    make_score([60, 62, 64, 65]).dump_midi(str(root / "tune.mid"))
    return root


@pytest.fixture(scope="module")
def model_files(files) -> Path:
    """A real (untrained) checkpoint with a 64-token context, a short and a long MIDI file, in `files`."""
    import torch

    from lyria.tokenizers import LyriaTokenizer
    from lyria.training.module import LyriaLightningModule

    model = {
        "mixer": {"_target_": "lyria.models.mixers.AttentionMixer", "position": {"_target_": "lyria.models.positions.RotaryPosition"}},
        "conditioning": {"_target_": "lyria.models.conditioning.Conditioner"},
        "d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64, "dropout": 0.0, "max_seq_len": 64,
    }
    training = {"optimizer": {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8}, "warmup_steps": 1, "total_steps": 10, "min_lr_ratio": 0.1}
    tokenizer = LyriaTokenizer(styles=["a"])
    module = LyriaLightningModule(model, training, tokenizer.vocab_sizes, tokenizer.num_style_slots, tokenizer.pad_id, tokenizer.styles)
    (files / "model").mkdir(exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, files / "model" / "best.ckpt")
    tokenizer.save(files / "model")
    make_score([60, 62, 64, 65, 67, 69, 71, 72]).dump_midi(str(files / "short.mid"))
    make_score([60 + (i * 7) % 24 for i in range(200)]).dump_midi(str(files / "long.mid"))
    return files


def run_tool(tool: str, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "WANDB_MODE": "offline", **env}
    environment.pop("LYRIA_DEBUG", None) if "LYRIA_DEBUG" not in env else None
    return subprocess.run(
        [sys.executable, "-m", f"lyria.cli.{tool}", *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300
    )


def _check(result: subprocess.CompletedProcess, tool: str, message: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    # one line, ours: warnings from libraries imported before the check may precede it
    errors = [line for line in lines if line.startswith(f"lyria-{tool}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert re.search(message, errors[0]), errors[0]


@pytest.fixture(scope="module")
def results(files) -> dict[int, subprocess.CompletedProcess]:
    """Every case of CASES run once, a few at a time (each is a short process start-up)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {i: pool.submit(run_tool, tool, args, files) for i, (tool, args, _) in enumerate(CASES)}
        return {i: future.result() for i, future in futures.items()}


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{t}:{' '.join(a) or 'no-args'}" for t, a, _ in CASES])
def test_a_bad_command_line_is_one_line_naming_the_key(results, case):
    tool, _, message = CASES[case]
    _check(results[case], tool, message)


@pytest.mark.slow
@pytest.mark.parametrize(("tool", "args", "message"), SLOW_CASES, ids=[f"{t}:{' '.join(a)}" for t, a, _ in SLOW_CASES])
def test_errors_found_after_the_imports_are_one_line_too(model_files, tool, args, message):
    _check(run_tool(tool, args, model_files), tool, message)


def test_the_table_covers_every_tool_and_at_least_thirty_cases():
    tools = {tool for tool, _, _ in CASES}
    assert tools >= {"train", "generate", "evaluate", "leaderboard", "export"} and len(CASES) >= 30


def test_lyria_debug_shows_the_traceback(files):
    result = run_tool("generate", ["ckpt=dummy.ckpt", "top_p=2"], files, LYRIA_DEBUG="1")
    assert result.returncode != 0 and "Traceback" in result.stderr and "ConfigError" in result.stderr


def test_a_full_disk_met_by_any_library_is_one_line(capsys, monkeypatch):
    monkeypatch.delenv("LYRIA_DEBUG", raising=False)
    with pytest.raises(SystemExit) as stopped, user_errors("lyria-train"):
        raise OSError(errno.ENOSPC, "No space left on device", "outputs/run/csv/metrics.csv")
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lyria-train: error: disk full:") and "metrics.csv" in err


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.delenv("LYRIA_DEBUG", raising=False)
    with pytest.raises(ZeroDivisionError), user_errors("lyria-train"):
        1 / 0  # noqa: B018
