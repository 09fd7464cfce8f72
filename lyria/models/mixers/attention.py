"""Causal multi-head self-attention through PyTorch SDPA (fused kernels where the mask allows)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyria.models.mixers.base import Mixer, MixerContext


class AttentionMixer(Mixer):
    """Self-attention; positions come from the shared positional scheme, `window` limits the look-back."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, window: int | None = None) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        if window is not None and window < 1:
            raise ValueError(f"attention window must be >= 1 token, got {window}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.window = window
        self.receptive_field = window
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.dropout = dropout

    def forward(self, x: Tensor, ctx: MixerContext, cache: dict | None) -> tuple[Tensor, dict | None]:
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q_pos = ctx.positions
        q, k = ctx.position.rotate(q, k, q_pos, q_pos)
        past = 0
        if cache:
            past = cache["k"].shape[2]
            k = torch.cat([cache["k"], k], dim=2)
            v = torch.cat([cache["v"], v], dim=2)
        new_cache = None
        if cache is not None:
            keep = k.shape[2] if self.window is None else min(k.shape[2], self.window)
            new_cache = {"k": k[:, :, -keep:], "v": v[:, :, -keep:]}
        k_pos = torch.arange(int(q_pos[0]) - past, int(q_pos[-1]) + 1, device=x.device)
        bias = ctx.position.bias(q_pos, k_pos)
        dropout = self.dropout if self.training else 0.0
        if bias is None and self.window is None and past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        elif bias is None and self.window is None and length == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:
            # An explicit mask (offset causal, window or bias) rules out the flash kernel; SDPA still
            # picks the memory-efficient kernel where the device has one.
            rel = q_pos[:, None] - k_pos[None, :]
            allowed = rel >= 0
            if self.window is not None:
                allowed &= rel < self.window
            mask = torch.zeros(allowed.shape, dtype=q.dtype, device=x.device).masked_fill(~allowed, float("-inf"))
            if bias is not None:
                mask = mask + bias.to(q.dtype)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(batch, length, -1)
        return self.out(y), new_cache
