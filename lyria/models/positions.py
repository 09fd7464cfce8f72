"""Positional schemes, shared by all layers of a model and chosen by the mixer config.

Each scheme may act at three points: on the token embeddings (`embed`), on queries and keys
(`rotate`), or as an additive attention bias (`bias`). The base class does nothing at all three, which
is the "no positional information" baseline.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Positional(nn.Module):
    """No positional information (NoPE): the causal mask alone tells the model about order."""

    has_bias = False  # whether `bias` returns a tensor (the attention then needs an explicit mask)
    absolute = False  # whether positions index a table that ends at max_seq_len

    def __init__(self, d_model: int, n_heads: int, max_seq_len: int) -> None:
        super().__init__()
        self.d_model, self.n_heads, self.max_seq_len = d_model, n_heads, max_seq_len

    def reserve(self, length: int) -> None:
        """Called before positions up to `length - 1` are used, so that tables can grow ahead of them."""

    def embed(self, x: Tensor, positions: Tensor) -> Tensor:
        return x

    def rotate(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor) -> tuple[Tensor, Tensor]:
        return q, k

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor | None:
        """Additive attention bias (H, ..., Tq, Tk) for positions (..., Tq) and (..., Tk), or None.

        The leading dimensions let banded attention ask for one bias per block of queries.
        """
        return None


class LearnedPosition(Positional):
    """Learned absolute position embeddings added to the tokens (GPT-2 style); no use beyond max_seq_len."""

    absolute = True

    def __init__(self, d_model: int, n_heads: int, max_seq_len: int) -> None:
        super().__init__(d_model, n_heads, max_seq_len)
        self.table = nn.Embedding(max_seq_len, d_model)

    def embed(self, x: Tensor, positions: Tensor) -> Tensor:
        last = int(positions[-1])
        if last >= self.max_seq_len:
            raise ValueError(
                f"learned positions stop at model.max_seq_len={self.max_seq_len}, got position {last}; "
                "raise model.max_seq_len or pick a relative scheme (rope, alibi, relative)"
            )
        return x + self.table(positions)


class RotaryPosition(Positional):
    """Rotary embeddings (RoPE) on queries and keys; relative by construction, cache-friendly.

    Adjacent channel pairs (0, 1), (2, 3), ... rotate together, as complex numbers multiplied by
    e^(i * position * frequency); the unit rotations are a table, extended when positions outgrow it.
    """

    def __init__(self, d_model: int, n_heads: int, max_seq_len: int, base: float = 10000.0) -> None:
        super().__init__(d_model, n_heads, max_seq_len)
        head_dim = d_model // n_heads
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got d_model/n_heads = {head_dim}")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("rotations", self._table(max(max_seq_len, 1), inv_freq), persistent=False)

    @staticmethod
    def _table(length: int, inv_freq: Tensor) -> Tensor:
        angles = torch.arange(length, dtype=torch.float32, device=inv_freq.device)[:, None] * inv_freq[None, :]
        return torch.polar(torch.ones_like(angles), angles)  # (length, Dh/2) complex64

    def reserve(self, length: int) -> None:
        if length > self.rotations.shape[0]:  # generation past the trained context
            self.rotations = self._table(2 * length, self.inv_freq)

    def _apply(self, fn, recurse: bool = True):
        """Moves the tables with the model but keeps their dtypes: `model.to(torch.bfloat16)` (and Lightning's
        `bf16-true` / `16-true`, which call it) would cast the complex rotations to a real dtype, dropping their
        imaginary part with only a warning. `rope` rotates in fp32 whatever the model's dtype."""
        tables = {name: self._buffers.pop(name) for name in ("inv_freq", "rotations")}
        device = tables["inv_freq"].device
        try:
            super()._apply(fn, recurse)
            device = fn(torch.zeros(1, device=device)).device  # where the rest of the model went
        finally:
            for name, table in tables.items():
                self.register_buffer(name, table.to(device), persistent=False)
        return self

    def _unit_rotations(self, pos: Tensor) -> Tensor:
        """The table's rows at `pos`. Without autograd (decoding), the rows of the last positions tensor are kept:
        every layer of a forward pass rotates its queries and keys by the same one, so one lookup serves them all
        (the same values, so the numerics do not change)."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling():  # training, or a graph (no Python-side state)
            return self.rotations[pos]
        memo = self.__dict__.get("_memo")
        if memo is not None and memo[0] is pos and memo[1] is self.rotations:
            return memo[2]
        rows = self.rotations[pos]
        self.__dict__["_memo"] = (pos, self.rotations, rows)
        return rows

    def rope(self, x: Tensor, pos: Tensor) -> Tensor:
        """x (..., T, Dh) rotated by the positions `pos` (T,): queries, keys, or both stacked along a leading
        dimension (one-token decoding rotates them together)."""
        pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
        return torch.view_as_real(pairs * self._unit_rotations(pos)).flatten(-2).to(x.dtype)

    def rotate(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor) -> tuple[Tensor, Tensor]:
        return self.rope(q, q_pos), self.rope(k, k_pos)


def alibi_slopes(n_heads: int) -> Tensor:
    """Per-head slopes of ALiBi (Press et al. 2022): a geometric sequence, interleaved when n_heads is no power of 2."""
    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = [2.0 ** (-8.0 * (i + 1) / closest) for i in range(closest)]
    if closest < n_heads:
        finer = [2.0 ** (-4.0 * (i + 1) / closest) for i in range(2 * closest)]
        slopes += finer[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


class ALiBiPosition(Positional):
    """ALiBi: no embeddings, a per-head penalty linear in the distance to each key."""

    has_bias = True

    def __init__(self, d_model: int, n_heads: int, max_seq_len: int) -> None:
        super().__init__(d_model, n_heads, max_seq_len)
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        # Future keys are masked by the caller; clamping keeps their bias finite rather than a reward.
        distance = (q_pos[..., :, None] - k_pos[..., None, :]).clamp(min=0).to(self.slopes.dtype)
        return -self.slopes.view(-1, *([1] * distance.dim())) * distance
