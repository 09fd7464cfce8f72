"""Hierarchical mixer: note-level local attention plus attention to processed summaries of completed bars."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyria.models.dropout import Dropout
from lyria.models.mixers.attention import AttentionMixer
from lyria.models.mixers.base import Mixer, MixerContext
from lyria.models.positions import RotaryPosition


class BarLayer(nn.Module):
    """One causal pre-norm Transformer layer over bar vectors, with rotary positions counted in bars."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = AttentionMixer(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model), Dropout(dropout)
        )

    def forward(self, bars: Tensor, ctx: MixerContext) -> Tensor:
        bars = bars + self.attention(self.norm1(bars), ctx, None)[0]
        return bars + self.ffn(self.norm2(bars))


class HierarchicalMixer(Mixer):
    """Two levels with different receptive fields by construction.

    Note level: causal self-attention over the last `window` tokens. Bar level: each bar of the
    sequence is pooled (mean of this layer's input over its tokens) into a bar vector; `bar_layers`
    causal layers process the bar vectors; every token then attends to a learned start vector and to
    the processed vectors of all bars that ended before its own bar. The two outputs are summed, so
    the layer sees `window` tokens directly and the whole past through bar summaries.

    Bars are runs of equal `bar_ids` (a change of id starts a bar), so bars work with every tokenizer
    and across pieces packed into one sequence. Incremental decoding keeps, per sequence, the running
    sum of the unfinished bar and the pooled vectors of finished ones; the bar layers run again only
    when some sequence finishes a bar.
    """

    def __init__(
        self, d_model: int, n_heads: int, dropout: float = 0.0, window: int = 128, bar_layers: int = 1
    ) -> None:
        super().__init__()
        if window is None or window < 1:
            raise ValueError(f"hierarchical mixer window must be >= 1 token, got window={window}")
        if bar_layers < 1:
            raise ValueError(f"hierarchical mixer bar_layers must be >= 1, got bar_layers={bar_layers}")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.notes = AttentionMixer(d_model, n_heads, dropout, window)
        self.bar_position = RotaryPosition(d_model, n_heads, max_seq_len=64)
        self.bar_layers = nn.ModuleList(BarLayer(d_model, n_heads, dropout) for _ in range(bar_layers))
        self.bar_start = nn.Parameter(torch.zeros(d_model))
        self.query = nn.Linear(d_model, d_model, bias=False)
        self.key_value = nn.Linear(d_model, 2 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.dropout = dropout
        self.note_receptive_field = window
        self.receptive_field = None  # bar summaries reach back to the first bar
        self.streams = True  # a note window plus one summary per bar: the whole piece, never re-read

    def forward(self, x: Tensor, ctx: MixerContext, cache: dict | None) -> tuple[Tensor, dict | None]:
        if ctx.bar_ids is None:
            raise ValueError(
                "the hierarchical mixer needs bar_ids (the bar index of every token): pass "
                "model(tokens, bar_ids=...) in training and generation"
            )
        batch, length, d_model = x.shape
        notes, notes_cache = self.notes(x, ctx, None if cache is None else cache.get("notes", {}))

        # Bar slot of every token: how many bars of this sequence ended before the token's bar.
        bar_ids = ctx.bar_ids.to(x.device)
        starts_bar = torch.zeros_like(bar_ids, dtype=torch.bool)
        starts_bar[:, 1:] = bar_ids[:, 1:] != bar_ids[:, :-1]
        if cache:
            starts_bar[:, 0] = bar_ids[:, 0] != ctx.last_bar_ids[:, -1].to(x.device)
            done_before = cache["n_bars"]
        else:
            done_before = torch.zeros(batch, dtype=torch.long, device=x.device)
        slots = done_before[:, None] + starts_bar.long().cumsum(1)  # (B, T)
        done_after = slots[:, -1]
        n_slots = int(done_after.max()) + 1

        # Mean of the layer input over each bar; the unfinished bar from earlier calls adds its running sum.
        # Sums and counts stay in fp32: bf16 counts stop being exact at 256 tokens.
        sums = x.new_zeros(batch, n_slots, d_model, dtype=torch.float32)
        sums = sums.scatter_add(1, slots[..., None].expand(-1, -1, d_model), x.float())
        counts = sums.new_zeros(batch, n_slots).scatter_add(1, slots, sums.new_ones(batch, length))
        finished_before = None
        if cache:
            carry = F.one_hot(done_before, n_slots).float()
            sums = sums + carry[..., None] * cache["bar_sum"][:, None]
            counts = counts + carry * cache["bar_count"][:, None]
            finished_before = cache["bars"][:, :n_slots]  # wider when the rows that finished most bars have left
        pooled = (sums / counts.clamp(min=1)[..., None]).to(x.dtype)
        if finished_before is not None and finished_before.shape[1]:
            pooled = pooled + F.pad(finished_before, (0, 0, 0, n_slots - finished_before.shape[1]))

        n_done = int(done_after.max())  # bars some sequence has finished: the only ones anybody attends to
        if cache and torch.equal(done_after, done_before) and cache["bar_kv"][0].shape[2] == n_done + 1:
            bar_k, bar_v = cache["bar_kv"]
        else:
            bar_k, bar_v = self._bar_keys_values(pooled[:, :n_done])

        # Key 0 is the start vector; key j >= 1 is bar j - 1, visible to tokens of later bars only.
        q = self.query(x).view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)
        visible = torch.arange(n_done + 1, device=x.device)[None, None, :] <= slots[..., None]
        # The visible bars differ per sequence, so the mask has a batch axis and no fused causal kernel applies.
        summary = F.scaled_dot_product_attention(
            q, bar_k, bar_v, attn_mask=visible[:, None], dropout_p=self.dropout if self.training else 0.0
        )
        y = notes + self.out(summary.transpose(1, 2).reshape(batch, length, d_model))

        new_cache = None
        if cache is not None:
            rows = torch.arange(batch, device=x.device)
            finished = torch.arange(n_done, device=x.device)[None, :] < done_after[:, None]
            new_cache = {
                "notes": notes_cache,
                "n_bars": done_after,
                "bar_sum": sums[rows, done_after],
                "bar_count": counts[rows, done_after],
                "bars": pooled[:, :n_done] * finished[..., None],
                "bar_kv": (bar_k, bar_v),
            }
        return y, new_cache

    def _bar_keys_values(self, bars: Tensor) -> tuple[Tensor, Tensor]:
        """Runs the bar layers over finished bars (B, N, D); keys and values of [start; processed bars]."""
        batch, n_bars, d_model = bars.shape
        if n_bars:
            self.bar_position.reserve(n_bars)
            ctx = MixerContext(positions=torch.arange(n_bars, device=bars.device), position=self.bar_position)
            for layer in self.bar_layers:
                bars = layer(bars, ctx)
        summaries = torch.cat([self.bar_start.expand(batch, 1, d_model), bars], dim=1)
        kv = self.key_value(summaries).view(batch, n_bars + 1, 2, self.n_heads, self.head_dim)
        return kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
