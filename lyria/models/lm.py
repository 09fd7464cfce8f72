"""LyriaLM: a decoder-only Transformer over MIDI-like events, with swappable mixers and a KV cache.

A block is norm -> mixer -> residual -> (cross-attention) -> norm -> FFN -> residual; the conditioner
(lyria.models.conditioning) acts inside it at the norms' outputs, the sublayers' outputs and the
cross-attention, and `model.style_output` adds a style-conditioned output layer. Compound tokenizers
give several ids per step: their embeddings are summed and each field has its own head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor, nn

from lyria.config import build, resolve_class, to_plain
from lyria.models.conditioning import Conditioner, StyleOutput
from lyria.models.dropout import Dropout
from lyria.models.mixers.base import Mixer, MixerContext
from lyria.models.positions import Positional


@dataclass
class Cache:
    """Incremental-decoding state: one entry per layer, the number of tokens seen, the last token's bar id.

    Layer entries are dicts of batch-first tensors that mixers may update in place. `memory` holds what
    lasts the whole generation (a conditioning memory's keys and values): `restart` keeps it.
    """

    layers: list[dict] = field(default_factory=list)
    length: int = 0
    last_bar_ids: Tensor | None = None
    memory: dict = field(default_factory=dict)

    def select(self, rows: Tensor) -> "Cache":
        """The cache of the given batch rows only (e.g. without sequences that have ended); every tensor
        it holds, in any field, is batch-first."""
        return replace(self, **{f.name: _select_rows(getattr(self, f.name), rows) for f in fields(self) if f.name != "length"})

    def restart(self) -> "Cache":
        """An empty cache for re-reading a shortened sequence; everything but the token state is kept."""
        return replace(self, layers=[{} for _ in self.layers], length=0, last_bar_ids=None)


def _select_rows(state: Any, rows: Tensor) -> Any:
    if isinstance(state, Tensor):
        return state.index_select(0, rows)
    if isinstance(state, dict):
        return {key: _select_rows(value, rows) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_select_rows(value, rows) for value in state)
    return state


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)
        self.act = nn.GELU()
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.down(self.act(self.up(x))))


class Block(nn.Module):
    """norm -> mixer -> residual -> (cross-attention) -> norm -> FFN -> residual, with the conditioner's hooks.

    lyria.models.decode.DecodeStep computes the same for one-token decoding steps without module calls: a change
    here needs the same change there (tests/models/test_decode_step.py compares the two for every variant)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, mixer: nn.Module, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.norm1 = nn.LayerNorm(d_model)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, ctx: MixerContext, state, conditioner: Conditioner, cache: dict | None):
        layer = self.layer
        mixed, cache = self.mixer(conditioner.modulate(self.norm1(x), state, layer, "mixer"), ctx, cache)
        x = x + self.dropout(conditioner.gate(mixed, state, layer, "mixer"))
        x = conditioner.attend(x, state, layer)
        fed = self.ffn(conditioner.modulate(self.norm2(x), state, layer, "ffn"))
        return x + conditioner.gate(fed, state, layer, "ffn"), cache


