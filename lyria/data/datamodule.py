"""Token datasets -> training crops and evaluation windows, in an order that a checkpoint can resume.

Every random choice of a training example (which piece, where to crop, how far to transpose, which
bars to move behind FILL / SEP) is a function of (seed, epoch, position in the epoch), so the data
order is fully described by the epoch and the number of batches already consumed; the training loader
keeps that pair as its state, which Lightning saves in the loop state of every checkpoint and hands
back before the loader is iterated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lyria.tokenizers.infilling import infilling_layout

IGNORE_INDEX = -100


@dataclass
class SequenceLayout:
    """How a piece becomes a model sequence: BOS, optional style token, the piece, EOS.

    With a style prefix, every training crop and evaluation window starts with BOS and the style token
    (`head`), wherever in the piece it starts: the model always sees the style, as a generation prompt and
    every re-read of a full context show it. The re-inserted head's own tokens are never targets.
    """

    bos: np.ndarray
    eos: np.ndarray
    pad_id: int
    style_token_ids: Sequence[int] | None = None  # per style slot; None: no style prefix

    def head(self, style_id: int) -> np.ndarray:
        head = [self.bos]
        if self.style_token_ids is not None:
            head.append(np.full_like(self.bos, self.style_token_ids[style_id]))
        return np.stack(head)

    @property
    def head_length(self) -> int:
        return 1 if self.style_token_ids is None else 2

    def frame(self, ids: np.ndarray, bar_ids: np.ndarray, style_id: int) -> tuple[np.ndarray, np.ndarray]:
        head = self.head(style_id)
        ids = np.concatenate([head, ids, self.eos[None]], axis=0)
        first_bar = bar_ids[0] if len(bar_ids) else 0
        bars = np.concatenate([np.full(len(head), first_bar), bar_ids, [bar_ids[-1] if len(bar_ids) else 0]])
        return ids, bars.astype(np.int64)

    def window(self, ids: np.ndarray, bars: np.ndarray, begin: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """`length` tokens of a framed piece from `begin`: (ids, bars, loss mask or None). Without a style prefix,
        or from the start, a plain slice; otherwise the head, then the piece from `begin`, with no loss on the
        head and on the first token after it (the token before `begin` predicted it already)."""
        if self.style_token_ids is None or begin == 0:
            return ids[begin : begin + length], bars[begin : begin + length], None
        h = self.head_length
        body = ids[begin : begin + length - h]
        out = np.concatenate([ids[:h], body], axis=0)
        out_bars = np.concatenate([np.full(h, bars[begin]), bars[begin : begin + length - h]])
        mask = np.ones(len(out), dtype=bool)
        mask[: h + 1] = False
        return out, out_bars, mask


@dataclass
class InfillingTask:
    """The fill-in-the-middle objective: with probability `rate` a crop moves a span of 1..`max_bars` whole
    bars behind FILL / SEP (lyria.tokenizers.infilling). No loss on the steps the task gives (the FILLs
    and the first SEP); the closing SEP is learned, it ends a span. Bar ids come from `bar_ids` (the
    tokenizer's tracker), which follows the segments as generation does."""

    rate: float
    max_bars: int
    fill: np.ndarray
    sep: np.ndarray
    num_special: int
    bar_ids: Callable[[np.ndarray], np.ndarray]

    def apply(self, ids: np.ndarray, bars: np.ndarray, rng: np.random.Generator, max_len: int):
        """(ids, bar ids, loss mask) of the crop in the infilling layout, or None when it keeps its order."""
        if self.rate <= 0 or rng.random() >= self.rate:
            return None
        first = ids[:, 0] if ids.ndim == 2 else ids
        head = int(np.argmax(first >= self.num_special)) if (first >= self.num_special).any() else len(ids)
        present = np.unique(bars[head:])
        if len(present) == 0:
            return None
        count = int(rng.integers(1, min(self.max_bars, len(present)) + 1))
        start = int(rng.integers(0, len(present) - count + 1))
        span = (int(present[start]), int(present[start + count - 1]) + 1)
        layout = infilling_layout(ids, bars, span, self.fill, self.sep, head)
        out, mask = layout.ids, layout.loss_mask
        excess = len(out) - max_len
        if excess > 0:  # the task's steps made the crop too long: the suffix gives way first, then the prefix
            n_fill = span[1] - span[0]
            n_prefix = int(np.argmax(~mask)) if (~mask).any() else 0
            suffix_end = layout.prompt_length - 1
            from_suffix = min(excess, suffix_end - (n_prefix + n_fill))
            from_prefix = excess - from_suffix
            if from_prefix > n_prefix - head:
                return None
            keep = np.ones(len(out), dtype=bool)
            keep[suffix_end - from_suffix : suffix_end] = False
            keep[head : head + from_prefix] = False
            out, mask = out[keep], mask[keep]
        return out, self.bar_ids(out), mask


class EpochSampler(Sampler):
    """Yields (piece index, epoch, position); sharded across ranks; resumable mid-epoch.

    With `balance_styles`, pieces are drawn with replacement so that each style is equally likely,
    whatever the corpus sizes; otherwise each epoch is a permutation of the pieces. The sampler
    counts its own epochs (one per iteration) rather than following the trainer's epoch counter,
    which a run stopped by `max_steps` advances although the epoch is unfinished.
    """

    def __init__(
        self,
        style_ids: Sequence[int],
        seed: int,
        balance_styles: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        self.style_ids = np.asarray(style_ids)
        self.seed, self.balance_styles = int(seed), bool(balance_styles)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.epoch = 0  # the epoch the current (or, before any iteration, the next) pass draws
        self._next_epoch = 0
        self.skip = 0  # examples of the next pass already consumed before a resume

    def resume(self, epoch: int, examples_done: int) -> None:
        """Continue inside `epoch` after this rank consumed `examples_done` of its shard."""
        if examples_done >= len(self):
            epoch, examples_done = epoch + 1, 0
        self.epoch = self._next_epoch = int(epoch)
        self.skip = int(examples_done)

    def _order(self, epoch: int) -> np.ndarray:
        n = len(self.style_ids)
        rng = np.random.default_rng([self.seed, epoch])
        if self.balance_styles:
            styles, counts = np.unique(self.style_ids, return_counts=True)
            weight_of = dict(zip(styles.tolist(), (1.0 / (len(styles) * counts)).tolist()))
            weights = np.array([weight_of[s] for s in self.style_ids.tolist()])
            order = rng.choice(n, size=n, replace=True, p=weights / weights.sum())
        else:
            order = rng.permutation(n)
        per_rank = -(-n // self.num_replicas)
        order = np.resize(order, per_rank * self.num_replicas)  # pad by wrapping, as DistributedSampler
        return order[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        return -(-len(self.style_ids) // self.num_replicas)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch = self.epoch = self._next_epoch
        self._next_epoch += 1
        start, self.skip = self.skip, 0
        shard = self._order(epoch)
        for position in range(start, len(shard)):
            yield int(shard[position]), epoch, position * self.num_replicas + self.rank


class EvalShard(Sampler):
    """Every `num_replicas`-th example from `rank` on: each example goes to exactly one rank, none twice.

    Unlike DistributedSampler nothing is padded, so metrics summed over ranks count every token once.
    """

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.length, self.num_replicas, self.rank = int(length), int(num_replicas), int(rank)

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.num_replicas))


class ResumableLoader(DataLoader):
    """The training DataLoader with its place in the data order as state (Lightning's stateful loaders).

    `state_dict` is the sampler's epoch and the batches the training loop has taken from this epoch
    (`batch_taken`, called by the data module as each batch reaches the step), not the batches the
    loader produced: those run ahead by Lightning's and the workers' prefetching.
    """

    def __init__(self, dataset: Dataset, sampler: EpochSampler, batch_size: int, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self.batches_taken = 0

    def __iter__(self):
        self.batches_taken = self.sampler.skip // self.batch_size
        return super().__iter__()

    def batch_taken(self) -> None:
        self.batches_taken += 1

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches_done": int(self.batches_taken)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume(state["epoch"], state["batches_done"] * self.batch_size)


def crop_windows(bars: np.ndarray, max_len: int) -> np.ndarray:
    """The (begin, end) token ranges a training crop of a framed piece (bar id per token) may take, each equally
    likely, so that every target position of the piece, EOS included, is covered by about the same share of
    crops (the old bar-aligned crops never reached the last bars or EOS of a piece longer than the context):

    - from every bar start, `max_len` tokens or up to the piece's end (the last bars' crops end with EOS and
      are shorter; collate pads them);
    - from BOS up to each bar start closer to it than `max_len - 1` tokens (the opening gets the coverage the
      middle gets from crops that begin before a position);
    - starts every `max_len - 1` tokens inside a stretch longer than that without a bar start.
    """
    length, step = len(bars), max_len - 1
    starts = np.flatnonzero(np.diff(bars, prepend=-1) != 0)
    starts = starts[starts < length - 1]  # a crop from the last token would have no target
    edges = np.append(starts, length - 1)
    extra = [np.arange(a + step, b, step) for a, b in zip(edges[:-1], edges[1:]) if b - a > step]
    if extra:
        starts = np.unique(np.concatenate([starts, *extra]))
    heads = starts[(starts > 0) & (starts < step)]
    begins = np.concatenate([starts, np.zeros(len(heads), dtype=starts.dtype)])
    ends = np.concatenate([np.minimum(starts + max_len, length), heads + 1])
    return np.stack([begins, ends], axis=1)


class TrainCrops(Dataset):
    """A random window of up to `max_len` tokens (see `crop_windows`) of a piece, randomly transposed."""

    def __init__(
        self,
        split,
        layout: SequenceLayout,
        max_len: int,
        seed: int,
        transpose_range: Sequence[int] = (0, 0),
        transposition_tables: dict[int, np.ndarray] | None = None,
        pitch_field: int | None = None,
        infilling: InfillingTask | None = None,
        style_dropout: float = 0.0,
        null_style: int | None = None,
    ) -> None:
        if style_dropout > 0 and null_style is None:
            raise ValueError("condition dropout needs a reserved no-style slot (tokenizer.num_style_slots >= 1)")
        self.style_dropout, self.null_style = float(style_dropout), null_style
        self.ids = split["ids"]
        self.bar_ids = split["bar_ids"]
        self.style_ids = split["style_id"]
        self.layout, self.max_len, self.seed = layout, max_len, seed
        self.transpose_range = tuple(transpose_range)
        self.tables = transposition_tables or {}
        self.pitch_field = pitch_field
        self.infilling = infilling

    def __len__(self) -> int:
        return len(self.ids)

    def _transpose(self, ids: np.ndarray, semitones: int) -> np.ndarray | None:
        table = self.tables.get(semitones)
        if table is None:
            return ids
        if ids.ndim == 2:
            column = table[ids[:, self.pitch_field]]
            if (column < 0).any():
                return None
            out = ids.copy()
            out[:, self.pitch_field] = column
            return out
        out = table[ids]
        return None if (out < 0).any() else out

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        index, epoch, position = key
        rng = np.random.default_rng([self.seed, epoch, position])
        style = int(self.style_ids[index])
        # condition dropout from a stream of its own, so that the crops stay those of a run without it
        if self.style_dropout > 0 and np.random.default_rng([self.seed, epoch, position, 1]).random() < self.style_dropout:
            style = int(self.null_style)
        ids, bars = self.layout.frame(np.asarray(self.ids[index]), np.asarray(self.bar_ids[index]), style)
        mask = None
        if len(ids) > self.max_len:
            # with a style prefix, a crop from a later bar gets the head re-inserted in front of it, so it holds
            # max_len - h tokens of the piece
            h = self.layout.head_length if self.layout.style_token_ids is not None else 0
            windows = crop_windows(bars, self.max_len - h)
            begin, end = (int(v) for v in windows[rng.integers(len(windows))])
            if h and begin > 0:
                ids, bars, mask = self.layout.window(ids, bars, begin, end - begin + h)
            else:
                ids, bars = ids[begin:end], bars[begin:end]
        lo, hi = self.transpose_range
        if (lo, hi) != (0, 0):
            shift = int(rng.integers(lo, hi + 1))
            transposed = self._transpose(ids, shift)
            ids = transposed if transposed is not None else ids
        example = {"tokens": ids, "bar_ids": bars - bars[0], "style_id": style, "bar_span": (int(bars[0]), int(bars[-1]))}
        if mask is not None:
            example["loss_mask"] = mask
        infilled = self.infilling.apply(ids, bars, rng, self.max_len) if self.infilling is not None else None
        if infilled is not None:
            example["tokens"], example["bar_ids"], example["loss_mask"] = infilled
        return example


class EvalWindows(Dataset):
    """Every token of every piece exactly once, in consecutive windows of `max_len` (no augmentation)."""

    def __init__(self, split, layout: SequenceLayout, max_len: int) -> None:
        self.windows: list[tuple[int, int]] = []
        self.split, self.layout = split, layout
        # a window after the first holds the re-inserted head (style prefix) and then the piece
        h = layout.head_length if layout.style_token_ids is not None else 0
        if max_len - h < 2:
            raise ValueError(f"evaluation windows of {max_len} tokens leave no room after the {h}-token head")
        for index, n in enumerate(split["n_tokens"]):
            framed = n + 1 + layout.head_length
            # windows overlap by one token, so that every target after the first is predicted once
            self.windows.append((index, 0))
            begin = max_len - 1
            while begin + 1 < framed:
                self.windows.append((index, begin))
                begin += max_len - h - 1
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index, begin = self.windows[i]
        row = self.split[index]
        ids, bars = self.layout.frame(np.asarray(row["ids"]), np.asarray(row["bar_ids"]), row["style_id"])
        ids, bars, mask = self.layout.window(ids, bars, begin, self.max_len)
        example = {"tokens": ids, "bar_ids": bars - bars[0], "style_id": row["style_id"], "bar_span": (int(bars[0]), int(bars[-1]))}
        if mask is not None:
            example["loss_mask"] = mask
        return example


def collate(examples: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pads to the longest example; `targets` are the next tokens with padding set to IGNORE_INDEX;
    `loss_mask` says which targets count (an example's own `loss_mask` over its tokens, else all)."""
    longest = max(len(e["tokens"]) for e in examples)
    first = np.asarray(examples[0]["tokens"])
    shape = (len(examples), longest) + first.shape[1:]
    tokens = np.full(shape, pad_id, dtype=np.int64)
    bars = np.zeros((len(examples), longest), dtype=np.int64)
    valid = np.zeros((len(examples), longest), dtype=bool)
    counts = np.zeros((len(examples), longest), dtype=bool)
    for row, e in enumerate(examples):
        n = len(e["tokens"])
        tokens[row, :n] = e["tokens"]
        bars[row, :n] = e["bar_ids"]
        bars[row, n:] = e["bar_ids"][-1]
        valid[row, :n] = True
        counts[row, :n] = e.get("loss_mask", True)
    tokens_t = torch.from_numpy(tokens)
    targets = tokens_t[:, 1:].clone()
    targets[~torch.from_numpy(valid[:, 1:])] = IGNORE_INDEX
    return {
        "tokens": tokens_t[:, :-1],
        "targets": targets,
        "bar_ids": torch.from_numpy(bars[:, :-1]),
        "loss_mask": torch.from_numpy(counts[:, 1:]),
        "style": torch.tensor([int(e["style_id"]) for e in examples], dtype=torch.long),
    }


class MusicDataModule(L.LightningDataModule):
    """Serves prepared splits; the training order is part of the checkpoint (see `ResumableLoader`).

    Training crops and evaluation windows are sharded across ranks here (the trainer configs set
    `use_distributed_sampler: false`).
    """

    def __init__(
        self,
        prepared,
        tokenizer,
        max_seq_len: int,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        balance_styles: bool = False,
        transpose_range: Sequence[int] = (0, 0),
        style_prefix: bool = False,
        infilling_rate: float = 0.0,
        infilling_max_bars: int = 8,
        style_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.prepared, self.tokenizer = prepared, tokenizer
        self.max_len = int(max_seq_len) + 1  # inputs and shifted targets both have max_seq_len tokens
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size or batch_size)
        self.num_workers, self.seed = int(num_workers), int(seed)
        self.balance_styles = bool(balance_styles)
        self.transpose_range = tuple(int(v) for v in transpose_range)
        self.style_dropout = float(style_dropout)
        self.layout = SequenceLayout(
            bos=tokenizer.step_ids(tokenizer.bos_id),
            eos=tokenizer.step_ids(tokenizer.eos_id),
            pad_id=tokenizer.pad_id,
            style_token_ids=[tokenizer.style_token_id(i) for i in range(tokenizer.num_style_slots)] if style_prefix else None,
        )
        self.infilling = None
        if infilling_rate > 0:
            self.infilling = InfillingTask(
                rate=float(infilling_rate),
                max_bars=int(infilling_max_bars),
                fill=tokenizer.step_ids(tokenizer.fill_id),
                sep=tokenizer.step_ids(tokenizer.sep_id),
                num_special=tokenizer.num_special,
                bar_ids=tokenizer.bar_ids,
            )
        self._train_loader: ResumableLoader | None = None

    def _loader_options(self) -> dict[str, Any]:
        # An own generator: creating the loader's iterator then draws its worker seed from it, not from
        # the global RNG that dropout uses, so iterating (or re-creating) a loader never shifts training.
        return {
            "num_workers": self.num_workers,
            "collate_fn": _Collate(self.tokenizer.pad_id),
            "persistent_workers": self.num_workers > 0,
            "generator": torch.Generator().manual_seed(self.seed),
        }

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def wrap(self, dataset: Dataset, split: str) -> Dataset:
        """The dataset a loader serves (a task adds to each example here)."""
        return dataset

    def train_dataloader(self) -> ResumableLoader:
        split = self.prepared.splits["train"]
        if len(split) == 0:
            raise ValueError(f"the training split is empty; see {self.prepared.report_path}")
        lo, hi = self.transpose_range
        tables = {s: self.tokenizer.transposition_table(s) for s in range(lo, hi + 1) if s != 0}
        dataset = TrainCrops(
            split, self.layout, self.max_len, self.seed, self.transpose_range, tables, self.tokenizer.pitch_field, self.infilling,
            self.style_dropout, self.tokenizer.null_style_slot,
        )
        world, rank = self._ranks()
        sampler = EpochSampler(split["style_id"], seed=self.seed, balance_styles=self.balance_styles, num_replicas=world, rank=rank)
        self._train_loader = ResumableLoader(self.wrap(dataset, "train"), sampler, self.batch_size, **self._loader_options())
        return self._train_loader

    def eval_dataloader(self, split: str, sharded: bool = True) -> DataLoader:
        """Every window of a split once; `sharded` splits the windows across ranks (metrics sum over ranks)."""
        windows = EvalWindows(self.prepared.splits[split], self.layout, self.max_len)
        world, rank = self._ranks() if sharded else (1, 0)
        if 0 < len(windows) < world:
            raise ValueError(
                f"the {split} split has {len(windows)} windows, fewer than the {world} processes that share it; "
                f"use fewer devices or more {split} data (data.val_fraction / data.test_fraction)"
            )
        sampler = EvalShard(len(windows), world, rank)
        return DataLoader(self.wrap(windows, split), batch_size=self.eval_batch_size, sampler=sampler, **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("validation")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Called as the loop takes a batch into a step (after Lightning's prefetch), so it counts consumption.
        if self.trainer is not None and self.trainer.training and self._train_loader is not None:
            self._train_loader.batch_taken()
        return batch


class _Collate:
    """Picklable collate function for worker processes."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples):
        return collate(examples, self.pad_id)
