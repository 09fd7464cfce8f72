"""Training order and batches: resumable, shardable, style-balanced; crops, transposition and padding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lyria.data.datamodule import IGNORE_INDEX, EpochSampler, EvalWindows, SequenceLayout, TrainCrops, collate, crop_windows


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
    lengths = []
    for position in range(40):
        item = crops[(position % 3, 0, position)]
        lengths.append(len(item["tokens"]))
        assert item["bar_ids"][0] == 0 and np.all(np.diff(item["bar_ids"]) >= 0)
        first = int(item["tokens"][0])
        assert first == 1 or (first - 42) % 5 == 0  # BOS, or the first token of a bar, transposed by 2
    assert max(lengths) == 12 and min(lengths) < 12  # crops at a piece's ends are shorter
    assert crops[(0, 3, 9)]["tokens"].tolist() == crops[(0, 3, 9)]["tokens"].tolist()


EOS = 2


def _long_pieces(lengths, seed=0, bar_tokens=(3, 12)):
    """Pieces of these lengths with bars of random lengths; token values 10..59, never BOS or EOS."""
    rng = np.random.default_rng(seed)
    ids, bars = [], []
    for n in lengths:
        bar_of = np.repeat(np.arange(n), rng.integers(*bar_tokens, size=n))[:n]
        ids.append((10 + np.arange(n) % 50).tolist())
        bars.append(bar_of.tolist())
    return {"ids": ids, "bar_ids": bars, "style_id": [0] * len(lengths), "n_tokens": list(lengths)}


def test_share_of_eos_among_training_targets_is_what_the_pieces_imply():
    """Each position of a piece equally likely a target: a crop with t targets of a piece of n framed tokens
    holds its EOS with probability t / (n - 1)."""
    # many pieces: how evenly a piece's bar starts fall makes single pieces deviate by up to about 20 %
    lengths = [20, 40] + np.random.default_rng(1).integers(100, 1500, size=40).tolist()
    split = _long_pieces(lengths)
    crops, sampler = TrainCrops(split, LAYOUT, max_len=65, seed=0), EpochSampler(split["style_id"], seed=0)
    eos, implied = np.zeros(len(lengths)), np.zeros(len(lengths))
    targets = 0
    for _ in range(150):
        keys = list(sampler)
        batch = collate([crops[key] for key in keys], pad_id=0)
        counted = (batch["targets"] != IGNORE_INDEX).sum(dim=1).numpy()
        targets += counted.sum()
        for (index, _, _), row_eos, t in zip(keys, (batch["targets"] == EOS).sum(dim=1).tolist(), counted):
            eos[index] += row_eos
            implied[index] += t / (lengths[index] + 1)  # framed: BOS + n tokens + EOS, so n + 1 targets
    assert eos.sum() / targets == pytest.approx(implied.sum() / targets, rel=0.1)
    # the pieces longer than the context too (crops that had to fit inside a piece never reached their EOS)
    assert eos[2:].sum() == pytest.approx(implied[2:].sum(), rel=0.1)


def test_every_token_of_a_long_piece_is_a_target_of_some_crop():
    split = _long_pieces([700], bar_tokens=(2, 9))
    # one bar far longer than the context: crops must also start inside it
    split["bar_ids"][0] = [b if i < 300 or i >= 500 else split["bar_ids"][0][300] for i, b in enumerate(split["bar_ids"][0])]
    framed = 702
    bars = LAYOUT.frame(np.asarray(split["ids"][0]), np.asarray(split["bar_ids"][0]), 0)[1]
    covered = np.zeros(framed, dtype=bool)
    for begin, end in crop_windows(bars, 65):
        assert 0 <= begin < end <= framed and end - begin <= 65
        covered[begin + 1 : end] = True
    assert covered[1:].all(), np.flatnonzero(~covered[1:]) + 1
    # and the crops drawn in training reach them: the tokens are unique in value order, so a crop's place is known
    split["ids"][0] = list(range(10, 710))
    crops = TrainCrops(split, LAYOUT, max_len=65, seed=3)
    reached = np.zeros(framed, dtype=bool)
    for position in range(3000):
        tokens = crops[(0, 0, position)]["tokens"]
        first = 0 if tokens[0] == 1 else int(tokens[0]) - 10 + 1
        reached[first + 1 : first + len(tokens)] = True
    assert reached[1:].all() and crops[(0, 0, 0)]["tokens"].dtype.kind == "i"


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
        assert 2 < len(tokens) <= 12  # crops near the piece's end or its opening are shorter (collate pads them)
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
