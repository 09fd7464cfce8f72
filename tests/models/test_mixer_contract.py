"""The mixer contract for every YAML in conf/model/mixer/: causal, cached decoding equals the full
forward pass, receptive fields as configured."""

from __future__ import annotations

import logging

import pytest
import torch
from mixer_cases import MIXER_DIR, MIXER_NAMES, bar_layout, mixer_config, tiny_lm

from lyria.models.mixers import AttentionMixer, DilatedConvMixer, HierarchicalMixer, HybridMixer, MixerContext
from lyria.models.mixers.relative import RelativeAttentionMixer
from lyria.models.positions import LearnedPosition, Positional, alibi_slopes

N_LAYERS = 4


def embedding_grads(model, tokens, bar_ids, steps) -> list[torch.Tensor]:
    """For each t in steps: d(random projection of logits[:, t]) / d(token embeddings), (B, T, D)."""
    captured = {}
    handle = model.embeddings[0].register_forward_hook(lambda module, args, output: captured.setdefault("emb", output))
    try:
        logits, _ = model(tokens, bar_ids=bar_ids)
    finally:
        handle.remove()
    probe = torch.randn(logits.shape[-1], generator=torch.Generator().manual_seed(0))
    return [torch.autograd.grad((logits[:, t] * probe).sum(), captured["emb"], retain_graph=True)[0] for t in steps]


