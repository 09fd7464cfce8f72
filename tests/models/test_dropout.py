"""lyria's dropout: the rate, the scaling and the gradient of torch's, masks that follow torch's RNG state,
and every dropout of every model variant (mixers x conditioning schemes) is lyria's or never drops."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lyria.models.dropout import Dropout, dropout, drop_mask
from lyria.models.lm import LyriaLM
from tests.models.mixer_cases import MIXER_DIR, MIXER_VARIANTS, mixer_config, variant_id

CONDITIONING_DIR = MIXER_DIR.parent / "conditioning"
CONDITIONING_NAMES = sorted(p.stem for p in CONDITIONING_DIR.glob("*.yaml"))


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.9])
def test_drop_rate_and_scale_match_the_probability(p):
    torch.manual_seed(0)
    x = torch.rand(400_000) + 1.0
    y = dropout(x, p, training=True)
    dropped = y == 0
    # 400k Bernoulli draws: the rate is within 5 standard errors of p
    assert abs(dropped.float().mean().item() - p) < 5 * (p * (1 - p) / x.numel()) ** 0.5
    assert torch.allclose(y[~dropped], x[~dropped] / (1 - p))


def test_masks_follow_torch_rng_state():
    torch.manual_seed(3)
    first = drop_mask((64, 33), 0.3)
    state = torch.get_rng_state()
    second = drop_mask((64, 33), 0.3)
    torch.set_rng_state(state)
    assert torch.equal(drop_mask((64, 33), 0.3), second)
    torch.manual_seed(3)
    assert torch.equal(drop_mask((64, 33), 0.3), first)
    assert not torch.equal(first, second)


def test_gradient_is_masked_and_scaled():
    torch.manual_seed(1)
    x = torch.randn(8, 17, requires_grad=True)
    y = dropout(x, 0.25, training=True)
    weights = torch.randn_like(y)
    (y * weights).sum().backward()
    kept = (y != 0).float()
    assert torch.allclose(x.grad, weights * kept / 0.75)


def test_identity_off_training_and_edge_probabilities():
    x = torch.randn(5, 7)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    assert torch.count_nonzero(dropout(x, 1.0, training=True)) == 0
    with pytest.raises(ValueError, match="dropout probability"):
        dropout(x, 1.5, training=True)
    module = Dropout(0.5).eval()
    assert module(x) is x


@pytest.mark.parametrize("conditioning", CONDITIONING_NAMES)
@pytest.mark.parametrize("variant", MIXER_VARIANTS, ids=variant_id)
def test_every_dropout_of_every_variant_draws_cheap_masks(variant, conditioning):
    cond = OmegaConf.to_container(OmegaConf.load(CONDITIONING_DIR / f"{conditioning}.yaml"), resolve=True)
    model = LyriaLM([40], mixer_config(*variant), cond, d_model=32, n_layers=2, n_heads=4, d_ff=64, dropout=0.1, num_styles=4)
    slow = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and not isinstance(m, Dropout) and m.p > 0]
    assert not slow, f"torch dropout with p > 0 (one Bernoulli draw per element on CPU): {slow}"
    assert any(isinstance(m, Dropout) and m.p == 0.1 for m in model.modules())


def test_attention_dropout_defaults_to_dropout_and_can_differ():
    mixer = mixer_config("attention_rope")
    same = LyriaLM([40], mixer, d_model=32, n_layers=2, n_heads=4, d_ff=64, dropout=0.2)
    apart = LyriaLM([40], mixer, d_model=32, n_layers=2, n_heads=4, d_ff=64, dropout=0.2, attention_dropout=0.0)
    assert [b.mixer.dropout for b in same.blocks] == [0.2, 0.2]
    assert [b.mixer.dropout for b in apart.blocks] == [0.0, 0.0]
    assert all(b.dropout.p == 0.2 for b in apart.blocks)
