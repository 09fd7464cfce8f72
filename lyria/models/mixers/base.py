"""The mixer contract: every sequence mixer is causal and decodes incrementally through a cache.

`forward(x, ctx, cache) -> (y, cache)`: x is (B, T, D) for the T newest tokens; `cache` is this layer's
state from earlier calls (None when not decoding incrementally, {} on the first call). Running a
sequence in one call or token by token through the cache must give the same output. A cache may be
updated in place (preallocated buffers): the returned one replaces the one passed. Its tensors are
batch-first, so that the rows of finished sequences can be dropped (`Cache.select`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from lyria.models.positions import Positional


@dataclass
class MixerContext:
    """What every layer may need besides its input: absolute positions, bar ids, the positional scheme."""

    positions: Tensor  # (T,) absolute positions of the current tokens
    position: Positional
    bar_ids: Tensor | None = None  # (B, T) bar index of each current token
    last_bar_ids: Tensor | None = None  # (B, 1) bar id of the last cached token


class Mixer(nn.Module):
    """Base class; subclasses set `receptive_field` (in tokens, None = unbounded) when they know it."""

    receptive_field: int | None = None
    # True when the cache keeps a bounded past by itself (a window, a convolution's taps, or one summary
    # per bar): decoding can then go on past the trained context without re-reading the kept tokens.
    streams: bool = False

    def forward(self, x: Tensor, ctx: MixerContext, cache: dict | None) -> tuple[Tensor, dict | None]:
        raise NotImplementedError
