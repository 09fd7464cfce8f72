"""Training order and batches: resumable, shardable, style-balanced; crops, transposition and padding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lyria.data.datamodule import IGNORE_INDEX, EpochSampler, EvalWindows, SequenceLayout, TrainCrops, collate


def _draw(sampler, epochs=1):
    return [list(sampler) for _ in range(epochs)]


def test_resumed_sampler_continues_exactly_where_it_stopped():
    styles = np.repeat([0, 1, 2], [10, 5, 2])
    reference = EpochSampler(styles, seed=7)
    full = _draw(reference, epochs=3)
    resumed = EpochSampler(styles, seed=7)
    resumed.resume(epoch=1, examples_done=6)
    assert _draw(resumed, epochs=2) == [full[1][6:], full[2]]


def test_resume_at_the_end_of_an_epoch_starts_the_next():
    styles = np.zeros(8, dtype=int)
    full = _draw(EpochSampler(styles, seed=1), epochs=2)
    resumed = EpochSampler(styles, seed=1)
    resumed.resume(epoch=0, examples_done=8)
    assert list(resumed) == full[1]


def test_ranks_get_disjoint_shards_of_equal_length():
    styles = np.zeros(11, dtype=int)
    shards = [list(EpochSampler(styles, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    positions = [p for shard in shards for _, _, p in shard]
    assert sorted(positions) == list(range(12))
    assert {i for shard in shards for i, _, _ in shard} == set(range(11))


def test_balance_styles_draws_each_style_about_equally():
    styles = np.repeat([0, 1, 2], [900, 90, 10])
    sampler = EpochSampler(styles, seed=0, balance_styles=True)
    counts = Counter(int(styles[i]) for epoch in _draw(sampler, epochs=3) for i, _, _ in epoch)
    assert all(abs(counts[s] / 3000 - 1 / 3) < 0.05 for s in range(3))
    plain = Counter(int(styles[i]) for i, _, _ in EpochSampler(styles, seed=0))
    assert plain == {0: 900, 1: 90, 2: 10}


LAYOUT = SequenceLayout(bos=np.asarray(1), eos=np.asarray(2), pad_id=0)


def _split(n_pieces=3, length=50, bar_every=5):
    ids = [list(range(40, 40 + length)) for _ in range(n_pieces)]
    bars = [[i // bar_every for i in range(length)] for _ in range(n_pieces)]
    return {"ids": ids, "bar_ids": bars, "style_id": [0] * n_pieces, "n_tokens": [length] * n_pieces}


def test_crops_start_at_a_bar_and_transposition_uses_the_table():
    table = np.arange(100)
    table[40:90] += 2
    crops = TrainCrops(_split(), LAYOUT, max_len=12, seed=0, transpose_range=(2, 2), transposition_tables={2: table})
    for position in range(20):
        item = crops[(position % 3, 0, position)]
        assert len(item["tokens"]) == 12
        assert item["bar_ids"][0] == 0 and np.all(np.diff(item["bar_ids"]) >= 0)
        first = int(item["tokens"][0])
        assert first == 1 or (first - 42) % 5 == 0  # BOS, or the first token of a bar, transposed by 2
    assert crops[(0, 3, 9)]["tokens"].tolist() == crops[(0, 3, 9)]["tokens"].tolist()


def test_transposition_out_of_range_keeps_the_original():
    table = np.full(100, -1)
    crops = TrainCrops(_split(), LAYOUT, max_len=100, seed=0, transpose_range=(1, 1), transposition_tables={1: table})
    assert crops[(0, 0, 0)]["tokens"][1:-1].tolist() == list(range(40, 90))


def test_eval_windows_score_every_token_once():
    split = _split(n_pieces=2, length=30)
    windows = EvalWindows(_ListSplit(split), LAYOUT, max_len=8)
    targets = []
    for i in range(len(windows)):
        targets.append(collate([windows[i]], pad_id=0)["targets"])
    counted = sum(int((t != IGNORE_INDEX).sum()) for t in targets)
    assert counted == 2 * (30 + 1)  # every token and EOS, once per piece (BOS is never a target)


def test_collate_pads_and_ignores_padding_in_targets():
    batch = collate(
        [{"tokens": np.array([1, 5, 6, 2]), "bar_ids": np.array([0, 0, 1, 1]), "style_id": 0},
         {"tokens": np.array([1, 7]), "bar_ids": np.array([0, 0]), "style_id": 1}],
        pad_id=0,
    )
    assert batch["tokens"].tolist() == [[1, 5, 6], [1, 7, 0]]
    assert batch["targets"].tolist() == [[5, 6, 2], [7, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["style"].tolist() == [0, 1]


def test_collate_handles_compound_steps():
    batch = collate(
        [{"tokens": np.array([[1, 1], [5, 9], [2, 2]]), "bar_ids": np.array([0, 0, 0]), "style_id": 0},
         {"tokens": np.array([[1, 1], [2, 2]]), "bar_ids": np.array([0, 0]), "style_id": 0}],
        pad_id=0,
    )
    assert batch["tokens"].shape == (2, 2, 2)
    assert batch["targets"][1].tolist() == [[2, 2], [IGNORE_INDEX, IGNORE_INDEX]]


class _ListSplit(dict):
    """Just enough of a datasets.Dataset: column access and row access."""

    def __getitem__(self, key):
        if isinstance(key, int):
            return {k: v[key] for k, v in self.items()}
        return super().__getitem__(key)


@pytest.mark.parametrize("style_prefix", [False, True])
def test_layout_frames_a_piece(style_prefix):
    layout = SequenceLayout(bos=np.asarray(1), eos=np.asarray(2), pad_id=0, style_token_ids=[10, 11] if style_prefix else None)
    ids, bars = layout.frame(np.array([40, 41]), np.array([3, 4]), style_id=1)
    assert ids.tolist() == ([1, 11, 40, 41, 2] if style_prefix else [1, 40, 41, 2])
    assert len(bars) == len(ids) and bars[0] == 3 and bars[-1] == 4


PREFIXED = SequenceLayout(bos=np.asarray(1), eos=np.asarray(2), pad_id=0, style_token_ids=[10, 11, 12, 13])


def test_every_training_crop_starts_with_bos_and_the_style_token():
    split = _split(n_pieces=3, length=60)
    split["style_id"] = [0, 1, 2]
    crops = TrainCrops(split, PREFIXED, max_len=12, seed=0)
    starts_mid_piece = 0
    for position in range(40):
        index = position % 3
        item = crops[(index, 0, position)]
        tokens = item["tokens"]
        assert len(tokens) == 12
        assert tokens[:2].tolist() == [1, 10 + index] and item["style_id"] == index
        if tokens[2] != 40:  # a crop from a later bar: the head is re-inserted, its targets do not count
            starts_mid_piece += 1
            assert (int(tokens[2]) - 40) % 5 == 0  # the piece resumes at a bar start
            assert item["loss_mask"][:3].tolist() == [False] * 3 and item["loss_mask"][3:].all()
            assert item["bar_ids"].tolist()[:3] == [0, 0, 0]
    assert starts_mid_piece > 20


def test_condition_dropout_replaces_the_style_by_the_reserved_slot_in_token_and_label():
    split = _split(n_pieces=1, length=60)
    crops = TrainCrops(split, PREFIXED, max_len=12, seed=0, style_dropout=0.3, null_style=3)
    items = [crops[(0, 0, p)] for p in range(200)]
    dropped = [item for item in items if item["style_id"] == 3]
    assert 0.2 < len(dropped) / len(items) < 0.4
    assert all(item["tokens"][1] == 13 for item in dropped)
    assert all(item["tokens"][1] == 10 for item in items if item["style_id"] == 0)
    # the crops themselves are those of a run without dropout
    plain = TrainCrops(split, PREFIXED, max_len=12, seed=0)
    assert all(item["tokens"][2:].tolist() == plain[(0, 0, p)]["tokens"][2:].tolist() for p, item in enumerate(items))


def test_prefixed_eval_windows_score_every_token_once_and_show_the_style():
    split = _split(n_pieces=2, length=30)
    split["style_id"] = [1, 2]
    windows = EvalWindows(_ListSplit(split), PREFIXED, max_len=8)
    counted = []
    for i in range(len(windows)):
        item = windows[i]
        assert item["tokens"][:2].tolist() == [1, 11 + windows.windows[i][0]]
        batch = collate([item], pad_id=0)
        keep = (batch["targets"] != IGNORE_INDEX) & batch["loss_mask"]
        counted += [(windows.windows[i][0], int(t)) for t in batch["targets"][keep]]
    # every token, the style token and EOS, once per piece
    expected = [(piece, t) for piece in (0, 1) for t in [11 + piece] + list(range(40, 70)) + [2]]
    assert sorted(counted) == sorted(expected)
