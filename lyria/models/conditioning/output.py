"""`model.style_output`: a style-conditioned output distribution, combinable with every scheme.

Each style has a bias over each field's vocabulary and a low-rank adapter `x @ A[style] @ B[style]` on the
final hidden state, added to the output layer's logits. B and the biases start at zero, so a new model's
output is the unconditional one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class StyleOutput(nn.Module):
    def __init__(self, d_model: int, vocab_sizes: list[int], num_styles: int, rank: int = 8) -> None:
        super().__init__()
        if num_styles < 1:
            raise ValueError("model.style_output=true needs style slots (tokenizer.num_style_slots >= 1)")
        if rank < 0:
            raise ValueError(f"model.style_output_rank must be >= 0, got {rank}")
        self.rank = int(rank)
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(num_styles, v)) for v in vocab_sizes)
        if self.rank:
            self.down = nn.Parameter(torch.randn(num_styles, d_model, self.rank) * 0.02)
            self.up = nn.ParameterList(nn.Parameter(torch.zeros(num_styles, self.rank, v)) for v in vocab_sizes)

    def forward(self, x: Tensor, logits: list[Tensor], style: Tensor) -> list[Tensor]:
        """x: (B, T, D) final hidden states; logits: one (B, T, V) per field; style: (B,) slots."""
        out = []
        low = torch.bmm(x, self.down[style]) if self.rank else None  # (B, T, r)
        for field, field_logits in enumerate(logits):
            shifted = field_logits + self.bias[field][style][:, None, :]
            if low is not None:
                shifted = shifted + torch.bmm(low, self.up[field][style])
            out.append(shifted)
        return out
