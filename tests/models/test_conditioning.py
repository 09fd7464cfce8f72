"""Every conditioning scheme (conf/model/conditioning/) with every mixer (conf/model/mixer/): it trains, decodes
through the cache exactly as the full forward pass computes, tells styles apart; zero-initialised schemes
start as the unconditional model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mixer_cases import MIXER_NAMES, bar_layout, mixer_config
from omegaconf import OmegaConf

from lyria.models.conditioning import Conditioner
from lyria.models.lm import LyriaLM

CONDITIONING_DIR = Path(__file__).resolve().parents[2] / "conf" / "model" / "conditioning"
CONDITIONING_NAMES = sorted(p.stem for p in CONDITIONING_DIR.glob("*.yaml"))
NUM_STYLES = 4  # slot 3 is "no style"
VOCAB = 40


def conditioning_config(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONDITIONING_DIR / f"{name}.yaml"), resolve=True)


def conditioned_lm(mixer: str, conditioning: str, style_output: bool = False, seed: int = 0) -> LyriaLM:
    torch.manual_seed(seed)
    return LyriaLM(
        [VOCAB], mixer_config(mixer), conditioning_config(conditioning), d_model=32, n_layers=2, n_heads=4, d_ff=64,
        dropout=0.0, max_seq_len=64, num_styles=NUM_STYLES, style_output=style_output, style_output_rank=4,
    )


def test_every_scheme_has_a_yaml():
    assert {"none", "style_token", "style_embedding", "adaln", "cross_attention"} <= set(CONDITIONING_NAMES)
    for name in CONDITIONING_NAMES:
        model = conditioned_lm("attention_rope", name)
        assert isinstance(model.conditioner, Conditioner)
        assert model.conditional == (name != "none")


@pytest.mark.parametrize("mixer", MIXER_NAMES)
@pytest.mark.parametrize("conditioning", CONDITIONING_NAMES)
def test_scheme_trains_and_decodes_through_the_cache(one_thread, conditioning, mixer):
    model = conditioned_lm(mixer, conditioning, style_output=conditioning == "adaln")
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(6, VOCAB, (2, 24), generator=gen)
    bars = bar_layout(2, 24)
    cond = {"style": torch.tensor([0, 2])}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(4):
        logits, _ = model(tokens[:, :-1], bar_ids=bars[:, :-1], cond=cond)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        full, _ = model(tokens, bar_ids=bars, cond=cond)
        cache = model.new_cache()
        steps, _ = model(tokens[:, :5], bar_ids=bars[:, :5], cond=cond, cache=cache)
        parts = [steps]
        for t in range(5, tokens.shape[1]):
            step, cache = model(tokens[:, t : t + 1], bar_ids=bars[:, t : t + 1], cond=cond, cache=cache)
            parts.append(step)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("conditioning", [n for n in CONDITIONING_NAMES if n not in ("none", "style_token")])
@pytest.mark.parametrize("style_output", [False, True])
def test_different_styles_give_different_logits_once_trained(one_thread, conditioning, style_output):
    model = conditioned_lm("attention_rope", conditioning, style_output=style_output)
    tokens = torch.randint(6, VOCAB, (4, 16), generator=torch.Generator().manual_seed(2))
    # two styles whose next tokens differ: the condition must be read to fit both
    styles = torch.tensor([0, 1, 0, 1])
    targets = torch.where(styles[:, None] == 0, tokens, (tokens + 7) % VOCAB)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        logits, _ = model(tokens, cond={"style": styles})
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        a, _ = model(tokens[:1], cond={"style": torch.tensor([0])})
        b, _ = model(tokens[:1], cond={"style": torch.tensor([1])})
        none, _ = model(tokens[:1], cond=None)
        null, _ = model(tokens[:1], cond={"style": torch.tensor([model.null_style])})
    assert (a - b).abs().max() > 1e-4
    torch.testing.assert_close(none, null, atol=0, rtol=0)  # no condition means the reserved "no style" slot


@pytest.mark.parametrize("conditioning", ["adaln", "cross_attention"])
def test_zero_initialised_scheme_equals_the_unconditional_model_at_step_zero(one_thread, conditioning):
    plain = conditioned_lm("attention_rope", "none").eval()
    model = conditioned_lm("attention_rope", conditioning, style_output=True).eval()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("conditioner.", "style_output.")) for k in missing)
    tokens = torch.randint(6, VOCAB, (3, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, _ = plain(tokens)
        for style in range(NUM_STYLES):
            got, _ = model(tokens, cond={"style": torch.full((3,), style)})
            torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_cross_attention_memory_is_computed_once_per_generation(one_thread):
    model = conditioned_lm("attention_rope", "cross_attention").eval()
    calls = []
    original = model.conditioner.encode
    model.conditioner.encode = lambda *a, **k: calls.append(1) or original(*a, **k)
    cache = model.new_cache()
    cond = {"style": torch.tensor([1])}
    with torch.no_grad():
        _, cache = model(torch.tensor([[1, 7, 8]]), cond=cond, cache=cache)
        for t in range(4):
            _, cache = model(torch.tensor([[9 + t]]), cond=cond, cache=cache)
        restarted = cache.restart()
        assert restarted.memory is cache.memory
        _, _ = model(torch.tensor([[1, 7]]), cond=cond, cache=restarted)
    assert len(calls) == 1


def test_a_style_slot_out_of_range_is_named(one_thread):
    model = conditioned_lm("attention_rope", "style_embedding")
    with pytest.raises(ValueError, match="slots 0..3"):
        model(torch.tensor([[1, 7]]), cond={"style": torch.tensor([NUM_STYLES])})
