"""Logits processors: each takes (B, V) logits of one field and returns them changed.

The sampling loop applies them in the order `conf/generate.yaml` lists them; a processor whose
setting is null does nothing, so a list can name every processor and the command line switch them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class StepContext:
    """What a processor may look at: the ids so far (B, T) or (B, T, F), the field, the tokenizer."""

    history: Tensor
    field: int
    tokenizer: Any
    step: int


class LogitsProcessor:
    def __call__(self, logits: Tensor, ctx: StepContext) -> Tensor:
        raise NotImplementedError


class SpecialTokenMask(LogitsProcessor):
    """Forbids special tokens inside generated music (PAD, BOS, MASK, task and style tokens); EOS stays legal."""

    def __call__(self, logits: Tensor, ctx: StepContext) -> Tensor:
        tok = ctx.tokenizer
        banned = [i for i in range(tok.num_special) if i != tok.eos_id]
        logits = logits.clone()
        logits[:, banned] = float("-inf")
        return logits


class Temperature(LogitsProcessor):
    def __init__(self, temperature: float | None = 1.0) -> None:
        if temperature is not None and temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature} (for greedy decoding use top_k=1)")
        self.temperature = temperature

    def __call__(self, logits: Tensor, ctx: StepContext) -> Tensor:
        return logits if self.temperature in (None, 1.0) else logits / self.temperature


class TopK(LogitsProcessor):
    def __init__(self, k: int | None = None) -> None:
        if k is not None and k < 1:
            raise ValueError(f"top_k must be >= 1, got {k}")
        self.k = k

    def __call__(self, logits: Tensor, ctx: StepContext) -> Tensor:
        if self.k is None or self.k >= logits.shape[-1]:
            return logits
        kth = torch.topk(logits, self.k, dim=-1).values[:, -1:]
        return logits.masked_fill(logits < kth, float("-inf"))


class TopP(LogitsProcessor):
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches p."""

    def __init__(self, p: float | None = None) -> None:
        if p is not None and not 0.0 < p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {p}")
        self.p = p

    def __call__(self, logits: Tensor, ctx: StepContext) -> Tensor:
        if self.p is None or self.p >= 1.0:
            return logits
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logits.softmax(-1) >= self.p  # keeps the token that crosses p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))


class MinP(LogitsProcessor):
    """Keeps tokens whose probability is at least `p` times that of the most likely token."""

    def __init__(self, p: float | None = None) -> None:
        if p is not None and not 0.0 <= p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, logits: Tensor, ctx: StepContext) -> Tensor:
        if not self.p:
            return logits
        probs = logits.softmax(-1)
        return logits.masked_fill(probs < self.p * probs.max(-1, keepdim=True).values, float("-inf"))


class RepetitionPenalty(LogitsProcessor):
    """Divides positive (multiplies negative) logits of tokens seen in the last `window` steps."""

    def __init__(self, penalty: float | None = None, window: int = 64) -> None:
        if penalty is not None and penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {penalty}")
        self.penalty, self.window = penalty, window

    def __call__(self, logits: Tensor, ctx: StepContext) -> Tensor:
        if self.penalty in (None, 1.0) or ctx.history.shape[1] == 0:
            return logits
        recent = ctx.history[:, -self.window :]
        recent = recent[..., ctx.field] if recent.dim() == 3 else recent
        seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, recent, True)
        penalized = torch.where(logits > 0, logits / self.penalty, logits * self.penalty)
        return torch.where(seen, penalized, logits)
