"""`cross_attention`: every block attends to an encoded conditioning sequence.

The conditioning sequence is either the style alone, as `memory_length` vectors (the style's embedding
plus a learned position per slot), or an input token sequence, `cond["memory"]` (B, M) ids of the model's own vocabulary padded with 0
(a melody to harmonize, say; `memory_tokens: true`), embedded with learned positions and the style.
A small Transformer encoder reads it (the sequence-to-sequence path: encode an input, then generate
conditioned on it). Each block then adds a cross-attention
sublayer (pre-norm, after its mixer) whose queries are the block's tokens and whose keys and values are
the memory's. During generation the keys and values of every layer are computed once, on the first call,
and kept in `cache.memory`; later steps and re-reads of the context use them as they are. The output
projections start at zero: a new model computes what the unconditional model with the same weights does.

`align_bars: true` (with `memory_tokens`) tells the cross-attention where the two sequences meet: the memory
comes with the bar of each token (`cond["memory_bars"]`, numbered as the decoder's `bar_ids`), and every
head adds a learned bias for the bar distance between a query token and a memory token (clipped at
`max_bar_distance`; it starts at minus the distance, a preference for the same bar). Without it a decoder
token has to find its place in the melody from content alone (its positions are relative, the memory's
absolute), which a short training does not learn.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyria.models.conditioning.base import Conditioner

MEMORY_KEY = "cross_attention"


class CrossAttentionLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.norm = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        nn.init.zeros_(self.out.weight)

    def keys_values(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        batch, length, _ = memory.shape
        k, v = self.kv(memory).view(batch, length, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor], mask: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        """`mask` (B, M): True where a memory token is real; `bias` (B, H, T, M): added to the attention scores."""
        batch, length, _ = x.shape
        q = self.q(self.norm(x)).view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)
        attn_mask = None if mask is None else mask[:, None, None, :]
        if bias is not None:
            attn_mask = bias if attn_mask is None else bias.masked_fill(~attn_mask, float("-inf"))
        y = F.scaled_dot_product_attention(q, *kv, attn_mask=attn_mask)
        return x + self.out(y.transpose(1, 2).reshape(batch, length, -1))


class CrossAttentionConditioner(Conditioner):
    conditional = True

    def __init__(
        self,
        d_model: int,
        num_styles: int,
        n_layers: int = 1,
        n_heads: int = 1,
        dropout: float = 0.0,
        memory_length: int = 4,
        encoder_layers: int = 1,
        memory_tokens: bool = False,
        max_memory_length: int = 1024,
        vocab_size: int = 0,
        align_bars: bool = False,
        max_bar_distance: int = 4,
    ) -> None:
        super().__init__(d_model, num_styles, n_layers, n_heads, dropout)
        if memory_length < 1 or encoder_layers < 0:
            raise ValueError(f"memory_length must be >= 1 and encoder_layers >= 0, got {memory_length} and {encoder_layers}")
        self.table = nn.Embedding(num_styles, d_model)
        self.slots = nn.Parameter(torch.randn(memory_length, d_model) * 0.02)
        self.encoder = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, n_heads, 2 * d_model, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(encoder_layers)
        )
        self.encoder_norm = nn.LayerNorm(d_model)
        self.layers = nn.ModuleList(CrossAttentionLayer(d_model, n_heads) for _ in range(n_layers))
        self.memory_vocab_size = int(vocab_size) if memory_tokens else 0
        self.max_memory_length = int(max_memory_length)
        if self.memory_vocab_size:
            self.memory_embedding = nn.Embedding(self.memory_vocab_size, d_model, padding_idx=0)
            self.memory_positions = nn.Parameter(torch.randn(self.max_memory_length, d_model) * 0.02)
            nn.init.normal_(self.memory_embedding.weight, std=0.02)
        nn.init.normal_(self.table.weight, std=0.02)
        if align_bars and not memory_tokens:
            raise ValueError("model.conditioning.align_bars needs memory_tokens: true (a style memory has no bars)")
        if max_bar_distance < 0:
            raise ValueError(f"model.conditioning.max_bar_distance must be >= 0, got {max_bar_distance}")
        self.align_bars, self.max_bar_distance = bool(align_bars), int(max_bar_distance)
        if self.align_bars:
            distance = torch.arange(-self.max_bar_distance, self.max_bar_distance + 1).abs().float()
            self.bar_bias = nn.Parameter(-distance.repeat(n_layers, n_heads, 1))  # (layers, heads, 2K+1)

    def encode(self, cond: dict | None, batch: int, device) -> tuple[Tensor, Tensor | None]:
        """(B, M, D): the conditioning sequence, encoded; and (B, M) True where a memory token is real (or None)."""
        style = self.table(self.styles(cond, batch, device))[:, None, :]
        tokens = None if cond is None else cond.get("memory")
        if tokens is None:
            memory, keep = style + self.slots, None
        else:
            if not self.memory_vocab_size:
                raise ValueError("cond['memory'] holds tokens but model.conditioning.memory_tokens is false")
            tokens = torch.as_tensor(tokens, device=device).long()
            if tokens.shape[1] > self.max_memory_length:
                raise ValueError(
                    f"the conditioning sequence has {tokens.shape[1]} tokens; model.conditioning.max_memory_length is {self.max_memory_length}"
                )
            keep = tokens != 0
            memory = self.memory_embedding(tokens) + self.memory_positions[: tokens.shape[1]] + style
        for layer in self.encoder:
            memory = layer(memory, src_key_padding_mask=None if keep is None else ~keep)
        return self.encoder_norm(memory), keep

    def prepare(self, cond: dict | None, batch: int, device, cache: Any = None) -> Any:
        if cache is not None and MEMORY_KEY in cache.memory:
            return cache.memory[MEMORY_KEY]
        memory, keep = self.encode(cond, batch, device)
        state = {"kv": [layer.keys_values(memory) for layer in self.layers], "keep": keep}
        if self.align_bars and keep is not None:
            bars = cond.get("memory_bars")
            if bars is None:
                raise ValueError("model.conditioning.align_bars: cond['memory_bars'] (the bar of each memory token) is missing")
            bars = torch.as_tensor(bars, device=device).long()
            if bars.shape != keep.shape:
                raise ValueError(f"cond['memory_bars'] has shape {tuple(bars.shape)}; cond['memory'] has {tuple(keep.shape)}")
            state["memory_bars"] = bars
        if cache is not None:
            cache.memory[MEMORY_KEY] = state
        return state

    def locate(self, state: Any, bar_ids: Tensor | None) -> Any:
        if "memory_bars" not in state:
            return state
        if bar_ids is None:
            raise ValueError("model.conditioning.align_bars: the forward pass needs the tokens' bar_ids")
        k = self.max_bar_distance
        distance = (state["memory_bars"][:, None, :] - bar_ids.long()[:, :, None]).clamp(-k, k) + k  # (B, T, M)
        return {**state, "bar_distance": distance}

    def attend(self, x: Tensor, state: Any, layer: int) -> Tensor:
        bias = None
        if "bar_distance" in state:
            bias = self.bar_bias[layer][:, state["bar_distance"]].transpose(0, 1).to(x.dtype)  # (B, H, T, M)
        return self.layers[layer](x, state["kv"][layer], state["keep"], bias)
