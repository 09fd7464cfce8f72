"""The sampling loop: seeded per sample, bounded, keeps the prompt, goes past the context for every mixer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mixer_cases import MIXER_VARIANTS, mixer_config, variant_id

from lyria.generation.processors import GrammarMask, SpecialTokenMask, TopK
from lyria.generation.sampler import (
    STOP_EOS,
    STOP_MAX_BARS,
    STOP_MAX_SECONDS,
    STOP_MAX_TOKENS,
    ContextWindow,
    Limits,
    Sampler,
    sample_seed,
)
from lyria.models.lm import LyriaLM
from lyria.tokenizers import LyriaTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

ROPE = {"_target_": "lyria.models.mixers.AttentionMixer", "position": {"_target_": "lyria.models.positions.RotaryPosition"}}


@pytest.fixture(scope="module")
def tokenizer():
    return LyriaTokenizer()


def _model(tokenizer, max_seq_len=64, seed=0, mixer=ROPE):
    torch.manual_seed(seed)
    return LyriaLM(tokenizer.vocab_sizes, mixer, d_model=32, n_layers=2, n_heads=2, d_ff=64, dropout=0.0, max_seq_len=max_seq_len)


def _never_ends(model, tokenizer, bars_more_often: bool = False):
    """Makes EOS unlikely, so that pieces run to their limits (and Bar tokens likely, to reach bar limits soon)."""
    bias = torch.zeros(tokenizer.vocab_size)
    bias[tokenizer.eos_id] = -100.0
    if bars_more_often:
        bias[tokenizer.tok.vocab["Bar_None"]] = 4.0
    model.heads[0].register_forward_hook(lambda mod, inp, out: out + bias)
    return model


def _bos(tokenizer):
    return tokenizer.step_ids(tokenizer.bos_id)[None]


def test_same_seed_same_music_other_seed_other_music(tokenizer):
    sampler = Sampler(_model(tokenizer), tokenizer, [SpecialTokenMask()])
    a = sampler.generate(_bos(tokenizer), [5, 6], Limits(max_new_tokens=20))
    b = sampler.generate(_bos(tokenizer), [5, 6], Limits(max_new_tokens=20))
    c = sampler.generate(_bos(tokenizer), [7, 8], Limits(max_new_tokens=20))
    assert [r.ids.tolist() for r in a] == [r.ids.tolist() for r in b]
    assert [r.ids.tolist() for r in a] != [r.ids.tolist() for r in c]


def test_a_row_does_not_depend_on_its_batch(tokenizer):
    """Row i's music comes from its own seed: alone, or in a batch where other rows stop early or late."""
    model = _never_ends(_model(tokenizer, max_seq_len=32), tokenizer, bars_more_often=True)
    sampler = Sampler(model, tokenizer, [SpecialTokenMask(), GrammarMask()])
    seeds = [sample_seed(3, i) for i in range(5)]
    limits = Limits(max_new_tokens=120, max_bars=3)
    together = sampler.generate(_bos(tokenizer), seeds, limits)
    alone = [sampler.generate(_bos(tokenizer), [s], limits)[0] for s in seeds]
    assert len({len(r.ids) for r in together}) > 1, "rows should stop at different steps for this test to mean something"
    for a, b in zip(together, alone):
        assert a.ids.tolist() == b.ids.tolist() and a.stop_reason == b.stop_reason


def test_sample_seeds_depend_on_seed_and_index_only():
    assert sample_seed(0, 3) == sample_seed(0, 3)
    assert len({sample_seed(s, i) for s in range(4) for i in range(4)}) == 16


def test_prompt_is_kept_and_lengths_are_bounded(tokenizer):
    sampler = Sampler(_model(tokenizer), tokenizer, [SpecialTokenMask()])
    prompt = np.array([tokenizer.bos_id, 100, 101, 102])
    for result in sampler.generate(prompt, 3, Limits(max_new_tokens=10)):
        assert result.ids[:4].tolist() == prompt.tolist()
        assert result.prompt_length == 4
        assert len(result.ids) <= 14 and len(result.bar_ids) == len(result.ids)
        assert result.stop_reason in (STOP_EOS, STOP_MAX_TOKENS)
        if result.stop_reason == STOP_MAX_TOKENS:
            assert len(result.ids) == 14


def test_eos_ends_a_sequence(tokenizer):
    model = _model(tokenizer)
    bias = torch.zeros(tokenizer.vocab_size)
    bias[tokenizer.eos_id] = 100.0  # EOS outweighs every other token
    model.heads[0].register_forward_hook(lambda mod, inp, out: out + bias)
    result = Sampler(model, tokenizer, [TopK(1)]).generate(_bos(tokenizer), 1, Limits(max_new_tokens=50))[0]
    assert result.stop_reason == STOP_EOS
    assert result.ids.tolist() == [tokenizer.bos_id, tokenizer.eos_id]


def test_greedy_matches_the_argmax_of_a_full_forward_pass(tokenizer):
    model = _model(tokenizer).eval()
    sampler = Sampler(model, tokenizer, [SpecialTokenMask(), TopK(1)])
    ids = sampler.generate(_bos(tokenizer), 1, Limits(max_new_tokens=12))[0].ids
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(ids[None, :-1]))
    masked = logits[0].clone()
    masked[:, : tokenizer.num_special] = float("-inf")
    masked[:, tokenizer.eos_id] = logits[0, :, tokenizer.eos_id]
    assert masked.argmax(-1).tolist() == ids[1:].tolist()


