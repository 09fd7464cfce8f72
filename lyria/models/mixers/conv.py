"""Causal dilated depthwise-separable convolutions, the dilation growing with depth (WaveNet-style)."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyria.models.mixers.base import Mixer, MixerContext

log = logging.getLogger(__name__)


def dilation_schedule(n_layers: int, dilation_base: int, dilation_cycle: int | None) -> list[int]:
    """Dilation of each layer: dilation_base ** (layer % cycle); the cycle defaults to the whole stack."""
    cycle = dilation_cycle or n_layers
    return [dilation_base ** (layer % cycle) for layer in range(n_layers)]


def stack_receptive_field(kernel_size: int, dilations: list[int]) -> int:
    """Tokens one output of a stack of causal convolutions sees, itself included."""
    return 1 + sum((kernel_size - 1) * d for d in dilations)


class DilatedConvMixer(Mixer):
    """Depthwise causal convolution over time (one filter per channel), GELU, then a pointwise projection.

    A layer sees (kernel_size - 1) * dilation + 1 tokens; `stack_receptive_field` is what the whole
    stack of n_layers such mixers sees. `n_heads` and `dropout` belong to the mixer signature: a
    convolution has no heads, and the block already applies dropout to every mixer's output.
    """

    streams = True

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        kernel_size: int = 3,
        dilation_base: int = 2,
        dilation_cycle: int | None = None,
        layer: int = 0,
        n_layers: int = 1,
    ) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"dilated conv kernel_size must be >= 1, got {kernel_size}")
        if dilation_base < 1:
            raise ValueError(f"dilated conv dilation_base must be >= 1, got {dilation_base}")
        if dilation_cycle is not None and dilation_cycle < 1:
            raise ValueError(f"dilated conv dilation_cycle must be >= 1 or null, got {dilation_cycle}")
        dilations = dilation_schedule(n_layers, dilation_base, dilation_cycle)
        self.dilation = dilations[layer]
        self.context = (kernel_size - 1) * self.dilation  # earlier inputs each output reads
        self.receptive_field = self.context + 1
        self.stack_receptive_field = stack_receptive_field(kernel_size, dilations)
        if layer == 0:
            log.info(
                "dilated conv: kernel %d, dilations %s -> receptive field %d tokens over %d layers",
                kernel_size, dilations, self.stack_receptive_field, n_layers,
            )
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, dilation=self.dilation, groups=d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, ctx: MixerContext, cache: dict | None) -> tuple[Tensor, dict | None]:
        channels = x.transpose(1, 2)  # (B, D, T)
        past = cache["inputs"] if cache else channels.new_zeros(channels.shape[0], channels.shape[1], self.context)
        channels = torch.cat([past, channels], dim=2)
        new_cache = None if cache is None else {"inputs": channels[:, :, channels.shape[2] - self.context :]}
        mixed = F.gelu(self.depthwise(channels)).transpose(1, 2)
        return self.out(mixed), new_cache
