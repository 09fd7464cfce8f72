"""Logits processors: each keeps exactly the tokens its rule allows, and is a no-op when its setting is null."""

from __future__ import annotations

import pytest
import torch

from lyria.generation.processors import MinP, RepetitionPenalty, SpecialTokenMask, StepContext, Temperature, TopK, TopP
from lyria.tokenizers import LyriaTokenizer


def _ctx(history=None, tokenizer=None):
    return StepContext(history=history if history is not None else torch.zeros(2, 0, dtype=torch.long), field=0, tokenizer=tokenizer, step=0)


LOGITS = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1], [0.05, 0.05, 0.1, 0.8]]))


def test_top_k_keeps_the_k_largest():
    out = TopK(2)(LOGITS, _ctx())
    assert torch.isfinite(out).sum(-1).tolist() == [2, 2]
    assert torch.isfinite(out[0, :2]).all() and torch.isfinite(out[1, 2:]).all()


@pytest.mark.parametrize("k", [1, 2, 3, 5, 64])
def test_top_k_equals_a_mask_from_torch_topk(k):
    """Every k (k = 1 takes its own path) keeps what torch.topk's k-th value allows, ties included."""
    gen = torch.Generator().manual_seed(k)
    logits = torch.randint(-4, 4, (6, 64), generator=gen).float()  # many ties
    logits[0, :] = 1.0  # a row of one value
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]
    want = logits.masked_fill(logits < kth, float("-inf"))
    torch.testing.assert_close(TopK(k)(logits.clone(), _ctx()), want, atol=0, rtol=0)


def test_top_p_keeps_the_smallest_set_reaching_p():
    out = TopP(0.7)(LOGITS, _ctx())
    assert torch.isfinite(out[0]).tolist() == [True, True, False, False]  # 0.5 + 0.25 >= 0.7
    assert torch.isfinite(out[1]).tolist() == [False, False, False, True]  # 0.8 alone


def test_min_p_scales_with_the_top_token():
    out = MinP(0.25)(LOGITS, _ctx())
    assert torch.isfinite(out[0]).tolist() == [True, True, True, False]  # >= 0.125
    assert torch.isfinite(out[1]).tolist() == [False, False, False, True]  # >= 0.2


def test_temperature_sharpens_and_repetition_penalty_lowers_seen_tokens():
    sharp = Temperature(0.5)(LOGITS, _ctx()).softmax(-1)
    assert sharp[0, 0] > LOGITS.softmax(-1)[0, 0]
    raw = torch.tensor([[2.0, -1.0, 0.5, 0.0]] * 2)
    history = torch.tensor([[0, 1], [2, 2]])
    out = RepetitionPenalty(2.0)(raw, _ctx(history))
    assert out[0].tolist() == [1.0, -2.0, 0.5, 0.0]
    assert out[1].tolist() == [2.0, -1.0, 0.25, 0.0]


@pytest.mark.parametrize("processor", [TopK(None), TopP(None), MinP(None), Temperature(None), RepetitionPenalty(None)])
def test_null_settings_change_nothing(processor):
    assert torch.equal(processor(LOGITS, _ctx(torch.tensor([[0], [1]]))), LOGITS)


@pytest.mark.parametrize(("cls", "value"), [(TopK, 0), (TopP, 1.5), (MinP, -0.1), (Temperature, 0.0), (RepetitionPenalty, -1.0)])
def test_invalid_settings_are_rejected(cls, value):
    with pytest.raises(ValueError):
        cls(value)


def test_special_token_mask_allows_eos_only():
    tokenizer = LyriaTokenizer()
    logits = torch.zeros(1, tokenizer.vocab_size)
    allowed = torch.isfinite(SpecialTokenMask()(logits, _ctx(tokenizer=tokenizer)))[0]
    assert allowed[tokenizer.eos_id]
    assert not allowed[[tokenizer.pad_id, tokenizer.bos_id, tokenizer.mask_id, tokenizer.fill_id, tokenizer.sep_id]].any()
    assert not allowed[tokenizer.style_token_id(0)]
    assert allowed[tokenizer.num_special :].all()


def test_special_token_mask_allows_sep_instead_of_eos_when_a_span_is_infilled():
    tokenizer = LyriaTokenizer()
    ctx = _ctx(tokenizer=tokenizer)
    ctx.end_id = tokenizer.sep_id
    allowed = torch.isfinite(SpecialTokenMask()(torch.zeros(1, tokenizer.vocab_size), ctx))[0]
    assert allowed[tokenizer.sep_id] and not allowed[tokenizer.eos_id] and not allowed[tokenizer.fill_id]
    assert allowed[tokenizer.num_special :].all()