def expected_layer_fields(name: str, cfg: dict, n_layers: int) -> list[int | None]:
    """Receptive field of each layer, in tokens, read off the config (None = the whole past)."""

    def conv(index: int, n_conv: int) -> int:
        cycle = cfg["dilation_cycle"] or n_conv
        return (cfg["kernel_size"] - 1) * cfg["dilation_base"] ** (index % cycle) + 1

    fields = []
    for layer in range(n_layers):
        if name == "dilated_conv":
            fields.append(conv(layer, n_layers))
        elif name == "hybrid_attention_conv" and cfg["mode"] == "alternating":
            fields.append(cfg["window"] if layer % 2 == 0 else conv(layer // 2, n_layers // 2))
        elif name == "hybrid_attention_conv":
            fields.append(None if cfg["window"] is None else max(cfg["window"], conv(layer, n_layers)))
        elif name == "hierarchical":
            fields.append(None)  # the note window is local, but bar summaries reach the first bar
        else:
            fields.append(cfg.get("window"))
    return fields


def dependence(grad: torch.Tensor) -> torch.Tensor:
    """Which input positions the probed output depends on: (T,) bool, over the batch."""
    return grad.abs().sum(dim=(0, 2)) > 0


def test_every_yaml_says_what_it_is():
    assert len(MIXER_NAMES) >= 9
    for name in MIXER_NAMES:
        first = (MIXER_DIR / f"{name}.yaml").read_text().splitlines()[0]
        assert first.startswith("# ") and len(first) > 20, f"{name}.yaml must open with a one-line comment"


def test_causal(mixer_variant, mixer_cfg):
    length = 40
    model = tiny_lm(mixer_cfg, n_layers=N_LAYERS)
    tokens = torch.randint(1, 40, (2, length), generator=torch.Generator().manual_seed(1))
    bar_ids = bar_layout(2, length)
    for t, grad in enumerate(embedding_grads(model, tokens, bar_ids, range(length))):
        assert torch.count_nonzero(grad[:, t + 1 :]) == 0, f"output at {t} depends on a later token"
        assert torch.count_nonzero(grad[:, t]) > 0, f"output at {t} ignores its own token"


def _decode(model, tokens, bar_ids, prompt: int, chunks: list[int]) -> torch.Tensor:
    cache = model.new_cache()
    logits, cache = model(tokens[:, :prompt], bar_ids=bar_ids[:, :prompt], cache=cache)
    outputs, t, step = [logits], prompt, 0
    while t < tokens.shape[1]:
        n = chunks[step % len(chunks)]
        logits, cache = model(tokens[:, t : t + n], bar_ids=bar_ids[:, t : t + n], cache=cache)
        outputs.append(logits)
        t, step = t + n, step + 1
    assert cache.length == tokens.shape[1]
    return torch.cat(outputs, dim=1)


@pytest.mark.parametrize(
    "prompt,chunks", [(8, [1]), (30, [1, 2, 3, 5, 13, 4])], ids=["token-by-token", "uneven-chunks"]
)
def test_cache_equals_full_forward(mixer_variant, mixer_cfg, prompt, chunks):
    length = prompt + 100  # >= 96 generated steps; bars of 2..7 tokens; windows of 12
    model = tiny_lm(mixer_cfg, n_layers=N_LAYERS)
    tokens = torch.randint(1, 40, (2, length), generator=torch.Generator().manual_seed(2))
    bar_ids = bar_layout(2, length, seed=3)
    with torch.no_grad():
        full, _ = model(tokens, bar_ids=bar_ids)
        incremental = _decode(model, tokens, bar_ids, prompt, chunks)
    assert full.abs().max() > 0.1  # logits that say something, so the comparison means something
    assert (incremental - full).abs().max().item() <= 1e-4


def test_layer_receptive_fields(mixer_variant, mixer_cfg):
    """Each layer's output depends on exactly the tokens its config says (gradient test, per layer)."""
    name = mixer_variant[0]
    length = 48
    model = tiny_lm(mixer_cfg, n_layers=N_LAYERS)
    expected = expected_layer_fields(name, mixer_cfg, N_LAYERS)
    assert model.receptive_fields == expected
    ctx = MixerContext(positions=torch.arange(length), position=model.position, bar_ids=bar_layout(1, length))
    x = torch.randn(1, length, 32, generator=torch.Generator().manual_seed(4), requires_grad=True)
    for block, field in zip(model.blocks, expected):
        for t in (length - 1, length // 2):
            y, _ = block.mixer(x, ctx, None)
            (grad,) = torch.autograd.grad(y[0, t].sum(), x)
            first = 0 if field is None else max(0, t - field + 1)
            seen = dependence(grad).nonzero().flatten().tolist()
            # A dilated layer touches only its taps; its field is the span from the first tap to t.
            assert (seen[0], seen[-1]) == (first, t), f"layer {block.layer}: output {t} should see tokens {first}..{t}"


def test_model_receptive_field(mixer_variant, mixer_cfg):
    """A stack of bounded layers sees 1 + sum(field - 1) tokens; an unbounded one reaches the first token."""
    length = 64
    model = tiny_lm(mixer_cfg, n_layers=N_LAYERS)
    fields = model.receptive_fields
    stack = None if None in fields else 1 + sum(f - 1 for f in fields)
    tokens = torch.randint(1, 40, (1, length), generator=torch.Generator().manual_seed(5))
    (grad,) = embedding_grads(model, tokens, bar_layout(1, length), [length - 1])
    seen = dependence(grad)
    if stack is None:
        assert seen.all()
    else:
        assert stack < length
        assert torch.equal(seen, torch.arange(length) >= length - stack)


def test_hierarchical_sees_earlier_bars_but_not_its_own_beyond_the_window():
    window, length = 6, 40
    mixer = HierarchicalMixer(d_model=16, n_heads=2, window=window, bar_layers=2)
    bar_ids = torch.tensor([[0] * 10 + [1] * 8 + [2] * 22])  # the last bar starts at 18
    ctx = MixerContext(positions=torch.arange(length), position=Positional(16, 2, 64), bar_ids=bar_ids)
    x = torch.randn(1, length, 16, requires_grad=True)
    y, _ = mixer(x, ctx, None)
    (grad,) = torch.autograd.grad(y[0, length - 1].sum(), x)
    seen = dependence(grad)
    assert seen[:18].all(), "finished bars reach the token through their summaries"
    assert not seen[18 : length - window].any(), "the unfinished bar is not summarised"
    assert seen[length - window :].all()


def test_hierarchical_needs_bar_ids():
    model = tiny_lm(mixer_config("hierarchical"))
    with pytest.raises(ValueError, match="bar_ids"):
        model(torch.ones(1, 5, dtype=torch.long))


def test_dilated_conv_logs_its_receptive_field(caplog):
    with caplog.at_level(logging.INFO, logger="lyria.models.mixers.conv"):
        model = tiny_lm(mixer_config("dilated_conv"), n_layers=4)
    assert "receptive field 31 tokens" in caplog.text
    assert model.blocks[0].mixer.stack_receptive_field == 31


@pytest.mark.parametrize(
    "build,key",
    [
        (lambda: AttentionMixer(16, 2, window=0), "window=0"),
        (lambda: HybridMixer(16, 2, mode="serial"), "mode='serial'"),
        (lambda: DilatedConvMixer(16, 2, kernel_size=0), "kernel_size"),
        (lambda: DilatedConvMixer(16, 2, dilation_cycle=0), "dilation_cycle"),
        (lambda: RelativeAttentionMixer(16, 2, max_relative_position=0), "max_relative_position"),
        (lambda: HierarchicalMixer(16, 2, bar_layers=0), "bar_layers=0"),
        (lambda: AttentionMixer(16, 3), "n_heads=3"),
    ],
)
def test_bad_config_values_are_named(build, key):
    with pytest.raises(ValueError, match=key.replace("(", r"\(")):
        build()


def test_learned_positions_refuse_to_run_past_max_seq_len():
    position = LearnedPosition(8, 2, max_seq_len=16)
    position.embed(torch.zeros(1, 16, 8), torch.arange(16))
    with pytest.raises(ValueError, match="max_seq_len=16"):
        position.embed(torch.zeros(1, 1, 8), torch.tensor([16]))


def test_alibi_slopes_follow_the_paper():
    assert torch.allclose(alibi_slopes(8), 2.0 ** -torch.arange(1.0, 9.0))
    assert torch.allclose(alibi_slopes(6), 2.0 ** -torch.tensor([2.0, 4.0, 6.0, 8.0, 1.0, 3.0]))
