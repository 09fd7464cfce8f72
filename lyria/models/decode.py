"""One decoding step of a LyriaLM without its module calls: the same computation as `model(tokens, ..., cache=cache)`
for one new token per row, with the layers flattened into one loop over plain tensor operations.

At batch 1 a decoding step is a few hundred small operations on vectors of d_model values; the kernels are
microseconds each, and `nn.Module.__call__`, the dataclasses and the hooks that do nothing (an unconditional
model's conditioner, NoPE's rotation) cost as much again. `DecodeStep` resolves all of that once, when it is
built:

- linear layers become their kernel call with the weights bound (`F.linear`, or a module's own
  `decode_kernel()`, which `Int8Linear` of `quantize: int8` provides);
- the conditioner's and the positional scheme's hooks are called only where their class overrides the base
  class's do-nothing hook;
- attention mixers (`AttentionMixer` and the subclasses that change only `attend`, such as relative attention)
  run inline: one projection, RoPE on queries and keys together (one `RotaryPosition.rope` call), the cache
  write (`append_keys`, the same buffers), the mixer's own `attend`, the output projection. Every other mixer
  (convolutions, hierarchical, hybrid) is called through its `forward`, with the same `MixerContext` the model
  builds.

Anything else falls back to the model's forward: prompts and re-reads (more than one token), training mode,
forward hooks on a module the step flattens away (see `unsupported`; hooks on the linear layers and on the
mixers it calls do run), and blocks or feed-forward layers of other classes than lyria's own.
tests/models/test_decode_step.py checks every mixer x conditioning scheme, fp32 and int8, against the model's
forward through the cache; the sampler (lyria.generation.sampler) uses it for every step.

It holds references to the model's weights: build it after they are final (loading, quantization), as the
sampler does.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyria.models.conditioning import Conditioner
from lyria.models.lm import Block, Cache, FeedForward, LyriaLM
from lyria.models.mixers.attention import AttentionMixer, append_keys
from lyria.models.mixers.base import MixerContext
from lyria.models.positions import Positional, RotaryPosition

Kernel = Callable[[Tensor], Tensor]


def linear_kernel(module: nn.Module) -> Kernel:
    """A callable computing `module(x)` for a linear layer: `F.linear` with the weights bound for nn.Linear, the
    module's `decode_kernel()` where it has one (quantized layers), its bound forward otherwise; the module
    itself where it has forward hooks, so that they run."""
    if _hooked(module):
        return module
    if type(module) is nn.Linear:
        weight, bias = module.weight, module.bias
        return lambda x: F.linear(x, weight, bias)
    own = getattr(module, "decode_kernel", None)
    return own() if callable(own) else module.forward


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _overrides(obj: Any, base: type, name: str) -> bool:
    """Whether obj's class replaces the base class's method `name` (a do-nothing hook otherwise)."""
    return getattr(type(obj), name) is not getattr(base, name)


def _global_hooks() -> bool:
    from torch.nn.modules import module as module_globals

    return any(getattr(module_globals, name, None) for name in ("_global_forward_hooks", "_global_forward_pre_hooks"))


def _inline(mixer: nn.Module) -> bool:
    """Attention whose forward is AttentionMixer's own runs inline (its subclasses may change `attend`)."""
    return isinstance(mixer, AttentionMixer) and type(mixer).forward is AttentionMixer.forward


def unsupported(model: nn.Module) -> str | None:
    """Why `DecodeStep` cannot flatten this model (its steps then go through the forward), or None.

    Forward hooks on the modules it calls (linear layers, non-attention mixers, the style-conditioned output)
    still run; hooks on the modules it flattens away (the model, its blocks, norms, feed-forward layers,
    activations, attention mixers, the token embedding) and global hooks would not, so they rule it out."""
    if not isinstance(model, LyriaLM):
        return f"{type(model).__name__} is not a LyriaLM"
    if _global_hooks():
        return "global forward hooks are registered, which only the model's forward runs"
    flattened = [("model", model), ("norm", model.norm), ("drop", model.drop)]
    if not model.is_compound:
        flattened.append(("embeddings.0", model.embeddings[0]))
    for block in model.blocks:
        if type(block) is not Block or type(block.ffn) is not FeedForward:
            return f"block {block.layer} is a {type(block).__name__} with a {type(block.ffn).__name__}, not lyria's Block and FeedForward"
        parts = {"": block, "norm1": block.norm1, "norm2": block.norm2, "dropout": block.dropout, "ffn": block.ffn}
        parts |= {"ffn.act": block.ffn.act, "ffn.dropout": block.ffn.dropout}
        if _inline(block.mixer):
            parts["mixer"] = block.mixer
        flattened += [(f"blocks.{block.layer}" + (f".{name}" if name else ""), module) for name, module in parts.items()]
    hooked = [name for name, module in flattened if _hooked(module)]
    if hooked:
        return f"{hooked[0]} has forward hooks, which only the model's forward runs"
    return None


