"""Causal multi-head self-attention through PyTorch SDPA: full, or banded to a sliding window."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyria.models.mixers.base import Mixer, MixerContext
from lyria.models.positions import Positional


class AttentionMixer(Mixer):
    """Self-attention; positions come from the shared positional scheme, `window` limits the look-back.

    With a window, each token sees itself and the `window - 1` tokens before it, and the cost in time
    and memory is linear in the sequence length (banded attention, see `banded_attention`).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, window: int | None = None) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        if window is not None and window < 1:
            raise ValueError(f"attention window must be >= 1 token, got window={window}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.window = window
        self.receptive_field = window
        self.streams = window is not None
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.dropout = dropout

    def forward(self, x: Tensor, ctx: MixerContext, cache: dict | None) -> tuple[Tensor, dict | None]:
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q_pos = ctx.positions
        q, k = ctx.position.rotate(q, k, q_pos, q_pos)
        if cache is not None:
            # A windowed query needs only the window - 1 keys before it.
            k, v = append_keys(cache, k, v, None if self.window is None else self.window - 1)
        y = self.attend(q, k, v, q_pos, ctx.position)
        y = y.transpose(1, 2).reshape(batch, length, -1)
        return self.out(y), cache

    def attend(self, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, position: Positional) -> Tensor:
        """(B, H, T, Dh) queries over (B, H, Tk, Dh) keys; the T queries are the last T of the Tk keys.

        With no more keys than the window (short sequences, single-token decoding), every key is in
        every query's window and plain causal attention is the same computation.
        """
        dropout = self.dropout if self.training else 0.0
        if self.window is not None and k.shape[2] > self.window:
            return banded_attention(q, k, v, q_pos, self.window, position, dropout)
        if not position.has_bias and k.shape[2] == q.shape[2]:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        if not position.has_bias and q.shape[2] == 1:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        k_pos = key_positions(q_pos, k.shape[2])
        bias = position.bias(q_pos, k_pos)
        # An explicit mask (offset causal, or a bias) rules out the flash kernel; SDPA still picks the
        # memory-efficient kernel where the device has one.
        mask = causal_mask(q_pos, k_pos, q.dtype)
        if bias is not None:
            mask = mask + bias.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


def key_positions(q_pos: Tensor, n_keys: int) -> Tensor:
    """Positions of the `n_keys` keys that end at the last query."""
    last = int(q_pos[-1])
    return torch.arange(last - n_keys + 1, last + 1, device=q_pos.device)


def append_keys(cache: dict, k: Tensor, v: Tensor, keep: int | None) -> tuple[Tensor, Tensor]:
    """Writes new keys and values (B, H, T, Dh) behind the cached ones, in preallocated buffers.

    Returns views of the cached keys (at most `keep` of them; None keeps all) followed by the new ones.
    The buffers grow by doubling; a bounded cache moves its last `keep` entries to the front when full,
    so neither decoding step copies the past (no growing torch.cat).
    """
    new = k.shape[2]
    filled = cache.get("filled", 0)
    buffer_k, buffer_v = cache.get("k"), cache.get("v")
    capacity = 0 if buffer_k is None else buffer_k.shape[2]
    past = filled if keep is None else min(filled, keep)
    if filled + new > capacity:
        size = max(2 * (past + new), 64) if keep is None else keep + max(new, 64)
        grown_k, grown_v = k.new_empty(*k.shape[:2], size, k.shape[3]), v.new_empty(*v.shape[:2], size, v.shape[3])
        if past:
            grown_k[:, :, :past] = buffer_k[:, :, filled - past : filled]
            grown_v[:, :, :past] = buffer_v[:, :, filled - past : filled]
        buffer_k, buffer_v, filled = grown_k, grown_v, past
    buffer_k[:, :, filled : filled + new] = k
    buffer_v[:, :, filled : filled + new] = v
    filled += new
    cache.update(k=buffer_k, v=buffer_v, filled=filled)
    return buffer_k[:, :, filled - past - new : filled], buffer_v[:, :, filled - past - new : filled]


def causal_mask(q_pos: Tensor, k_pos: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive (Tq, Tk) mask: 0 where the key is not after the query, -inf where it is."""
    future = q_pos[:, None] < k_pos[None, :]
    return torch.zeros(future.shape, dtype=dtype, device=q_pos.device).masked_fill(future, float("-inf"))


def banded_attention(
    q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, window: int, position: Positional, dropout: float
) -> Tensor:
    """Sliding-window causal attention in blocks of queries, so no (T, Tk) matrix ever exists.

    Queries are cut into blocks of `block = min(window, T)`; block b attends to the `block + window - 1`
    keys that end at its last query, gathered by `unfold`. Scores then take O(T * (block + window))
    memory. Each block goes through SDPA with a small mask (the band, and the missing keys before the
    first one); the fused kernels do not know about bands, so this is the kernel for windows.
    """
    batch, heads, length, head_dim = q.shape
    past = k.shape[2] - length
    block = min(window, length)
    n_blocks = math.ceil(length / block)
    span = block + window - 1
    pad_queries = n_blocks * block - length
    pad_keys = max(0, window - 1 - past)
    first_key = past - (window - 1) + pad_keys  # index, in the left-padded keys, of block 0's first key

    def blocks_of_keys(t: Tensor) -> Tensor:
        t = F.pad(t, (0, 0, pad_keys, pad_queries))[:, :, first_key:]
        return t.unfold(2, span, block).transpose(-1, -2)  # (B, H, n_blocks, span, Dh)

    q_blocks = F.pad(q, (0, 0, 0, pad_queries)).view(batch, heads, n_blocks, block, head_dim)
    start = int(q_pos[0])
    offsets = torch.arange(n_blocks, device=q.device)[:, None] * block
    block_q_pos = start + offsets + torch.arange(block, device=q.device)  # (n_blocks, block)
    block_k_pos = start - (window - 1) + offsets + torch.arange(span, device=q.device)  # (n_blocks, span)
    distance = block_q_pos[:, :, None] - block_k_pos[:, None, :]
    allowed = (distance >= 0) & (distance < window) & (block_k_pos >= start - past)[:, None, :]
    bias = position.bias(block_q_pos, block_k_pos)
    if bias is None:
        mask = allowed
    else:
        mask = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
        mask = mask + bias.to(q.dtype)
    y = F.scaled_dot_product_attention(q_blocks, blocks_of_keys(k), blocks_of_keys(v), attn_mask=mask, dropout_p=dropout)
    return y.reshape(batch, heads, n_blocks * block, head_dim)[:, :, :length]
