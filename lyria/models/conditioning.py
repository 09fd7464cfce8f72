"""Conditioning schemes: how a condition (style, ...) enters the model.

A conditioner acts on the token embeddings (`embed`) and may act inside every block (`block`); the
base class ignores the condition, the "no conditioning" baseline.
"""

from __future__ import annotations

from torch import Tensor, nn


class Conditioner(nn.Module):
    """No conditioning: the model is unconditional whatever `cond` holds."""

    def __init__(self, d_model: int, num_styles: int) -> None:
        super().__init__()
        self.d_model, self.num_styles = d_model, num_styles

    def embed(self, x: Tensor, cond: dict | None) -> Tensor:
        return x

    def block(self, h: Tensor, cond: dict | None, layer: int) -> Tensor:
        return h
