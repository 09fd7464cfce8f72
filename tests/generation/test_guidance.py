"""Styles and classifier-free guidance in the sampling loop: cfg_scale=1 is plain conditional sampling and
cfg_scale=0 plain unconditional sampling, token for token, through re-reads of a full context, sliding
windows and continuations; styles are checked against what the checkpoint knows."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lyria.generation.pieces import continue_piece, new_pieces, style_conditioning
from lyria.generation.processors import GrammarMask, SpecialTokenMask, TopP
from lyria.generation.sampler import Limits, Sampler
from lyria.models.lm import LyriaLM
from lyria.tokenizers import LyriaTokenizer
from tests_support import make_score

pytestmark = pytest.mark.usefixtures("one_thread")

CONF = "conf/model"
MIXERS = {
    "rope": {"_target_": "lyria.models.mixers.AttentionMixer", "position": {"_target_": "lyria.models.positions.RotaryPosition"}},
    "sliding": {
        "_target_": "lyria.models.mixers.AttentionMixer",
        "window": 16,
        "position": {"_target_": "lyria.models.positions.RotaryPosition"},
    },
}
SCHEMES = ["style_token", "style_embedding", "adaln", "cross_attention"]


@pytest.fixture(scope="module")
def tokenizer():
    return LyriaTokenizer(num_style_slots=4, styles=["jigs", "airs"])


def _conditioning(name: str) -> dict:
    from pathlib import Path

    return OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[2] / CONF / "conditioning" / f"{name}.yaml"))


def _sampler(tokenizer, scheme: str, mixer: str = "rope", style_output: bool = False, max_seq_len: int = 32) -> Sampler:
    torch.manual_seed(0)
    model = LyriaLM(
        tokenizer.vocab_sizes, MIXERS[mixer], _conditioning(scheme), d_model=32, n_layers=2, n_heads=2, d_ff=64, dropout=0.0,
        max_seq_len=max_seq_len, num_styles=tokenizer.num_style_slots, pad_id=tokenizer.pad_id, style_output=style_output,
    )
    # an untrained model barely reads its condition: make every style-dependent weight count
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("conditioner.", "style_output.")):
                parameter.normal_(std=0.5)
        model.embeddings[0].weight[tokenizer.style_token_id(0) : tokenizer.style_token_id(0) + 4].normal_(std=2.0)
        model.embeddings[0].weight[tokenizer.eos_id] = 0.0
    bias = torch.zeros(tokenizer.vocab_size)
    bias[tokenizer.eos_id] = -100.0  # pieces run to their limits, through several re-reads
    model.heads[0].register_forward_hook(lambda mod, inp, out: out + bias)
    return Sampler(model, tokenizer, [SpecialTokenMask(), GrammarMask(), TopP(0.98)])


def _ids(pieces) -> list[list[int]]:
    return [piece.result.ids.tolist() for piece in pieces]


@pytest.mark.parametrize("mixer", list(MIXERS))
@pytest.mark.parametrize("scheme", SCHEMES)
def test_cfg_one_is_conditional_and_zero_unconditional_sampling(tokenizer, scheme, mixer):
    sampler = _sampler(tokenizer, scheme, mixer, style_output=scheme == "adaln")
    limits = Limits(max_new_tokens=70)  # beyond the 32-token context: re-reads, or the sliding window
    common = dict(n=3, seed=4, limits=limits, batch_size=2)
    conditional = _ids(new_pieces(sampler, style="jigs", **common))
    unconditional = _ids(new_pieces(sampler, style=None, **common))
    assert _ids(new_pieces(sampler, style="jigs", cfg_scale=1.0, **common)) == conditional
    assert _ids(new_pieces(sampler, style="jigs", cfg_scale=0.0, **common)) == [
        # the style token (style_token scheme) is the only prompt token that differs
        ids[:1] + conditional[i][1:2] + ids[2:] if scheme == "style_token" else ids for i, ids in enumerate(unconditional)
    ]
    guided = _ids(new_pieces(sampler, style="jigs", cfg_scale=3.0, **common))
    other = _ids(new_pieces(sampler, style="airs", **common))
    assert guided != conditional and other != conditional
    if mixer == "rope":
        assert max(piece.result.rereads for piece in new_pieces(sampler, style="jigs", cfg_scale=2.0, **common)) >= 2


def test_a_continuation_is_guided_too(tokenizer):
    sampler = _sampler(tokenizer, "style_token")
    prompt = make_score([60 + (i * 5) % 12 for i in range(12)])
    common = dict(n=2, seed=1, limits=Limits(max_new_tokens=50))
    plain = continue_piece(sampler, prompt, style="airs", **common)
    assert _ids(continue_piece(sampler, prompt, style="airs", cfg_scale=1.0, **common)) == _ids(plain)
    assert all(piece.result.ids[1] == tokenizer.style_token_id("airs") for piece in plain)
    assert _ids(continue_piece(sampler, prompt, style="airs", cfg_scale=2.5, **common)) != _ids(plain)


def test_the_style_token_heads_every_prompt_and_other_schemes_read_the_slot(tokenizer):
    token = style_conditioning(_sampler(tokenizer, "style_token"), "airs", None, 2)
    assert token.head.tolist() == [tokenizer.bos_id, tokenizer.style_token_id("airs")]
    embedding = style_conditioning(_sampler(tokenizer, "adaln"), "airs", 2.0, 2)
    assert embedding.head.tolist() == [tokenizer.bos_id] and embedding.cond["style"].tolist() == [1, 1]
    assert embedding.guidance.cond["style"].tolist() == [tokenizer.null_style_slot]


def test_an_unknown_style_names_the_known_ones(tokenizer):
    sampler = _sampler(tokenizer, "adaln")
    with pytest.raises(ValueError, match=r"style='reels' is not a style this checkpoint knows; it knows \['jigs', 'airs'\]"):
        new_pieces(sampler, n=1, style="reels")
    with pytest.raises(ValueError, match="give style=NAME"):
        new_pieces(sampler, n=1, cfg_scale=2.0)


def test_an_unconditional_model_refuses_a_style(tokenizer):
    torch.manual_seed(0)
    model = LyriaLM(tokenizer.vocab_sizes, MIXERS["rope"], d_model=16, n_layers=1, n_heads=2, d_ff=32, max_seq_len=16, num_styles=4)
    with pytest.raises(ValueError, match="unconditional"):
        new_pieces(Sampler(model, tokenizer, []), n=1, style="jigs")
