"""The conditioning contract: where a condition (a style) may enter the model, and the "no conditioning" baseline.

A conditioner sees every forward pass at six hooks, all of which do nothing in the base class:

- `prepare(cond, batch, cache)`: once per forward; turns `cond` (`{"style": (B,) slot ids}`, or None for
  "no style") into the state the other hooks read (a style vector, an encoded memory). A conditioning
  memory that holds for a whole generation is kept in `cache.memory`, computed on the first call.
- `locate(state, bar_ids)`: once per forward, after `prepare`: the state for these tokens (their bars).
- `embed(x, state)`: on the token embeddings, before the first block.
- `modulate(h, state, layer, site)`: on the output of a block's norm, before its mixer (`site="mixer"`)
  or its feed-forward (`site="ffn"`): the place for FiLM / adaptive layer norm.
- `gate(y, state, layer, site)`: on a sublayer's output, before it joins the residual stream.
- `attend(x, state, layer)`: a residual sublayer after the mixer (cross-attention to the memory).

The last slot of the style table (`num_styles - 1`) is reserved for "no style": condition dropout in
training and the unconditional stream of classifier-free guidance use it. `dropout` is that training
rate; the data pipeline applies it (a crop's style becomes "no style"), so that a style token in the
sequence and the style the model reads always agree.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class Conditioner(nn.Module):
    """No conditioning: the model is unconditional whatever `cond` holds."""

    # whether the data puts the style token in front of every sequence (the `style_token` scheme)
    uses_style_token = False
    # whether the model reads the style at all (generation refuses `style=` for a model that does not)
    conditional = False

    def __init__(self, d_model: int, num_styles: int, n_layers: int = 1, n_heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"model.conditioning.dropout must be in [0, 1), got {dropout}")
        if self.conditional and num_styles < 1:
            raise ValueError(f"{type(self).__name__} needs style slots, but the tokenizer has num_style_slots={num_styles}")
        self.d_model, self.num_styles, self.n_layers, self.n_heads = int(d_model), int(num_styles), int(n_layers), int(n_heads)
        self.dropout = float(dropout)

    @property
    def null_slot(self) -> int:
        """The reserved "no style" slot."""
        return self.num_styles - 1

    def styles(self, cond: dict | None, batch: int, device: torch.device) -> Tensor:
        """(B,) style slots of `cond`, "no style" where it holds none; a slot out of range is an error."""
        style = None if cond is None else cond.get("style")
        if style is None:
            return torch.full((batch,), self.null_slot, dtype=torch.long, device=device)
        style = torch.as_tensor(style, device=device).long().reshape(-1)
        if style.numel() == 1 and batch > 1:
            style = style.expand(batch)
        if style.shape[0] != batch:
            raise ValueError(f"cond['style'] has {style.shape[0]} rows for a batch of {batch}")
        if style.numel() and (int(style.min()) < 0 or int(style.max()) >= self.num_styles):
            raise ValueError(f"cond['style'] holds slots {style.tolist()}; the model has slots 0..{self.num_styles - 1}")
        return style

    def prepare(self, cond: dict | None, batch: int, device: torch.device, cache: Any = None) -> Any:
        return None

    def locate(self, state: Any, bar_ids: Tensor | None) -> Any:
        return state

    def embed(self, x: Tensor, state: Any) -> Tensor:
        return x

    def modulate(self, h: Tensor, state: Any, layer: int, site: str) -> Tensor:
        return h

    def gate(self, y: Tensor, state: Any, layer: int, site: str) -> Tensor:
        return y

    def attend(self, x: Tensor, state: Any, layer: int) -> Tensor:
        return x
