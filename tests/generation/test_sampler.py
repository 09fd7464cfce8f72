"""The sampling loop: seeded, bounded, keeps the prompt, stops at EOS or at the context limit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lyria.generation.processors import SpecialTokenMask, TopK
from lyria.generation.sampler import STOP_CONTEXT, STOP_EOS, STOP_MAX_TOKENS, Sampler
from lyria.models.lm import LyriaLM
from lyria.tokenizers import LyriaTokenizer

ROPE = {"_target_": "lyria.models.mixers.AttentionMixer", "position": {"_target_": "lyria.models.positions.RotaryPosition"}}


@pytest.fixture(scope="module")
def tokenizer():
    return LyriaTokenizer()


def _model(tokenizer, max_seq_len=64, seed=0):
    torch.manual_seed(seed)
    return LyriaLM(tokenizer.vocab_sizes, ROPE, d_model=32, n_layers=2, n_heads=2, d_ff=64, dropout=0.0, max_seq_len=max_seq_len)


def test_same_seed_same_music_other_seed_other_music(tokenizer):
    sampler = Sampler(_model(tokenizer), tokenizer, [SpecialTokenMask()])
    bos = tokenizer.step_ids(tokenizer.bos_id)[None]
    a = sampler.generate(bos, n=2, max_new_tokens=20, seed=5)
    b = sampler.generate(bos, n=2, max_new_tokens=20, seed=5)
    c = sampler.generate(bos, n=2, max_new_tokens=20, seed=6)
    assert [r.ids.tolist() for r in a] == [r.ids.tolist() for r in b]
    assert [r.ids.tolist() for r in a] != [r.ids.tolist() for r in c]


def test_prompt_is_kept_and_lengths_are_bounded(tokenizer):
    sampler = Sampler(_model(tokenizer), tokenizer, [SpecialTokenMask()])
    prompt = np.array([tokenizer.bos_id, 100, 101, 102])
    for result in sampler.generate(prompt, n=3, max_new_tokens=10, seed=0):
        assert result.ids[:4].tolist() == prompt.tolist()
        assert result.prompt_length == 4
        assert len(result.ids) <= 14 and len(result.bar_ids) == len(result.ids)
        assert result.stop_reason in (STOP_EOS, STOP_MAX_TOKENS)
        if result.stop_reason == STOP_MAX_TOKENS:
            assert len(result.ids) == 14


def test_generation_stops_at_the_context_limit(tokenizer):
    sampler = Sampler(_model(tokenizer, max_seq_len=16), tokenizer, [SpecialTokenMask()])
    results = sampler.generate(tokenizer.step_ids(tokenizer.bos_id)[None], n=2, max_new_tokens=100, seed=0)
    assert all(r.stop_reason in (STOP_CONTEXT, STOP_EOS) for r in results)
    assert all(len(r.ids) <= 17 for r in results)


def test_eos_ends_a_sequence(tokenizer):
    model = _model(tokenizer)
    bias = torch.zeros(tokenizer.vocab_size)
    bias[tokenizer.eos_id] = 100.0  # EOS outweighs every other token
    model.heads[0].register_forward_hook(lambda mod, inp, out: out + bias)
    result = Sampler(model, tokenizer, [TopK(1)]).generate(tokenizer.step_ids(tokenizer.bos_id)[None], n=1, max_new_tokens=50)[0]
    assert result.stop_reason == STOP_EOS
    assert result.ids.tolist() == [tokenizer.bos_id, tokenizer.eos_id]


def test_greedy_matches_the_argmax_of_a_full_forward_pass(tokenizer):
    model = _model(tokenizer).eval()
    sampler = Sampler(model, tokenizer, [SpecialTokenMask(), TopK(1)])
    ids = sampler.generate(tokenizer.step_ids(tokenizer.bos_id)[None], n=1, max_new_tokens=12)[0].ids
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(ids[None, :-1]))
    masked = logits[0].clone()
    masked[:, : tokenizer.num_special] = float("-inf")
    masked[:, tokenizer.eos_id] = logits[0, :, tokenizer.eos_id]
    assert masked.argmax(-1).tolist() == ids[1:].tolist()
