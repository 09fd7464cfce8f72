"""lyria.models.decode.DecodeStep: one-token decoding steps without module calls compute exactly what the model's
forward computes through the cache, for every mixer (conf/model/mixer/) with every conditioning scheme
(conf/model/conditioning/), in fp32 and int8, past window edges and the RoPE table, with rows dropped from the
batch; what it cannot flatten goes through the forward."""

from __future__ import annotations

import pytest
import torch
from mixer_cases import MIXER_NAMES, bar_layout, mixer_config
from test_conditioning import CONDITIONING_NAMES, NUM_STYLES, VOCAB, conditioned_lm, conditioning_config
from test_quantize import trained_like
from torch import nn

from lyria.generation.quantize import quantize_model
from lyria.models.decode import DecodeStep, unsupported
from lyria.models.lm import Block, LyriaLM
from lyria.models.mixers.attention import AttentionMixer

pytestmark = pytest.mark.usefixtures("one_thread")

PREFILL = 5


def decode(step, model, tokens, bars, cond, drop_row_at: int | None = None):
    """Logits of every position: the first PREFILL in one call, then one token at a time through the cache; at
    `drop_row_at` the batch's first row leaves (the cache keeps the others, as the sampler does)."""
    parts = []
    with torch.inference_mode():
        cache = model.new_cache()
        logits, cache = step(tokens[:, :PREFILL], bar_ids=bars[:, :PREFILL], cond=cond, cache=cache)
        parts.append(logits)
        for t in range(PREFILL, tokens.shape[1]):
            if t == drop_row_at:
                keep = torch.arange(1, tokens.shape[0])
                cache, tokens, bars = cache.select(keep), tokens[keep], bars[keep]
                cond = None if cond is None else {k: v[keep] for k, v in cond.items()}
                parts = [p[keep] for p in parts]
            logits, cache = step(tokens[:, t : t + 1], bar_ids=bars[:, t : t + 1], cond=cond, cache=cache)
            parts.append(logits)
    return torch.cat(parts, dim=1), cache


