"""Shared fixtures: composing the real configs, a small shared data cache, synthetic MIDI folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from lyria.cli import CONF_DIR
from tests_support import make_score

os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and spinning threads stall when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One data cache for the session, so the music21 corpus is parsed once across tests."""
    return tmp_path_factory.mktemp("lyria-cache")


@pytest.fixture
def compose_train(tmp_path, shared_cache):
    """Composes conf/train.yaml with the debug trainer, csv logs, a tmp run folder and the shared cache."""

    def _compose(*overrides: str, config_name: str = "train"):
        base = [
            f"paths.output_dir={tmp_path / 'run'}",
            f"paths.cache_dir={shared_cache}",
        ]
        if config_name == "train":
            base += [
                "trainer=debug",
                "logger=csv",
                "data.max_pieces_per_style=4",
                "data.num_proc=1",
                "model.d_model=64",
                "model.n_layers=2",
                "model.d_ff=128",
                "model.max_seq_len=128",
            ]
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(config_name=config_name, overrides=base + list(overrides))

    return _compose


@pytest.fixture
def midi_folder(tmp_path) -> Path:
    """Two styles of small valid pieces, plus one corrupt and one empty file."""
    root = tmp_path / "midi"
    for style, base in (("jigs", 60), ("airs", 55)):
        for k in range(6):
            pitches = [base + ((k + 3 * i) % 12) for i in range(24)]
            path = root / style / f"piece{k}.mid"
            path.parent.mkdir(parents=True, exist_ok=True)
            make_score(pitches, numerator=3 if style == "jigs" else 4).dump_midi(str(path))
    (root / "jigs" / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage that is not midi")
    (root / "airs" / "empty.mid").write_bytes(b"")
    return root
