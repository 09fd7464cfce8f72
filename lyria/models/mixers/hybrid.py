"""Self-attention and dilated convolutions combined: parallel branches in every layer, or alternating layers."""

from __future__ import annotations

from torch import Tensor, nn

from lyria.models.mixers.attention import AttentionMixer
from lyria.models.mixers.base import Mixer, MixerContext
from lyria.models.mixers.conv import DilatedConvMixer

MODES = ("parallel", "alternating")


class HybridMixer(Mixer):
    """`parallel`: attention(x) + conv(x) in every layer; `alternating`: attention in even layers, conv in odd.

    Attention carries long-range structure (repeats over bars and sections), the convolutions local
    texture. In alternating mode the dilation schedule runs over the convolution layers only.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        mode: str = "parallel",
        window: int | None = None,
        kernel_size: int = 3,
        dilation_base: int = 2,
        dilation_cycle: int | None = None,
        layer: int = 0,
        n_layers: int = 1,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"hybrid mixer mode={mode!r} is not one of {list(MODES)}")
        conv_layer, n_conv_layers = (layer, n_layers) if mode == "parallel" else (layer // 2, n_layers // 2)
        branches: dict[str, Mixer] = {}
        if mode == "parallel" or layer % 2 == 0:
            branches["attention"] = AttentionMixer(d_model, n_heads, dropout, window)
        if mode == "parallel" or layer % 2 == 1:
            branches["conv"] = DilatedConvMixer(
                d_model, n_heads, dropout, kernel_size, dilation_base, dilation_cycle, conv_layer, n_conv_layers
            )
        self.branches = nn.ModuleDict(branches)
        fields = [b.receptive_field for b in branches.values()]
        self.receptive_field = None if None in fields else max(fields)
        self.streams = all(b.streams for b in branches.values())

    def forward(self, x: Tensor, ctx: MixerContext, cache: dict | None) -> tuple[Tensor, dict | None]:
        mixed, new_cache = 0, None if cache is None else {}
        for name, branch in self.branches.items():
            y, branch_cache = branch(x, ctx, None if cache is None else cache.get(name, {}))
            mixed = mixed + y
            if new_cache is not None:
                new_cache[name] = branch_cache
        return mixed, new_cache
