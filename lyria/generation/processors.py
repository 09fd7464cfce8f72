"""Logits processors: each takes (B, V) logits of one field and returns them changed.

The sampling loop applies them in the order `conf/generate.yaml` lists them; a processor whose
setting is null does nothing, so a list can name every processor and the command line switch them.
Temperature and top-p take per-field values for compound tokens (`fields: {Pitch: 0.9}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class StepContext:
    """What a processor may look at.

    history: the ids so far (B, T) or (B, T, F); field: the field being drawn; partial: the fields
    of this step drawn already (B, field); trackers: one BarTracker per row, through the history;
    end_id: the token that ends a row in this task (EOS, or SEP after an infilled span).
    """

    history: Tensor
    field: int
    tokenizer: Any
    step: int
    partial: Tensor | None = None
    trackers: list | None = None
    end_id: int | None = None


class LogitsProcessor:
    def bind(self, tokenizer) -> None:
        """Checks the settings against the tokenizer before sampling starts (e.g. field names)."""

    def __call__(self, logits: Tensor, ctx: StepContext) -> Tensor:
        raise NotImplementedError


class PerField(LogitsProcessor):
    """A setting with one value for every field and optional overrides by field name (compound tokens)."""

    key = "value"

    def __init__(self, value: float | None, fields: dict[str, float] | None = None) -> None:
        self.value = value
        self.fields = dict(fields or {})
        self._by_index: dict[int, float] = {}
        for v in [value, *self.fields.values()]:
            if v is not None:
                self.check(v)

    def check(self, value: float) -> None:
        """Raises ValueError naming the setting when `value` is out of range."""

    def bind(self, tokenizer) -> None:
        if self.fields and not tokenizer.is_compound:
            raise ValueError(
                f"field_{self.key}={self.fields}: per-field values need a compound tokenizer (cpword, octuple); "
                f"{tokenizer.name} has one token stream, use {self.key} instead"
            )
        try:
            self._by_index = {tokenizer.field_index(name): v for name, v in self.fields.items()}
        except ValueError as err:
            raise ValueError(f"field_{self.key}: {err}") from None

    def setting(self, ctx: StepContext) -> float | None:
        return self._by_index.get(ctx.field, self.value)


class SpecialTokenMask(LogitsProcessor):
    """Forbids special tokens inside generated music (PAD, BOS, MASK, FILL, style tokens) except the task's end:
    EOS ends a piece, SEP ends an infilled span (then EOS is forbidden: the piece goes on after the span)."""

    def __init__(self) -> None:
        self._banned: dict[tuple[int, int, torch.device], Tensor] = {}

    def __call__(self, logits: Tensor, ctx: StepContext) -> Tensor:
        tok = ctx.tokenizer
        end = tok.eos_id if ctx.end_id is None else ctx.end_id
        key = (logits.shape[-1], end, logits.device)
        if key not in self._banned:
            banned = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
            banned[: tok.num_special] = True
            banned[end] = False
            self._banned[key] = banned
        return logits.masked_fill(self._banned[key], float("-inf"))


class GrammarMask(LogitsProcessor):
    """Forbids ids that would break the tokenizer's grammar here (lyria.tokenizers.grammar), so samples decode.

    Needs the sampler's trackers (ctx.trackers). The grammar memoises its masks by the state they depend
    on, so a step costs a dictionary look-up per row and one gather. A row with no legal id left is
    passed through unchanged and the decoder's repair step deals with it.
    """

    def __call__(self, logits: Tensor, ctx: StepContext) -> Tensor:
        if ctx.trackers is None:
            raise ValueError("GrammarMask needs the sampler's bar trackers in the StepContext")
        tok = ctx.tokenizer
        previous = ctx.history[:, -1].cpu().numpy() if ctx.history.shape[1] else None
        partial = ctx.partial.cpu().numpy() if ctx.partial is not None else None
        keep = tok.grammar.masks(ctx.field, ctx.trackers, previous, partial).to(logits.device)
        if ctx.field == 0 and ctx.end_id is not None and ctx.end_id != tok.eos_id:
            keep = keep.clone()
            keep[:, ctx.end_id] = keep[:, tok.eos_id]  # the task's end token is legal where EOS would be
        return torch.where(keep, logits, float("-inf"))


class Temperature(PerField):
    key = "temperature"

    def __init__(self, temperature: float | None = 1.0, fields: dict[str, float] | None = None) -> None:
        super().__init__(temperature, fields)

    def check(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"temperature must be > 0, got {value} (for greedy decoding use top_k=1)")

    def __call__(self, logits: Tensor, ctx: StepContext) -> Tensor:
        temperature = self.setting(ctx)
        return logits if temperature in (None, 1.0) else logits / temperature


class TopK(LogitsProcessor):
    def __init__(self, k: int | None = None) -> None:
        if k is not None and k < 1:
            raise ValueError(f"top_k must be >= 1, got {k}")
        self.k = k

    def __call__(self, logits: Tensor, ctx: StepContext) -> Tensor:
        if self.k is None or self.k >= logits.shape[-1]:
            return logits
        kth = logits.amax(-1, keepdim=True) if self.k == 1 else torch.topk(logits, self.k, dim=-1).values[:, -1:]
        return logits.masked_fill(logits < kth, float("-inf"))


class TopP(PerField):
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches p."""

    key = "top_p"

    def __init__(self, p: float | None = None, fields: dict[str, float] | None = None) -> None:
        super().__init__(p, fields)

    def check(self, value: float) -> None:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {value}")

    def __call__(self, logits: Tensor, ctx: StepContext) -> Tensor:
        p = self.setting(ctx)
        if p is None or p >= 1.0:
            return logits
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logits.softmax(-1) >= p  # keeps the token that crosses p
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
