"""Dropout whose CPU masks are cheap to draw.

On CPU, `torch.nn.functional.dropout` draws one Bernoulli sample per element from the global Mersenne
Twister, one element at a time: forward and backward over an 8 x 1024 x 512 activation (lm_base at sequence
1024, batch 8) took 27.7 ms on a 2-core AVX2 EPYC, against 8.0 ms here (and an eval-mode call 7.9 us against
2 us, three times a layer in a forward; sampling steps through lyria.models.decode skip them). Here a CPU mask
comes from numpy's SFC64 generator, whose raw 64-bit words give four 16-bit uniforms each; the generator is
seeded by one draw from torch's global CPU generator, so masks follow `torch.manual_seed`, Lightning's
`seed_everything` and a checkpoint's restored RNG state exactly as torch's own dropout does (a resumed run
draws the same masks). Off CPU, and inside a
`torch.compile` graph, this is `torch.nn.functional.dropout`.

The drop probability is rounded to a multiple of 1/65536 (0.1 becomes 6554/65536, 0.100006). The mask
is kept for the backward pass as one byte per element, as torch's dropout keeps it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16  # uniforms per mask element: 16 bits


def drop_mask(shape: torch.Size | tuple[int, ...], p: float) -> Tensor:
    """A boolean CPU tensor of `shape`, True where an element is dropped (probability `p`, to 1/65536)."""
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))  # from torch's global RNG: seeded and resumable
    count = int(np.prod(shape, dtype=np.int64))
    words = np.random.SFC64(seed).random_raw((count + 3) // 4)
    uniforms = torch.from_numpy(words.view(np.uint16)[:count].view(np.int16)).view(shape)
    # int16 holds the 16 bits as -32768..32767; an element drops when its uniform is among the lowest p * 65536
    return uniforms < round(p * _LEVELS) - _LEVELS // 2


class _MaskedScale(torch.autograd.Function):
    """x with the masked elements zeroed and the rest scaled; the backward applies the same to the gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, dropped: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(dropped)
        ctx.scale = scale
        return x.masked_fill(dropped, 0.0).mul_(scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (dropped,) = ctx.saved_tensors
        return grad.masked_fill(dropped, 0.0).mul_(ctx.scale), None, None


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """`torch.nn.functional.dropout` with cheap masks on CPU (see the module's docstring)."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if x.device.type != "cpu" or p == 1.0 or torch.compiler.is_compiling():  # a graph keeps torch's own
        return F.dropout(x, p, training)
    return _MaskedScale.apply(x, drop_mask(x.shape, p), 1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """`nn.Dropout` (same arguments, same state dict, no parameters) drawing its CPU masks as `dropout` does."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)