def assert_same_decoding(model, length: int, batch: int = 3, drop_row_at: int | None = None, seed: int = 1):
    step = DecodeStep.of(model)
    assert isinstance(step, DecodeStep), unsupported(model)
    tokens = torch.randint(6, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
    bars = bar_layout(batch, length, seed=seed)
    cond = {"style": torch.arange(batch) % (NUM_STYLES - 1)} if model.conditional else None
    want, want_cache = decode(model, model, tokens, bars, cond, drop_row_at)
    got, got_cache = decode(step, model, tokens, bars, cond, drop_row_at)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert got_cache.length == want_cache.length == length
    torch.testing.assert_close(got_cache.last_bar_ids, want_cache.last_bar_ids, atol=0, rtol=0)
    for mine, theirs in zip(got_cache.layers, want_cache.layers):
        assert mine.keys() == theirs.keys() and mine.get("filled") == theirs.get("filled")
        for key in mine:
            if isinstance(mine[key], torch.Tensor):
                # attention caches: preallocated buffers, filled up to "filled" (the rest is unwritten memory)
                if key in ("k", "v") and "filled" in mine:
                    torch.testing.assert_close(mine[key][:, :, : mine["filled"]], theirs[key][:, :, : mine["filled"]], atol=0, rtol=0)
                else:
                    torch.testing.assert_close(mine[key], theirs[key], atol=0, rtol=0)


@pytest.mark.parametrize("mixer", MIXER_NAMES)
@pytest.mark.parametrize("conditioning", CONDITIONING_NAMES)
def test_steps_equal_the_forward_for_every_mixer_and_scheme(conditioning, mixer):
    """60 tokens (windows of 12 crossed several times), three rows, one of them leaving half-way; fp32, then int8."""
    model = trained_like(conditioned_lm(mixer, conditioning, style_output=conditioning == "adaln"))
    assert_same_decoding(model, length=60, drop_row_at=30)
    assert_same_decoding(quantize_model(model, "int8"), length=60, drop_row_at=30)


@pytest.mark.parametrize("mixer", [name for name in MIXER_NAMES if "full" not in name])
def test_steps_go_past_the_context_like_the_forward(mixer):
    """Streaming mixers decode past max_seq_len (the RoPE table grows); the others' relative schemes too, as far
    as the forward goes."""
    model = trained_like(conditioned_lm(mixer, "none"))
    if model.position.absolute:
        pytest.skip("learned positions end at max_seq_len")
    assert_same_decoding(model, length=3 * model.max_seq_len, batch=2)


def test_compound_tokens_and_their_heads():
    torch.manual_seed(0)
    model = trained_like(
        LyriaLM([VOCAB, 12, 9], mixer_config("attention_rope"), conditioning_config("style_embedding"), d_model=32, n_layers=2,
                n_heads=4, d_ff=64, dropout=0.0, max_seq_len=64, num_styles=NUM_STYLES)
    )
    step = DecodeStep(model)
    gen = torch.Generator().manual_seed(3)
    tokens = torch.stack([torch.randint(1, v, (2, 20), generator=gen) for v in model.vocab_sizes], dim=-1)
    bars, cond = bar_layout(2, 20), {"style": torch.tensor([0, 1])}
    with torch.inference_mode():
        outputs = []
        for f in (model, step):
            cache = model.new_cache()
            logits, cache = f(tokens[:, :4], bar_ids=bars[:, :4], cond=cond, cache=cache)
            fields = [[field] for field in logits]
            for t in range(4, 20):
                logits, cache = f(tokens[:, t : t + 1], bar_ids=bars[:, t : t + 1], cond=cond, cache=cache)
                for parts, field in zip(fields, logits):
                    parts.append(field)
            outputs.append([torch.cat(parts, dim=1) for parts in fields])
    assert [o.shape[-1] for o in outputs[1]] == model.vocab_sizes
    for got, want in zip(outputs[1], outputs[0]):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("mixer", MIXER_NAMES)
def test_attention_layers_are_flattened_and_other_mixers_called(mixer):
    step = DecodeStep(conditioned_lm(mixer, "none"))
    for layer in step.layers:
        own_forward = type(layer.mixer).forward is AttentionMixer.forward
        assert layer.inline == (mixer.startswith("attention") and own_forward), (mixer, type(layer.mixer).__name__)
        if layer.inline:  # with the mixer's own `attend` (relative attention brings one)
            assert layer.attend.__func__ is type(layer.mixer).attend


def test_hooks_on_called_modules_run_and_elsewhere_fall_back():
    model = trained_like(conditioned_lm("attention_rope", "none"))
    tokens, bars = torch.randint(6, VOCAB, (1, 10), generator=torch.Generator().manual_seed(0)), torch.zeros(1, 10, dtype=torch.long)
    want, _ = decode(model, model, tokens, bars, None)
    # a hook on a head (as tests use to forbid EOS) is kept: the head is called as a module
    calls = []
    handle = model.heads[0].register_forward_hook(lambda module, args, out: calls.append(1) or out + 1.0)
    step = DecodeStep.of(model)
    assert isinstance(step, DecodeStep)
    got, _ = decode(step, model, tokens, bars, None)
    torch.testing.assert_close(got, want + 1.0, atol=0, rtol=0)
    assert len(calls) == tokens.shape[1] - PREFILL + 1
    handle.remove()
    # hooks on what the step flattens away rule it out, with the module named
    for module, name in ((model.blocks[1].norm2, "blocks.1.norm2"), (model.blocks[0].mixer, "blocks.0.mixer"), (model, "model")):
        handle = module.register_forward_pre_hook(lambda *args: None)
        assert name in unsupported(model) and DecodeStep.of(model) is model
        with pytest.raises(ValueError, match=name):
            DecodeStep(model)
        handle.remove()
    assert unsupported(model) is None


def test_what_it_does_not_flatten_goes_through_the_forward(monkeypatch):
    assert "not a LyriaLM" in unsupported(nn.Linear(2, 2))

    class MyBlock(Block):
        pass

    other = conditioned_lm("attention_rope", "none")
    other.blocks[0].__class__ = MyBlock
    assert "MyBlock" in unsupported(other) and DecodeStep.of(other) is other
    # no cache, several tokens, training mode: the model's forward itself (dropout included)
    model = conditioned_lm("attention_rope", "none").eval()
    step = DecodeStep(model)
    forward, calls = model.forward, []
    monkeypatch.setattr(model, "forward", lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs))
    tokens = torch.randint(6, VOCAB, (2, 6))
    step(tokens)
    step(tokens[:, :3], cache=model.new_cache())
    step(tokens[:, :1], cache=model.new_cache())
    assert len(calls) == 2
    model.train()
    step(tokens[:, :1], cache=model.new_cache())
    assert len(calls) == 3


def test_a_bf16_model_keeps_its_rope_table_and_steps_like_the_forward():
    """`model.to(torch.bfloat16)` (Lightning's bf16-true) keeps RoPE's complex table; steps equal the forward."""
    import warnings

    model = trained_like(conditioned_lm("attention_rope", "adaln"))
    tokens = torch.randint(6, VOCAB, (2, 24), generator=torch.Generator().manual_seed(2))
    bars = bar_layout(2, 24)
    cond = {"style": torch.tensor([0, 2])}
    with torch.inference_mode():
        fp32, _ = model(tokens, bar_ids=bars, cond=cond)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "casting complex values to real" on the way
        model = model.to(torch.bfloat16)
    assert model.position.rotations.dtype == torch.complex64 and model.position.inv_freq.dtype == torch.float32
    assert model.norm.weight.dtype == torch.bfloat16
    with torch.inference_mode():
        bf16, _ = model(tokens, bar_ids=bars, cond=cond)
    error = (bf16.float() - fp32).abs().max().item()
    assert error < 0.1 * fp32.std().item(), f"bf16 logits off by {error:.3g} (fp32 std {fp32.std().item():.3g})"
    assert_same_decoding(model, length=24)
