"""The fill-in-the-middle layout: segments back in time order, bar ids that follow the segments, loss mask,
and training crops in the layout drawn as a function of (seed, epoch, position)."""

from __future__ import annotations

import numpy as np
import pytest
from tests_support import make_score
from tokenizer_support import TOKENIZER_NAMES, build_tokenizer

from lyria.data.datamodule import InfillingTask, SequenceLayout, TrainCrops, collate
from lyria.tokenizers.infilling import infilling_layout, time_order

MARKS_BARS = ["cpword", "octuple", "remi"]


def _piece(tokenizer, numerator=3):
    seq = tokenizer.encode(make_score([60 + (i * 7) % 12 for i in range(36)], numerator=numerator))
    ids = np.concatenate([tokenizer.step_ids(tokenizer.bos_id)[None], seq.ids])
    return ids, tokenizer.bar_ids(ids)


def test_tokenizers_that_mark_bars_support_infilling():
    assert sorted(n for n in TOKENIZER_NAMES if build_tokenizer(n).supports_infilling) == MARKS_BARS


@pytest.mark.parametrize("name", MARKS_BARS)
@pytest.mark.parametrize("span", [(0, 2), (3, 6), (9, 12)], ids=["opening", "middle", "ending"])
def test_layout_round_trip_and_bar_ids_follow_the_segments(name, span):
    tokenizer = build_tokenizer(name)
    ids, bars = _piece(tokenizer)
    assert bars.max() == 11  # 36 beats of 3/4
    fill, sep = tokenizer.step_ids(tokenizer.fill_id), tokenizer.step_ids(tokenizer.sep_id)
    layout = infilling_layout(ids, bars, span, fill, sep, head=1)
    np.testing.assert_array_equal(time_order(layout.ids, tokenizer.fill_id, tokenizer.sep_id), ids)
    first = layout.ids[:, 0] if layout.ids.ndim == 2 else layout.ids
    assert (first == tokenizer.fill_id).sum() == span[1] - span[0]
    assert first[layout.prompt_length - 1] == tokenizer.sep_id and first[-1] == tokenizer.sep_id
    # no loss on what the task gives (FILLs, the first SEP); the closing SEP is learned
    given = np.flatnonzero(~layout.loss_mask)
    assert first[given].tolist() == [tokenizer.fill_id] * (span[1] - span[0]) + [tokenizer.sep_id]
    # the tracker puts the suffix and the span in their own bars, as in the time-ordered piece
    tracked = tokenizer.bar_ids(layout.ids)
    inside = (bars >= span[0]) & (bars < span[1])
    inside[0] = False
    np.testing.assert_array_equal(tracked[layout.prompt_length : -1], bars[inside])
    after = bars >= span[1]
    suffix = slice(int((~inside & ~after).sum()) + span[1] - span[0], layout.prompt_length - 1)
    np.testing.assert_array_equal(tracked[suffix], bars[after])


def _task(tokenizer, rate=1.0):
    return InfillingTask(
        rate=rate,
        max_bars=4,
        fill=tokenizer.step_ids(tokenizer.fill_id),
        sep=tokenizer.step_ids(tokenizer.sep_id),
        num_special=tokenizer.num_special,
        bar_ids=tokenizer.bar_ids,
    )


def _crops(tokenizer, task, max_len):
    seq = tokenizer.encode(make_score([60 + (i * 5) % 12 for i in range(64)]))
    split = {"ids": [seq.ids.tolist()], "bar_ids": [seq.bar_ids.tolist()], "style_id": [0], "n_tokens": [len(seq.ids)]}
    layout = SequenceLayout(bos=tokenizer.step_ids(tokenizer.bos_id), eos=tokenizer.step_ids(tokenizer.eos_id), pad_id=0)
    return TrainCrops(split, layout, max_len=max_len, seed=5, infilling=task)


@pytest.mark.parametrize("name", ["remi", "cpword"])
def test_infilling_crops_are_reproducible_bounded_and_masked(name):
    tokenizer = build_tokenizer(name)
    crops = _crops(tokenizer, _task(tokenizer), max_len=96)
    for position in range(12):
        example = crops[(0, 1, position)]
        again = crops[(0, 1, position)]
        np.testing.assert_array_equal(example["tokens"], again["tokens"])
        tokens = example["tokens"]
        first = tokens[:, 0] if tokens.ndim == 2 else tokens
        assert len(tokens) <= 96 and (first == tokenizer.fill_id).any()
        np.testing.assert_array_equal(example["bar_ids"], tokenizer.bar_ids(tokens))
        assert set(first[~example["loss_mask"]].tolist()) <= {tokenizer.fill_id, tokenizer.sep_id}
    batch = collate([crops[(0, 0, p)] for p in range(4)], pad_id=0)
    targets = batch["targets"] if batch["targets"].dim() == 2 else batch["targets"][..., 0]
    assert not batch["loss_mask"][targets == tokenizer.fill_id].any()


def test_without_infilling_crops_keep_their_order():
    tokenizer = build_tokenizer("remi")
    plain = _crops(tokenizer, None, max_len=96)
    off = _crops(tokenizer, _task(tokenizer, rate=0.0), max_len=96)
    for position in range(6):
        np.testing.assert_array_equal(plain[(0, 0, position)]["tokens"], off[(0, 0, position)]["tokens"])
        assert "loss_mask" not in off[(0, 0, position)]