class _Layer:
    """What one block's step needs, resolved once."""

    def __init__(self, block: Block, conditioner: Conditioner) -> None:
        self.index = block.layer
        self.norm1 = (block.norm1.normalized_shape, block.norm1.weight, block.norm1.bias, block.norm1.eps)
        self.norm2 = (block.norm2.normalized_shape, block.norm2.weight, block.norm2.bias, block.norm2.eps)
        mixer = block.mixer
        self.mixer = mixer
        self.inline = _inline(mixer)
        if self.inline:
            self.qkv, self.out = linear_kernel(mixer.qkv), linear_kernel(mixer.out)
            self.heads, self.head_dim = mixer.n_heads, mixer.head_dim
            self.keep = None if mixer.window is None else mixer.window - 1
            self.attend = mixer.attend
        else:
            self.forward = mixer if _hooked(mixer) else mixer.forward
        ffn = block.ffn
        self.up, self.down = linear_kernel(ffn.up), linear_kernel(ffn.down)
        act = ffn.act
        if type(act) is nn.GELU:
            approximate = act.approximate
            self.act: Kernel = lambda x: F.gelu(x, approximate=approximate)
        else:
            self.act = act.forward
        self.modulate = conditioner.modulate if _overrides(conditioner, Conditioner, "modulate") else None
        self.gate = conditioner.gate if _overrides(conditioner, Conditioner, "gate") else None
        self.cross = conditioner.attend if _overrides(conditioner, Conditioner, "attend") else None


class DecodeStep:
    """`step(tokens, bar_ids=None, cond=None, cache=None) -> (logits, cache)`, the model's own signature and
    results; steps of one token per row with a cache take the flattened path, everything else the forward."""

    def __init__(self, model: LyriaLM) -> None:
        reason = unsupported(model)
        if reason is not None:
            raise ValueError(f"DecodeStep: {reason}")
        self.model = model
        conditioner, position = model.conditioner, model.position
        self.conditioner, self.position = conditioner, position
        self.layers = [_Layer(block, conditioner) for block in model.blocks]
        self.norm = (model.norm.normalized_shape, model.norm.weight, model.norm.bias, model.norm.eps)
        self.heads = [linear_kernel(head) for head in model.heads]
        embedding = model.embeddings[0]
        self.embedding = None if model.is_compound else embedding.weight
        self.prepare = _overrides(conditioner, Conditioner, "prepare")
        self.locate = _overrides(conditioner, Conditioner, "locate")
        self.cond_embed = _overrides(conditioner, Conditioner, "embed")
        self.pos_embed = _overrides(position, Positional, "embed")
        # RoPE rotates queries and keys in one call (its `rotate` would make two); other schemes through `rotate`
        self.rope = isinstance(position, RotaryPosition) and type(position).rotate is RotaryPosition.rotate
        self.rotate = _overrides(position, Positional, "rotate") and not self.rope

    @classmethod
    def of(cls, model: nn.Module) -> "DecodeStep | nn.Module":
        """A DecodeStep for the model, or the model itself where `unsupported` names a reason."""
        return model if unsupported(model) is not None else cls(model)

    def __call__(self, tokens: Tensor, bar_ids: Tensor | None = None, cond: dict | None = None, cache: Cache | None = None):
        model = self.model
        if cache is None or tokens.shape[1] != 1 or model.training:
            return model(tokens, bar_ids=bar_ids, cond=cond, cache=cache)
        batch = tokens.shape[0]
        offset = cache.length
        position = self.position
        position.reserve(offset + 1)
        positions = torch.arange(offset, offset + 1, device=tokens.device)
        ctx = MixerContext(positions=positions, position=position, bar_ids=bar_ids, last_bar_ids=cache.last_bar_ids)
        conditioner = self.conditioner
        state = conditioner.prepare(cond, batch, tokens.device, cache) if self.prepare else None
        if self.locate:
            state = conditioner.locate(state, bar_ids)
        x = model.embed(tokens) if self.embedding is None else F.embedding(tokens, self.embedding)
        if self.pos_embed:
            x = position.embed(x, positions)
        if self.cond_embed:
            x = conditioner.embed(x, state)
        layers = cache.layers
        for layer in self.layers:
            i = layer.index
            h = F.layer_norm(x, *layer.norm1)
            if layer.modulate is not None:
                h = layer.modulate(h, state, i, "mixer")
            if layer.inline:
                heads, head_dim = layer.heads, layer.head_dim
                qkv = layer.qkv(h).view(batch, 3, heads, 1, head_dim)  # (B, q/k/v, H, T=1, Dh)
                if self.rope:  # queries and keys together, element for element the forward's rotation
                    q, k = position.rope(qkv.narrow(1, 0, 2), positions).unbind(1)
                    v = qkv.select(1, 2)
                else:
                    q, k, v = qkv.unbind(1)
                    if self.rotate:
                        q, k = position.rotate(q, k, positions, positions)
                k, v = append_keys(layers[i], k, v, layer.keep)
                y = layer.attend(q, k, v, positions, position)
                # (B, H, 1, Dh) -> (B, 1, H * Dh): with one query the heads lie side by side, as transpose(1, 2) puts them
                mixed = layer.out(y.reshape(batch, 1, -1))
            else:
                mixed, layers[i] = layer.forward(h, ctx, layers[i])
            if layer.gate is not None:
                mixed = layer.gate(mixed, state, i, "mixer")
            x = x + mixed
            if layer.cross is not None:
                x = layer.cross(x, state, i)
            h = F.layer_norm(x, *layer.norm2)
            if layer.modulate is not None:
                h = layer.modulate(h, state, i, "ffn")
            fed = layer.down(layer.act(layer.up(h)))
            if layer.gate is not None:
                fed = layer.gate(fed, state, i, "ffn")
            x = x + fed
        x = F.layer_norm(x, *self.norm)
        logits = [head(x) for head in self.heads]
        if model.style_output is not None:
            logits = model.style_output(x, logits, model.conditioner_styles(cond, tokens))
        cache.length = offset + 1
        if bar_ids is not None:
            cache.last_bar_ids = bar_ids[:, -1:]
        return (logits if model.is_compound else logits[0]), cache
