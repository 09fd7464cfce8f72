"""`adaln`: adaptive layer norm (FiLM): per block, a scale, a shift and a gate from the style vector.

At each of a block's two norms, `h = norm(x) * (1 + scale) + shift`, and the sublayer's output joins the
residual stream as `y * (1 + gate)`. The projections from the style vector are zero-initialised, so a new
model computes exactly what the unconditional model with the same weights computes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyria.models.conditioning.base import Conditioner

SITES = ("mixer", "ffn")


class AdaLNConditioner(Conditioner):
    conditional = True

    def __init__(self, d_model: int, num_styles: int, n_layers: int = 1, n_heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__(d_model, num_styles, n_layers, n_heads, dropout)
        self.table = nn.Embedding(num_styles, d_model)
        nn.init.normal_(self.table.weight, std=0.02)
        # one projection per block: (shift, scale, gate) at each of the two sites
        self.projections = nn.ModuleList(nn.Linear(d_model, 3 * len(SITES) * d_model) for _ in range(n_layers))
        self.zero_init()

    def zero_init(self) -> None:
        for projection in self.projections:
            nn.init.zeros_(projection.weight)
            nn.init.zeros_(projection.bias)

    def prepare(self, cond: dict | None, batch: int, device, cache: Any = None) -> Any:
        style = F.silu(self.table(self.styles(cond, batch, device)))
        # (layer, site) -> (shift, scale, gate), each (B, 1, D)
        state = {}
        for layer, projection in enumerate(self.projections):
            parts = projection(style)[:, None, :].chunk(3 * len(SITES), dim=-1)
            for i, site in enumerate(SITES):
                state[layer, site] = parts[3 * i : 3 * i + 3]
        return state

    def modulate(self, h: Tensor, state: Any, layer: int, site: str) -> Tensor:
        shift, scale, _ = state[layer, site]
        return torch.addcmul(h + shift, h, scale)

    def gate(self, y: Tensor, state: Any, layer: int, site: str) -> Tensor:
        return y + y * state[layer, site][2]
