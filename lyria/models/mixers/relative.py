"""Music Transformer relative attention (Huang et al. 2019): learned relative embeddings, skewed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyria.models.mixers.attention import AttentionMixer, causal_mask, key_positions
from lyria.models.positions import Positional


def skew(rel: Tensor) -> Tensor:
    """Turns (..., T, Tk) logits against distances Tk-1 .. 0 into logits against keys 0 .. Tk-1.

    rel[t, m] scores query t against distance Tk-1-m; query t is key past+t (past = Tk-T), so it meets
    key j at distance past+t-j, i.e. at m = j + T-1-t: each row shifts left by T-1-t. Padding one
    column on the left and re-reading the flat buffer from offset T does exactly that, with no
    (T, Tk, D) tensor. Entries for future keys are garbage and must be masked.
    """
    queries = rel.shape[-2]
    flat = F.pad(rel, (1, 0)).flatten(-2)
    return flat[..., queries:].reshape(*rel.shape)


class RelativeAttentionMixer(AttentionMixer):
    """Self-attention plus a learned per-head embedding per distance (clipped at max_relative_position - 1).

    logits = (q k^T + q E_rel^T, skewed) / sqrt(Dh). The relative term depends on the query, so it
    enters SDPA as an additive float mask; that rules out the flash kernel (on CPU SDPA falls back to
    the math path, on GPU to the memory-efficient kernel, which takes a mask with a gradient).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, max_relative_position: int = 512) -> None:
        super().__init__(d_model, n_heads, dropout)
        if max_relative_position < 1:
            raise ValueError(f"max_relative_position must be >= 1, got {max_relative_position}")
        self.max_relative_position = max_relative_position
        self.relative = nn.Parameter(torch.randn(n_heads, max_relative_position, self.head_dim) * 0.02)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, q_pos: Tensor, position: Positional) -> Tensor:
        keys = k.shape[2]
        k_pos = key_positions(q_pos, keys)
        distances = torch.arange(keys - 1, -1, -1, device=q.device).clamp(max=self.max_relative_position - 1)
        rel = skew(q @ self.relative[:, distances].transpose(-1, -2))  # (B, H, T, Tk), no (T, Tk, Dh)
        # In place: the scaled copy is not needed for backward, and one (T, Tk) buffer fewer matters.
        mask = (rel * self.head_dim**-0.5).add_(causal_mask(q_pos, k_pos, q.dtype))
        bias = position.bias(q_pos, k_pos)
        if bias is not None:
            mask = mask + bias.to(q.dtype)
        dropout = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
