"""Optimizer groups, the warm-up + cosine schedule, and RNG states that survive a checkpoint."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from lyria.models.lm import LyriaLM
from lyria.training.callbacks import capture_rng_state, restore_rng_state
from lyria.training.optim import parameter_groups, warmup_cosine

ROPE = {"_target_": "lyria.models.mixers.AttentionMixer", "position": {"_target_": "lyria.models.positions.RotaryPosition"}}


def test_weight_decay_only_on_matrix_weights():
    model = LyriaLM([50], ROPE, d_model=16, n_layers=2, n_heads=2, d_ff=32)
    decay, plain = parameter_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim == 2 for p in decay["params"])
    assert id(model.embeddings[0].weight) not in decayed  # tied with the head: never decayed
    assert not any("norm" in names[i] or names[i].endswith("bias") for i in decayed)
    assert any(names[i].endswith("qkv.weight") for i in decayed) and any(names[i].endswith("ffn.up.weight") for i in decayed)
    assert len(decay["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_schedule_warms_up_linearly_then_follows_a_cosine_to_the_floor():
    lrs = [warmup_cosine(step, warmup_steps=10, total_steps=110, min_lr_ratio=0.1) for step in range(130)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert lrs[60] == pytest.approx(0.55)  # half-way down the cosine
    assert all(a >= b for a, b in zip(lrs[10:110], lrs[11:110]))
    assert lrs[110] == pytest.approx(0.1) and lrs[129] == pytest.approx(0.1)


def test_rng_states_round_trip_through_a_weights_only_checkpoint():
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], np.random.normal())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restore_rng_state(torch.load(buffer, weights_only=True))
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)], np.random.normal())
    assert torch.equal(expected[0], again[0])
    np.testing.assert_array_equal(expected[1], again[1])
    assert expected[2] == again[2] and expected[3] == again[3]
