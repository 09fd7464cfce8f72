"""Banded (sliding-window) attention equals dense attention under a band mask, for every positional scheme."""

from __future__ import annotations

import pytest
import torch

from lyria.models.mixers.attention import banded_attention
from lyria.models.positions import ALiBiPosition, Positional


def dense_band(q, k, v, q_pos, k_pos, window, position):
    distance = q_pos[:, None] - k_pos[None, :]
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    bias = position.bias(q_pos, k_pos)
    if bias is not None:
        scores = scores + bias
    scores = scores.masked_fill((distance < 0) | (distance >= window), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


@pytest.mark.parametrize("position", [Positional(16, 4, 0), ALiBiPosition(16, 4, 0)], ids=["nope", "alibi"])
@pytest.mark.parametrize(
    "queries,past,window",
    [(37, 0, 5), (37, 0, 1), (8, 30, 5), (3, 2, 5), (1, 9, 4), (20, 0, 64)],
    ids=["long", "window-1", "after-cache", "short-cache", "one-token", "window-longer-than-sequence"],
)
def test_banded_equals_dense(position, queries, past, window):
    torch.manual_seed(0)
    q = torch.randn(2, 4, queries, 4)
    k, v = torch.randn(2, 2, 4, past + queries, 4).unbind(0)
    start = 100  # positions need not start at zero: decoding continues a sequence
    q_pos = torch.arange(start + past, start + past + queries)
    k_pos = torch.arange(start, start + past + queries)
    banded = banded_attention(q, k, v, q_pos, window, position, dropout=0.0)
    assert torch.allclose(banded, dense_band(q, k, v, q_pos, k_pos, window, position), atol=1e-5)


def test_alibi_penalises_distance():
    bias = ALiBiPosition(8, 2, 0).bias(torch.arange(3), torch.arange(3))
    assert bias.shape == (2, 3, 3)
    assert bias[0, 2].tolist() == [-0.125, -0.0625, 0.0]  # the first of 2 heads has slope 2 ** (-8 / 2) = 1/16
