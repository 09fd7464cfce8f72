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

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor], mask: Tensor | None = None) -> Tensor:
        batch, length, _ = x.shape
        q = self.q(self.norm(x)).view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, *kv, attn_mask=None if mask is None else mask[:, None, None, :])
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
        if cache is not None:
            cache.memory[MEMORY_KEY] = state
        return state

    def attend(self, x: Tensor, state: Any, layer: int) -> Tensor:
        return self.layers[layer](x, state["kv"][layer], state["keep"])
