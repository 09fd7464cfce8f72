"""Music Transformer relative attention equals a naive O(L^2 D) reference; the skew reads the right distances."""

from __future__ import annotations

import pytest
import torch

from lyria.models.mixers import MixerContext
from lyria.models.mixers.relative import RelativeAttentionMixer, skew
from lyria.models.positions import Positional


def naive_relative_attention(mixer: RelativeAttentionMixer, x: torch.Tensor) -> torch.Tensor:
    """Materialises every (query, key) relative embedding: an (H, L, L, Dh) tensor, as in Shaw et al."""
    batch, length, d_model = x.shape
    heads, head_dim = mixer.n_heads, mixer.head_dim
    q, k, v = mixer.qkv(x).view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    distance = torch.arange(length)[:, None] - torch.arange(length)[None, :]
    embeddings = mixer.relative[:, distance.clamp(0, mixer.max_relative_position - 1)]  # (H, L, L, Dh)
    logits = (q @ k.transpose(-1, -2) + torch.einsum("bhid,hijd->bhij", q, embeddings)) / head_dim**0.5
    logits = logits.masked_fill(distance < 0, float("-inf"))
    out = torch.softmax(logits, dim=-1) @ v
    return mixer.out(out.transpose(1, 2).reshape(batch, length, d_model))


@pytest.mark.parametrize("max_relative_position", [5, 64], ids=["clipped", "unclipped"])
def test_equals_naive_reference(max_relative_position):
    torch.manual_seed(0)
    mixer = RelativeAttentionMixer(d_model=16, n_heads=2, max_relative_position=max_relative_position)
    with torch.no_grad():
        mixer.relative.normal_()  # large enough that a wrong distance shows
    x = torch.randn(3, 21, 16)
    ctx = MixerContext(positions=torch.arange(21), position=Positional(16, 2, 64))
    y, _ = mixer(x, ctx, None)
    assert torch.allclose(y, naive_relative_attention(mixer, x), atol=1e-5)


def test_relative_embeddings_matter():
    """A guard for the test above: dropping the relative term changes the output."""
    torch.manual_seed(0)
    mixer = RelativeAttentionMixer(d_model=16, n_heads=2, max_relative_position=8)
    with torch.no_grad():
        mixer.relative.normal_()
    x = torch.randn(1, 12, 16)
    ctx = MixerContext(positions=torch.arange(12), position=Positional(16, 2, 64))
    y, _ = mixer(x, ctx, None)
    with torch.no_grad():
        mixer.relative.zero_()
    assert not torch.allclose(y, naive_relative_attention(mixer, x), atol=1e-3)


@pytest.mark.parametrize("queries,keys", [(6, 6), (3, 9), (1, 7)])
def test_skew_reads_each_key_at_its_distance(queries, keys):
    """rel[t, m] scores distance keys-1-m; after the skew, query t (key past+t) meets key j at past+t-j."""
    past = keys - queries
    rel = torch.randn(2, queries, keys)
    skewed = skew(rel)
    for t in range(queries):
        for j in range(past + t + 1):
            assert skewed[:, t, j].equal(rel[:, t, keys - 1 - (past + t - j)])
