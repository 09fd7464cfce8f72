"""The one sampling loop: prefill the prompt into the KV cache, then draw one step at a time, past the context.

Each step runs the processor chain on each field's logits and draws with the row's own random stream,
so a row's music depends on its seed only, never on the other rows of the batch. Bar ids of generated
tokens come from the tokenizer's bar tracker, the same code that labels training data. When the
context is full, a model whose mixers stream (windows, convolutions, bar summaries) goes on through its
cache; any other re-reads a shortened sequence (`ContextWindow`). Rows stop at their end token, or at
`max_bars`, `max_seconds` or `max_new_tokens` (`Limits`), and leave the batch when they do.

Classifier-free guidance (`Guidance`) is a step of this loop: every row has a conditional and an
unconditional stream, batched together through one KV cache (rows 0..B-1 and B..2B-1); each step's logits
are `uncond + scale * (cond - uncond)` before the processors, and the drawn token joins both streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from lyria.config import ConfigError
from lyria.generation.processors import LogitsProcessor, StepContext
from lyria.models.decode import DecodeStep

STOP_EOS = "eos"
STOP_SEP = "sep"
STOP_MAX_TOKENS = "max_new_tokens"
STOP_MAX_BARS = "max_bars"
STOP_MAX_SECONDS = "max_seconds"
DEFAULT_QPM = 120.0
_UNIFORMS_PER_REFILL = 256


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a run seeded with `seed`: the same whatever the batch it is drawn in."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0])


@dataclass
class Limits:
    """When a row stops besides its end token. Bars and seconds count the whole piece, prompt included.

    `seconds_at` maps a time in quarter notes to seconds (the prompt's tempo map); None means 120 bpm.
    """

    max_new_tokens: int = 1024
    max_bars: int | None = None
    max_seconds: float | None = None
    seconds_at: Callable[[float], float] | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.max_bars is not None and self.max_bars < 1:
            raise ValueError(f"max_bars must be >= 1 or null, got {self.max_bars}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0 or null, got {self.max_seconds}")

    def seconds(self, quarters: float) -> float:
        return self.seconds_at(quarters) if self.seconds_at is not None else quarters * 60.0 / DEFAULT_QPM


@dataclass
class ContextWindow:
    """What a model that does not stream keeps when its context is full, before re-reading it.

    Every row keeps the same number of tokens, `keep_fraction` of the context: the pinned prompt tokens
    (conditioning, or an infilling task's whole context), the piece's opening (at least its first
    `opening_bars` bars, at most a quarter of what is kept), and the most recent tokens from a bar start.
    """

    keep_fraction: float = 0.75
    opening_bars: int = 2

    def __post_init__(self) -> None:
        if not 0.0 < self.keep_fraction < 1.0:
            raise ValueError(f"window.keep_fraction must be in (0, 1), got {self.keep_fraction}")
        if self.opening_bars < 0:
            raise ValueError(f"window.opening_bars must be >= 0, got {self.opening_bars}")

    def size(self, context: int) -> int:
        return max(1, int(context * self.keep_fraction))

    def kept(self, bars: np.ndarray, pinned: int, context: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(indices kept, their bar ids for the model, offset from real to model bar ids of later tokens).

        The recent part's bars are renumbered to follow the kept opening, as in a training crop.
        """
        total, keep = len(bars), self.size(context)
        budget = keep - pinned
        if budget < 2:
            raise ConfigError(
                f"the prompt's pinned part has {pinned} tokens but only {keep} are kept when the context "
                f"({context}) is full: shorten the prompt"
            )
        music = bars[pinned:]
        later = np.flatnonzero(music >= music[0] + self.opening_bars) if len(music) else np.array([], dtype=np.int64)
        opening = min(int(later[0]) if len(later) else len(music), budget // 4)
        tail = budget - opening
        start = total - tail
        bar_starts = np.flatnonzero(np.diff(bars) != 0) + 1
        aligned = bar_starts[(bar_starts >= start) & (bar_starts <= total - tail // 2)]
        if len(aligned):
            start = int(aligned[0])
        head = keep - (total - start)
        indices = np.concatenate([np.arange(head), np.arange(start, total)])
        offset = int(bars[start]) - (int(bars[head - 1]) + 1)
        model_bars = np.concatenate([bars[:head], bars[start:] - offset])
        return indices, model_bars, offset


@dataclass
class Guidance:
    """Classifier-free guidance: the unconditional stream's prompt head and conditioning, and the scale.

    `head`: the unconditional stream's first tokens (its prompt's pinned part: BOS and the "no style" token
    for the style-token scheme), which replace the conditional prompt's at every read of the context;
    everything after them is shared. `cond`: one row of conditioning for the unconditional stream (the
    "no style" slot). scale 1 gives the conditional logits exactly and 0 the unconditional ones.
    """

    scale: float
    head: np.ndarray
    cond: dict | None = None

    def __post_init__(self) -> None:
        if not np.isfinite(self.scale) or self.scale < 0:
            raise ValueError(f"cfg_scale must be a finite number >= 0, got {self.scale}")
        self.head = np.asarray(self.head, dtype=np.int64)

    def combine(self, cond: Tensor, uncond: Tensor) -> Tensor:
        if self.scale == 1.0:
            return cond
        if self.scale == 0.0:
            return uncond
        return uncond + self.scale * (cond - uncond)


@dataclass
class Generated:
    """One sampled sequence: all ids (prompt included), their bar ids, how many came from the prompt, why it stopped."""

    ids: np.ndarray
    bar_ids: np.ndarray
    prompt_length: int
    stop_reason: str
    rereads: int = 0  # how often the context was full and the kept tokens were read again

    @property
    def new_ids(self) -> np.ndarray:
        return self.ids[self.prompt_length :]


class RowRandom:
    """One torch.Generator per row, drawn a block of uniforms at a time: a row's draws never depend on the batch."""

    def __init__(self, seeds: Sequence[int], fields: int) -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.fields = fields
        self.block = torch.empty(len(seeds), 0, fields)
        self.used = 0

    def uniforms(self) -> Tensor:
        """(B, fields) uniforms in [0, 1) for one step."""
        if self.used == self.block.shape[1]:
            self.block = torch.stack([torch.rand(_UNIFORMS_PER_REFILL, self.fields, generator=g) for g in self.generators])
            self.used = 0
        self.used += 1
        return self.block[:, self.used - 1]

    def select(self, rows: list[int]) -> None:
        self.generators = [self.generators[i] for i in rows]
        self.block = self.block[rows]


def draw(probs: Tensor, uniforms: Tensor) -> Tensor:
    """Inverse-CDF sampling: the first id whose cumulative probability exceeds the row's uniform."""
    cdf = probs.cumsum(-1)
    targets = (uniforms * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, targets, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


@dataclass
class _Rows:
    """The rows still generating: their index in the request, history buffers, trackers, bar offsets."""

    index: list[int]
    ids: Tensor  # (B, capacity) or (B, capacity, F), filled up to `length`
    bars: np.ndarray  # (B, capacity) real bar ids
    trackers: list
    bar_offset: np.ndarray  # real bar id - model bar id, per row
    length: int
    rereads: int = 0
    results: dict[int, Generated] = field(default_factory=dict)

    def keep(self, rows: list[int]) -> None:
        self.index = [self.index[i] for i in rows]
        self.ids, self.bars = self.ids[rows], self.bars[rows]
        self.trackers = [self.trackers[i] for i in rows]
        self.bar_offset = self.bar_offset[rows]


class Sampler:
    def __init__(
        self,
        model,
        tokenizer,
        processors: Sequence[LogitsProcessor],
        device: str | torch.device = "cpu",
        window: ContextWindow | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.processors = list(processors)
        for processor in self.processors:
            processor.bind(tokenizer)
        self.device = torch.device(device)
        self.window = window or ContextWindow()
        # one-token steps through the cache without module calls (the same results; the forward otherwise)
        self.step = DecodeStep.of(self.model)

    def _forward(self, tokens: Tensor, bar_ids: Tensor, cond: dict | None, cache, guidance: Guidance | None = None):
        """The model's logits of the last position, one (B, V) tensor per field, and the cache.

        With guidance the cache holds 2B rows (the B conditional streams, then their B unconditional ones):
        the tokens go through both (with the unconditional head where the read starts at the beginning) and
        the logits are combined into B rows."""
        if guidance is not None:
            rows = tokens.shape[0]
            uncond = tokens.clone()
            if cache.length == 0:  # a read from the start: the unconditional stream has its own head
                head = torch.from_numpy(guidance.head).to(tokens.device)
                uncond[:, : len(head)] = head
            tokens, bar_ids = torch.cat([tokens, uncond]), torch.cat([bar_ids, bar_ids])
            cond = _concat(cond, _select(guidance.cond, [0] * rows))
        logits, cache = self.step(tokens, bar_ids=bar_ids, cond=cond, cache=cache)
        fields = [f[:, -1].float() for f in (logits if isinstance(logits, list) else [logits])]
        if guidance is not None:
            fields = [guidance.combine(f[:rows], f[rows:]) for f in fields]
        return fields, cache

    def _sample_step(self, fields: list[Tensor], ctx: StepContext, uniforms: Tensor) -> Tensor:
        """Draws a step field by field; each field's processors see the fields already drawn (`partial`)."""
        picks: list[Tensor] = []
        for index, scores in enumerate(fields):
            ctx.field, ctx.partial = index, torch.stack(picks, dim=-1) if picks else None
            for processor in self.processors:
                scores = processor(scores, ctx)
            picks.append(draw(scores.softmax(-1), uniforms[:, index].to(scores.device)))
        return torch.stack(picks, dim=-1) if self.model.is_compound else picks[0]

    def _read(self, rows: _Rows, pinned: int, cond: dict | None, cache, context: int, guidance: Guidance | None = None):
        """Prefills the cache with each row's kept tokens (all of them when they fit) and returns the logits."""
        if rows.length < context:
            tokens = rows.ids[:, : rows.length]
            bars = rows.bars[:, : rows.length] - rows.bar_offset[:, None]
        else:
            kept = [self.window.kept(rows.bars[i, : rows.length], pinned, context) for i in range(rows.bars.shape[0])]
            tokens = torch.stack([rows.ids[i, torch.from_numpy(k[0])] for i, k in enumerate(kept)])
            bars = np.stack([k[1] for k in kept])
            rows.bar_offset = np.array([k[2] for k in kept], dtype=np.int64)
            rows.rereads += 1
            cache = cache.restart()
        return self._forward(tokens.to(self.device), torch.from_numpy(bars).to(self.device), cond, cache, guidance)

    @torch.inference_mode()
    def generate(
        self,
        prompt: np.ndarray,
        seeds: Sequence[int] | int,
        limits: Limits | None = None,
        cond: dict | None = None,
        end_id: int | None = None,
        pinned: int | None = None,
        guidance: Guidance | None = None,
    ) -> list[Generated]:
        """Continuations of one prompt (ids, BOS included; (T,) or (T, F)), one per seed (an int: seeds 0..n-1).

        end_id: the token that ends a row (EOS; SEP for an infilled span). pinned: how many leading prompt
        tokens a re-read always keeps (default: its leading special tokens). `cond` holds batch-first tensors.
        guidance: classifier-free guidance (its head must fit inside the pinned tokens, which every re-read keeps).
        """
        limits = limits or Limits()
        seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
        prompt = np.asarray(prompt, dtype=np.int64)
        if len(prompt) == 0:
            raise ValueError("the prompt is empty: it must hold at least BOS")
        if not seeds:
            return []
        tok, n = self.tokenizer, len(seeds)
        end_id = tok.eos_id if end_id is None else int(end_id)
        first_field = prompt[:, 0] if prompt.ndim == 2 else prompt
        if pinned is None:
            pinned = int(np.argmax(first_field >= tok.num_special)) if (first_field >= tok.num_special).any() else len(prompt)
        if guidance is not None and len(guidance.head) > pinned:
            raise ValueError(f"the unconditional head has {len(guidance.head)} tokens, more than the {pinned} pinned prompt tokens")
        context = self.model.max_seq_len
        trackers = [tok.new_bar_tracker() for _ in range(n)]
        prompt_bars = trackers[0].run(prompt)
        for tracker in trackers[1:]:
            tracker.run(prompt)
        capacity = len(prompt) + limits.max_new_tokens
        ids = torch.full((1, capacity, *prompt.shape[1:]), tok.pad_id, dtype=torch.long)
        ids[0, : len(prompt)] = torch.from_numpy(prompt)
        bars = np.zeros((1, capacity), dtype=np.int64)
        bars[0, : len(prompt)] = prompt_bars
        rows = _Rows(list(range(n)), ids, bars, trackers, np.zeros(1, dtype=np.int64), len(prompt))
        # the prompt is read once and its cache shared by every row
        fields, cache = self._read(rows, pinned, _select(cond, [0]), self.model.new_cache(), context, guidance)
        spread = [0] * n
        rows.ids, rows.bars, rows.bar_offset = rows.ids[spread], rows.bars[spread], rows.bar_offset[spread]
        fields = [f[spread] for f in fields]
        cache = cache.select(torch.tensor(_streams(spread, 1, guidance), device=self.device))
        random = RowRandom(seeds, len(fields))
        ctx = StepContext(history=rows.ids[:, : rows.length], field=0, tokenizer=tok, step=0, trackers=rows.trackers, end_id=end_id)
        for step in range(limits.max_new_tokens):
            ctx.history, ctx.trackers, ctx.step = rows.ids[:, : rows.length], rows.trackers, step
            step_ids = self._sample_step(fields, ctx, random.uniforms()).cpu()
            values = step_ids.numpy()
            finished: dict[int, str] = {}
            for i, tracker in enumerate(rows.trackers):
                first = int(values[i, 0]) if values.ndim == 2 else int(values[i])
                bar = tracker.step(values[i])
                rows.bars[i, rows.length] = bar
                if first == end_id:
                    finished[i] = STOP_SEP if end_id == tok.sep_id else STOP_EOS
                elif limits.max_bars is not None and bar >= limits.max_bars:
                    finished[i] = STOP_MAX_BARS
                elif limits.max_seconds is not None and limits.seconds(tracker.quarters) >= limits.max_seconds:
                    finished[i] = STOP_MAX_SECONDS
            rows.ids[:, rows.length] = step_ids
            rows.length += 1
            if step == limits.max_new_tokens - 1:
                finished.update({i: STOP_MAX_TOKENS for i in range(len(rows.index)) if i not in finished})
            for i, reason in finished.items():
                end = rows.length - (reason in (STOP_MAX_BARS, STOP_MAX_SECONDS))  # the step past the limit is dropped
                rows.results[rows.index[i]] = Generated(
                    rows.ids[i, :end].numpy().copy(), rows.bars[i, :end].copy(), len(prompt), reason, rows.rereads
                )
            if len(finished) == len(rows.index):
                break
            if finished:
                active = [i for i in range(len(rows.index)) if i not in finished]
                rows.keep(active)
                random.select(active)
                cond = _select(cond, active)
                cache = cache.select(torch.tensor(_streams(active, len(finished) + len(active), guidance), device=self.device))
                step_ids = step_ids[active]
            if cache.length >= context and not self.model.streams:
                fields, cache = self._read(rows, pinned, cond, cache, context, guidance)
            else:
                model_bars = torch.from_numpy(rows.bars[:, rows.length - 1 : rows.length] - rows.bar_offset[:, None])
                fields, cache = self._forward(step_ids[:, None].to(self.device), model_bars.to(self.device), cond, cache, guidance)
        return [rows.results[i] for i in range(n)]


def _streams(rows: list[int], batch: int, guidance: Guidance | None) -> list[int]:
    """Cache rows of the given rows of a batch of `batch`: with guidance, their conditional and unconditional streams."""
    return rows if guidance is None else list(rows) + [batch + r for r in rows]


def _concat(first: dict | None, second: dict | None) -> dict | None:
    """Two conditionings stacked along the batch (the conditional streams, then the unconditional ones)."""
    if first is None and second is None:
        return None
    if first is None or second is None or set(first) != set(second):
        raise ValueError("guidance needs the conditional and the unconditional conditioning to hold the same keys")
    return {key: torch.cat([first[key], second[key]]) if isinstance(first[key], Tensor) else first[key] for key in first}


def _select(cond: dict | None, rows: list[int]) -> dict | None:
    """The conditioning of the given rows (its tensors are batch-first)."""
    if cond is None:
        return None
    return {key: value[rows] if isinstance(value, Tensor) else value for key, value in cond.items()}