def test_max_bars_and_max_seconds_end_pieces_at_their_limit(tokenizer):
    model = _never_ends(_model(tokenizer, max_seq_len=64), tokenizer, bars_more_often=True)
    sampler = Sampler(model, tokenizer, [SpecialTokenMask(), GrammarMask()])
    for result in sampler.generate(_bos(tokenizer), 3, Limits(max_new_tokens=600, max_bars=3)):
        assert result.stop_reason == STOP_MAX_BARS
        assert result.bar_ids.max() == 2
        np.testing.assert_array_equal(tokenizer.bar_ids(result.ids), result.bar_ids)
    # at 120 bpm four seconds are two 4/4 bars
    for result in sampler.generate(_bos(tokenizer), 3, Limits(max_new_tokens=600, max_seconds=4.0)):
        assert result.stop_reason == STOP_MAX_SECONDS
        tracker = tokenizer.new_bar_tracker()
        tracker.run(result.ids)
        assert tracker.quarters < 8.0


def test_the_context_window_keeps_conditioning_opening_and_recent_bars():
    window = ContextWindow(keep_fraction=0.75, opening_bars=2)
    bars = np.array([0, 0] + [b for b in range(20) for _ in range(5)])  # BOS, a style token, 20 bars of 5 tokens
    kept, model_bars, offset = window.kept(bars, pinned=2, context=64)
    assert len(kept) == 48
    assert kept[:2].tolist() == [0, 1]
    assert kept[-1] == len(bars) - 1
    head = np.flatnonzero(np.diff(kept) != 1)
    assert len(head) == 1, "one cut: the opening, then the most recent tokens"
    opening_end, recent_start = kept[head[0]] + 1, kept[head[0] + 1]
    assert opening_end >= 2 + 10, "the first two bars are kept"
    assert bars[recent_start] != bars[recent_start - 1], "the recent part starts at a bar"
    assert model_bars[head[0] + 1] == model_bars[head[0]] + 1, "bar ids run on after the opening"
    assert offset == bars[recent_start] - model_bars[head[0] + 1]


@pytest.mark.parametrize("variant", MIXER_VARIANTS, ids=variant_id)
def test_every_mixer_generates_four_contexts(tokenizer, variant):
    """A piece 4x the context: streaming mixers carry on through the cache and equal a full forward
    pass; the others re-read their kept tokens, and the result stays a legal, decodable piece."""
    name, overrides = variant
    context = 48
    mixer = mixer_config(name, overrides, window=16)
    model = _never_ends(_model(tokenizer, max_seq_len=context, mixer=mixer), tokenizer)
    sampler = Sampler(model, tokenizer, [SpecialTokenMask(), GrammarMask(), TopK(1)])
    result = sampler.generate(_bos(tokenizer), [1, 2], Limits(max_new_tokens=4 * context))[0]
    assert len(result.ids) == 4 * context + 1 and result.stop_reason == STOP_MAX_TOKENS
    np.testing.assert_array_equal(tokenizer.bar_ids(result.ids), result.bar_ids)
    assert tokenizer.decode(result.ids).note_num() > 0
    if model.streams:
        assert result.rereads == 0
        with torch.no_grad():
            logits, _ = model(torch.from_numpy(result.ids[None, :-1]), bar_ids=torch.from_numpy(result.bar_ids[None, :-1]))
        masked = logits[0].clone()
        masked[:, : tokenizer.num_special] = float("-inf")
        masked[:, tokenizer.eos_id] = logits[0, :, tokenizer.eos_id]
        grammar_ok = [tokenizer.grammar.allowed(0, *_state(tokenizer, result.ids[: t + 1]), []) for t in range(len(result.ids) - 1)]
        masked[torch.from_numpy(~np.stack(grammar_ok))] = float("-inf")
        assert masked.argmax(-1).tolist() == result.ids[1:].tolist(), "streamed decoding equals one full forward pass"
    else:
        assert result.rereads >= 3


def _state(tokenizer, ids):
    tracker = tokenizer.new_bar_tracker()
    tracker.run(ids)
    return tracker, ids[-1]


def test_a_prompt_longer_than_the_context_keeps_its_end(tokenizer):
    sampler = Sampler(_never_ends(_model(tokenizer, max_seq_len=32), tokenizer), tokenizer, [SpecialTokenMask(), GrammarMask()])
    piece = tokenizer.encode(_long_score())
    prompt = np.concatenate([_bos(tokenizer), piece.ids])
    assert len(prompt) > 32
    result = sampler.generate(prompt, 1, Limits(max_new_tokens=10))[0]
    assert result.ids[: len(prompt)].tolist() == prompt.tolist() and result.rereads >= 1
    np.testing.assert_array_equal(tokenizer.bar_ids(result.ids), result.bar_ids)


def _long_score():
    from tests_support import make_score

    return make_score([60 + (i * 5) % 12 for i in range(40)])


@pytest.mark.parametrize("variant", MIXER_VARIANTS, ids=variant_id)
def test_rows_leave_the_batch_without_changing_the_others(tokenizer, variant):
    """Rows that stop early are dropped from every mixer's cache; the rest goes on as if alone."""
    name, overrides = variant
    context = 32
    model = _never_ends(_model(tokenizer, max_seq_len=context, mixer=mixer_config(name, overrides, window=8)), tokenizer, True)
    sampler = Sampler(model, tokenizer, [SpecialTokenMask(), GrammarMask()])
    limits = Limits(max_new_tokens=3 * context, max_bars=4)
    seeds = [sample_seed(9, i) for i in range(4)]
    together = sampler.generate(_bos(tokenizer), seeds, limits)
    assert len({len(r.ids) for r in together}) > 1
    for seed, result in zip(seeds, together):
        alone = sampler.generate(_bos(tokenizer), [seed], limits)[0]
        assert alone.ids.tolist() == result.ids.tolist() and alone.stop_reason == result.stop_reason
