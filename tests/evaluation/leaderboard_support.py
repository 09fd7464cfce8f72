"""Fake study folders for the leaderboard tests: runs laid out as a Hydra sweep leaves them, with per-piece values
drawn from known distributions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import soundfile as sf
import yaml

from tests_support import make_score

MIXER_TARGETS = {
    "attention_rope": "lyria.models.mixers.attention.AttentionMixer",
    "attention_nope": "lyria.models.mixers.attention.AttentionMixer",
    "dilated_conv": "lyria.models.mixers.conv.DilatedConvMixer",
    "hierarchical": "lyria.models.mixers.hierarchical.HierarchicalMixer",
}
@dataclass
class GroupSpec:
    """One config of a fake study: its mixer and the true means of its metrics."""

    mixer: str
    # true mean of the per-piece metric coherence.structureness
    coherence: float = 0.5
    # true values of run-level metrics (each seed adds noise)
    collapse: float = 0.3
    diversity: float = 0.6
    bits_per_note: float = 5.0
    extra_overrides: list[str] = field(default_factory=list)


def training_config(mixer: str, seed: int, run_dir: Path, d_model: int = 64) -> dict:
    position = {"_target_": "lyria.models.positions.RotaryPosition"} if mixer == "attention_rope" else None
    return {
        "data": {"cache_dir": str(run_dir.parent / "cache"), "num_proc": 1, "batch_size": 16},
        "tokenizer": {"_target_": "lyria.tokenizers.LyriaTokenizer", "miditok_class": "miditok.REMI"},
        "model": {"mixer": {"_target_": MIXER_TARGETS[mixer], "position": position}, "d_model": d_model, "n_layers": 2},
        "trainer": {"max_steps": 6},
        "logger": {"save_dir": str(run_dir)},
        "paths": {"output_dir": str(run_dir)},
        "seed": seed,
        "task_name": "train",
    }


def write_run(
    run_dir: Path,
    config: dict,
    overrides: list[str] | None,
    summary: dict | None,
    metrics: dict | None,
    choices: dict | None = None,
    samples: list[str] = (),
) -> Path:
    """A run folder as lyria-train plus the evaluation leave it; None leaves a file out."""
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints" / "config.yaml").write_text(yaml.safe_dump(config))
    if overrides is not None:
        (run_dir / ".hydra").mkdir(exist_ok=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump({**config, "paths": {"output_dir": "${hydra:runtime.output_dir}"}}))
        if choices is not None:
            (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps({"metrics": summary, "paths": {"run_dir": str(run_dir)}}))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    for name in samples:
        folder = run_dir / "samples"
        folder.mkdir(exist_ok=True)
        make_score([60, 62, 64, 65]).dump_midi(str(folder / f"{name}.mid"))
        sf.write(folder / f"{name}.wav", 0.1 * np.sin(np.linspace(0, 2 * np.pi * 440, 8000)), 8000)
        plt.imsave(folder / f"{name}.png", np.eye(16), cmap="Greys")
    return run_dir


def make_study(
    root: Path,
    groups: list[GroupSpec],
    seeds: list[int],
    n_pieces: int,
    rng: np.random.Generator,
    seed_sd: float = 0.02,
    piece_sd: float = 0.1,
    n_samples: int = 0,
) -> Path:
    """A sweep folder `root/<n>/` with one run per (group, seed), numbered like a Hydra multirun.

    Per-piece values of coherence.structureness are: group mean + seed effect + prompt effect (shared by the
    same piece name in every group, as with shared prompts) + noise. Run-level metrics get a seed effect only.
    """
    prompts = rng.normal(0.0, piece_sd, n_pieces)
    number = 0
    for spec in groups:
        for seed in seeds:
            run_dir = root / str(number)
            number += 1
            seed_effect = rng.normal(0.0, seed_sd)
            pieces = spec.coherence + seed_effect + prompts + rng.normal(0.0, piece_sd, n_pieces)
            per_piece = {
                f"sample_{i:03d}.mid": {"coherence.structureness": float(v), "features.pitch_range": float(12 + i % 5)}
                for i, v in enumerate(pieces)
            }
            metrics = {
                "version": 1,
                "assets": {"reference_set": {"version": "1", "hash": "0" * 16}},
                "generated": {"dir": "samples", "n_pieces": n_pieces},
                "reference": {"n_pieces": 40},
                "coherence": {"structureness": float(pieces.mean())},
                "mode_collapse": {"score": spec.collapse + rng.normal(0.0, seed_sd)},
                "diversity": {"vendi": spec.diversity + rng.normal(0.0, seed_sd)},
                "features": {"pitch_range_mean": 14.0},
                "baseline": {"coherence": {"structureness": 0.55}, "diversity": {"vendi": 0.7}},
                "per_piece": per_piece,
                # description, not metrics: numbers the leaderboard must not take for metrics
                "settings": {"seed": 0, "features": {"resolution": 4}},
                "seconds": {"loading": 0.5, "total": 2.0},
                "unavailable": {"coherence.nll_position": "no checkpoint"},
            }
            summary = {"final_val_bits_per_note": spec.bits_per_note + rng.normal(0.0, seed_sd), "global_step": 6}
            overrides = [f"model/mixer={spec.mixer}", f"seed={seed}", "trainer=debug", *spec.extra_overrides]
            choices = {"model/mixer": spec.mixer, "trainer": "debug", "model": "lm_small"}
            write_run(
                run_dir, training_config(spec.mixer, seed, run_dir), overrides, summary, metrics, choices,
                samples=[f"sample_{i:03d}" for i in range(min(n_samples, n_pieces))],
            )
    return root


def leaderboard_config(compose, runs: Path, *overrides: str):
    """conf/leaderboard.yaml composed (by the `compose_train` fixture) over `runs`, written beside them."""
    return compose(f"runs={runs}", f"output_dir={runs.parent / 'board'}", "n_resamples=500", *overrides, config_name="leaderboard")
