"""The one sampling loop: prefill the prompt into the KV cache, then draw one step at a time.

Each step runs the processor chain on each field's logits and samples with a seeded generator, so
the same seed gives the same music. Bar ids of generated tokens come from the tokenizer's bar
tracker, the same code that labels training data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from lyria.generation.processors import LogitsProcessor, StepContext

STOP_EOS = "eos"
STOP_MAX_TOKENS = "max_new_tokens"
STOP_CONTEXT = "context_full"


@dataclass
class Generated:
    """One sampled sequence: all ids (prompt included), their bar ids, how many came from the prompt, why it stopped."""

    ids: np.ndarray
    bar_ids: np.ndarray
    prompt_length: int
    stop_reason: str


class Sampler:
    def __init__(self, model, tokenizer, processors: Sequence[LogitsProcessor], device: str | torch.device = "cpu") -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.processors = list(processors)
        for processor in self.processors:
            processor.bind(tokenizer)
        self.device = torch.device(device)

    def _sample_fields(self, logits: Tensor | list[Tensor], history: Tensor, step: int, generator: torch.Generator, trackers: list) -> Tensor:
        """Draws a step field by field; each field's processors see the fields already drawn (`partial`)."""
        fields = logits if isinstance(logits, list) else [logits]
        picks: list[Tensor] = []
        for index, field_logits in enumerate(fields):
            scores = field_logits[:, -1].float()
            partial = torch.stack(picks, dim=-1) if picks else None
            ctx = StepContext(history=history, field=index, tokenizer=self.tokenizer, step=step, partial=partial, trackers=trackers)
            for processor in self.processors:
                scores = processor(scores, ctx)
            probs = scores.softmax(-1)
            picks.append(torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(scores.device))
        return torch.stack(picks, dim=-1) if isinstance(logits, list) else picks[0]

    @torch.inference_mode()
    def generate(
        self,
        prompt: np.ndarray,
        n: int,
        max_new_tokens: int,
        seed: int = 0,
        cond: dict | None = None,
    ) -> list[Generated]:
        """`n` continuations of one prompt (ids, BOS included; (T,) or (T, F)); all share the prompt."""
        prompt = np.asarray(prompt, dtype=np.int64)
        if len(prompt) == 0:
            raise ValueError("the prompt is empty: it must hold at least BOS")
        limit = self.model.max_seq_len
        if len(prompt) >= limit:
            raise ValueError(f"prompt has {len(prompt)} tokens; the model's context is {limit}: shorten it (prompt_bars=...)")
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        trackers = [self.tokenizer.new_bar_tracker() for _ in range(n)]
        prompt_bars = trackers[0].run(prompt)
        for tracker in trackers[1:]:
            tracker.run(prompt)
        tokens = torch.from_numpy(np.repeat(prompt[None], n, axis=0)).to(self.device)
        bars = torch.from_numpy(np.repeat(prompt_bars[None].astype(np.int64), n, axis=0)).to(self.device)
        history, bar_history = [tokens], [bars]
        cache = self.model.new_cache()
        logits, cache = self.model(tokens, bar_ids=bars, cond=cond, cache=cache)
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        reasons = [STOP_MAX_TOKENS] * n
        eos, pad = self.tokenizer.eos_id, self.tokenizer.pad_id
        for step in range(max_new_tokens):
            if cache.length >= limit:
                for i in range(n):
                    if not done[i]:
                        reasons[i] = STOP_CONTEXT
                break
            step_ids = self._sample_fields(logits, torch.cat(history, dim=1), step, generator, trackers).to(self.device)
            first = step_ids[..., 0] if step_ids.dim() == 2 else step_ids
            step_ids = torch.where(done.view(-1, *([1] * (step_ids.dim() - 1))), torch.full_like(step_ids, pad), step_ids)
            rows = step_ids.cpu().numpy()
            new_bars = torch.tensor(
                [trackers[i].step(rows[i]) if not done[i] else int(bar_history[-1][i, -1]) for i in range(n)],
                dtype=torch.long,
                device=self.device,
            )[:, None]
            for i in range(n):
                if not done[i] and int(first[i]) == eos:
                    reasons[i] = STOP_EOS
            done |= first == eos
            history.append(step_ids[:, None])
            bar_history.append(new_bars)
            if bool(done.all()):
                break
            logits, cache = self.model(step_ids[:, None], bar_ids=new_bars, cond=cond, cache=cache)
        all_ids = torch.cat(history, dim=1).cpu().numpy()
        all_bars = torch.cat(bar_history, dim=1).cpu().numpy()
        results = []
        for i in range(n):
            ids = all_ids[i]
            first_field = ids[:, 0] if ids.ndim == 2 else ids
            stop = np.flatnonzero(first_field[len(prompt) :] == eos)
            end = len(prompt) + int(stop[0]) + 1 if len(stop) else len(ids)
            results.append(Generated(ids[:end], all_bars[i, :end], len(prompt), reasons[i]))
        return results