class LyriaLM(nn.Module):
    """`forward(tokens, bar_ids=None, cond=None, cache=None) -> (logits, cache)`.

    tokens: (B, T) ids, or (B, T, F) for compound tokenizers (then logits is a list of F tensors).
    mixer / conditioning: config dicts with `_target_`; the mixer's optional `position` node picks the
    positional scheme, shared by all layers.
    dropout: on the embeddings and on each sublayer's output. attention_dropout: the mixers' own dropout
    (attention probabilities; the hierarchical bar layers); None means `dropout`, as in configs written
    before it existed. On CPU, dropping attention probabilities rules out SDPA's fused kernels.
    """

    def __init__(
        self,
        vocab_sizes: list[int],
        mixer: dict,
        conditioning: dict | None = None,
        d_model: int = 256,
        n_layers: int = 4,
        n_heads: int = 4,
        d_ff: int = 1024,
        dropout: float = 0.1,
        attention_dropout: float | None = None,
        max_seq_len: int = 512,
        tie_embeddings: bool = True,
        num_styles: int = 0,
        pad_id: int = 0,
        style_output: bool = False,
        style_output_rank: int = 8,
    ) -> None:
        super().__init__()
        self.vocab_sizes = [int(v) for v in vocab_sizes]
        self.d_model, self.n_layers, self.max_seq_len = d_model, n_layers, max_seq_len
        mixer = dict(to_plain(mixer))
        position_cfg = mixer.pop("position", None) or {"_target_": "lyria.models.positions.Positional"}
        self.position: Positional = build(position_cfg, "model.mixer.position", allowed=Positional, d_model=d_model, n_heads=n_heads, max_seq_len=max_seq_len)
        self.embeddings = nn.ModuleList(nn.Embedding(v, d_model, padding_idx=pad_id) for v in self.vocab_sizes)
        self.drop = Dropout(dropout)
        depth_aware = _accepts_layer(mixer)
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.blocks = nn.ModuleList(
            Block(
                d_model,
                d_ff,
                dropout,
                build(mixer, "model.mixer", allowed=Mixer, d_model=d_model, n_heads=n_heads, dropout=attention_dropout, layer=i, n_layers=n_layers)
                if depth_aware
                else build(mixer, "model.mixer", allowed=Mixer, d_model=d_model, n_heads=n_heads, dropout=attention_dropout),
                i,
            )
            for i in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.heads = nn.ModuleList(nn.Linear(d_model, v, bias=False) for v in self.vocab_sizes)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith(("mixer.out.weight", "ffn.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layers))
        if tie_embeddings:
            for head, emb in zip(self.heads, self.embeddings):
                head.weight = emb.weight
        # built after the generic initialisation, which would overwrite their zero-initialised parts
        conditioning = to_plain(conditioning) or {"_target_": "lyria.models.conditioning.Conditioner"}
        extra = {"vocab_size": self.vocab_sizes[0]} if _accepts(conditioning, "model.conditioning._target_", Conditioner, "vocab_size") else {}
        self.conditioner: Conditioner = build(
            conditioning,
            "model.conditioning",
            allowed=Conditioner,
            d_model=d_model,
            num_styles=num_styles,
            n_layers=n_layers,
            n_heads=n_heads,
            **extra,
        )
        self.style_output = StyleOutput(d_model, self.vocab_sizes, num_styles, style_output_rank) if style_output else None

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def is_compound(self) -> bool:
        return len(self.vocab_sizes) > 1

    @property
    def receptive_fields(self) -> list[int | None]:
        return [getattr(b.mixer, "receptive_field", None) for b in self.blocks]

    @property
    def streams(self) -> bool:
        """Whether decoding can go on past max_seq_len through the cache alone (every mixer streams, and
        positions are relative); otherwise a sampler re-reads a shortened sequence when the context is full."""
        return all(b.mixer.streams for b in self.blocks) and not self.position.absolute

    @property
    def uses_style_token(self) -> bool:
        """Whether sequences carry the style as a token after BOS (the `style_token` scheme)."""
        return self.conditioner.uses_style_token

    @property
    def conditional(self) -> bool:
        """Whether the model reads a style (a conditioning scheme, or the style-conditioned output layer)."""
        return self.conditioner.conditional or self.style_output is not None

    @property
    def null_style(self) -> int:
        """The reserved "no style" slot (condition dropout, the unconditional stream of guidance)."""
        return self.conditioner.null_slot

    def conditioner_styles(self, cond: dict | None, tokens: Tensor) -> Tensor:
        return self.conditioner.styles(cond, tokens.shape[0], tokens.device)

    def new_cache(self) -> Cache:
        return Cache(layers=[{} for _ in self.blocks])

    def embed(self, tokens: Tensor) -> Tensor:
        if self.is_compound:
            if tokens.dim() != 3 or tokens.shape[-1] != len(self.vocab_sizes):
                raise ValueError(f"compound model expects tokens (B, T, {len(self.vocab_sizes)}), got {tuple(tokens.shape)}")
            return sum(emb(tokens[..., i]) for i, emb in enumerate(self.embeddings))
        if tokens.dim() != 2:
            raise ValueError(f"expected tokens (B, T), got {tuple(tokens.shape)}")
        return self.embeddings[0](tokens)

    def forward(
        self,
        tokens: Tensor,
        bar_ids: Tensor | None = None,
        cond: dict | None = None,
        cache: Cache | None = None,
    ) -> tuple[Tensor | list[Tensor], Cache | None]:
        length = tokens.shape[1]
        offset = cache.length if cache is not None else 0
        self.position.reserve(offset + length)
        positions = torch.arange(offset, offset + length, device=tokens.device)
        ctx = MixerContext(
            positions=positions,
            position=self.position,
            bar_ids=bar_ids,
            last_bar_ids=cache.last_bar_ids if cache is not None else None,
        )
        state = self.conditioner.prepare(cond, tokens.shape[0], tokens.device, cache)
        state = self.conditioner.locate(state, bar_ids)
        x = self.position.embed(self.embed(tokens), positions)
        x = self.drop(self.conditioner.embed(x, state))
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, ctx, state, self.conditioner, cache.layers[i] if cache is not None else None)
            if cache is not None:
                cache.layers[i] = layer_cache
        x = self.norm(x)
        logits = [head(x) for head in self.heads]
        if self.style_output is not None:
            logits = self.style_output(x, logits, self.conditioner_styles(cond, tokens))
        if cache is not None:
            cache.length = offset + length
            if bar_ids is not None:
                cache.last_bar_ids = bar_ids[:, -1:]
        return (logits if self.is_compound else logits[0]), cache


def _accepts(cfg: dict, where: str, base: type, *names: str) -> bool:
    """Whether the class a config node names takes all of these constructor arguments."""
    import inspect

    params = inspect.signature(resolve_class(cfg.get("_target_"), where, base=base).__init__).parameters
    return all(name in params for name in names)


def _accepts_layer(mixer_cfg: dict) -> bool:
    """Mixers that vary with depth (dilation schedules, alternating layers) take `layer` and `n_layers`."""
    import inspect

    target = resolve_class(mixer_cfg.get("_target_"), "model.mixer._target_", base=Mixer)
    params = inspect.signature(target.__init__).parameters
    return "layer" in params and "n_layers" in params


def build_model(model_cfg: Any, tokenizer) -> LyriaLM:
    """Builds the model a config describes for a tokenizer's vocabulary."""
    cfg = dict(to_plain(model_cfg))
    cfg.pop("_target_", None)
    return LyriaLM(
        vocab_sizes=tokenizer.vocab_sizes,
        num_styles=tokenizer.num_style_slots,
        pad_id=tokenizer.pad_id,
        **cfg,
    )
