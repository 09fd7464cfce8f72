"""`style_embedding`: a learned vector per style, added to the embedding at every position."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lyria.models.conditioning.base import Conditioner


class StyleEmbeddingConditioner(Conditioner):
    conditional = True

    def __init__(self, d_model: int, num_styles: int, n_layers: int = 1, n_heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__(d_model, num_styles, n_layers, n_heads, dropout)
        self.table = nn.Embedding(num_styles, d_model)
        nn.init.normal_(self.table.weight, std=0.02)

    def prepare(self, cond: dict | None, batch: int, device, cache: Any = None) -> Any:
        return self.table(self.styles(cond, batch, device))[:, None, :]  # (B, 1, D)

    def embed(self, x: Tensor, state: Any) -> Tensor:
        return x + state
