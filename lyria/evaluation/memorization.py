"""How much of the training set the generated pieces copy: the `memorization` family.

Per generated piece:
- `best_f1`: the highest mir_eval note F1 between a window of the piece and the aligned window of a
  training piece. An n-gram index over (pitch interval, onset delta) of consecutive notes proposes the
  alignments: every shared n-gram votes, weighted by its inverse document frequency, for (training
  piece, time offset, transposition), the way audio fingerprinting aligns recordings; mir_eval scores only
  the `candidates` best alignments, each in the 12 transpositions around the voted one (mir_eval itself
  is not transposition-invariant; an exact count of coinciding notes ranks the 12 and mir_eval scores the
  `scored_transpositions` best). 0 when the index proposes nothing.
- `longest_shared_ngram`: the longest run of evaluation tokens that also occurs in the training tokens
  (exact up to 1,024 tokens; from a suffix array of both sides).
Set values: their means, `copy_rate` (share with best_f1 >= copy_threshold) and `long_ngram_rate`
(share with a shared run of at least `ngram_copy_length` tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from lyria.evaluation.base import EvalInputs, Family, FamilyResult, PieceNotes, nanmean, register_family
from lyria.evaluation.matching import ONSET_TOLERANCE_BEATS, note_arrays, note_f1, window
from lyria.evaluation.tokens import HASH_BASE, TokenTable, tokens_for

INDEX_VERSION = 1
GRID = 12  # onset deltas and offsets in 1/12 beat (sixteenths and triplets land on it)
MAX_DELTA = 8 * GRID
MAX_SHARED_TOKENS = 1024  # longest shared token runs are exact up to this length


def note_ngrams(piece: PieceNotes, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, onset in grid units, pitch) of each run of n + 1 consecutive pitched notes, in (onset, pitch) order.

    The code hashes the n (pitch interval, onset delta) steps, so it is the same for any transposition.
    """
    notes = piece.notes[~piece.notes["is_drum"]]
    if len(notes) <= n:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    onsets = np.round(notes["start_beats"] * GRID).astype(np.int64)
    pitches = notes["pitch"].astype(np.int64)
    symbols = ((np.diff(pitches) + 128) * (MAX_DELTA + 1) + np.minimum(np.diff(onsets), MAX_DELTA)).astype(np.uint64)
    count = len(symbols) - n + 1
    codes = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            codes = codes * HASH_BASE + symbols[k : k + count]
    return codes, onsets[:count], pitches[:count]


def build_index(pieces: list[PieceNotes], n: int) -> dict[str, np.ndarray]:
    """The postings (code, piece, onset, first pitch, document frequency) of every training note n-gram, by code."""
    parts = [note_ngrams(p, n) for p in tqdm(pieces, desc="indexing training pieces", unit="piece", leave=False, mininterval=1.0)]
    codes = np.concatenate([np.zeros(0, dtype=np.uint64)] + [c for c, _, _ in parts])
    piece = np.concatenate(
        [np.zeros(0, dtype=np.int32)] + [np.full(len(c), i, dtype=np.int32) for i, (c, _, _) in enumerate(parts)]
    )
    onsets = np.concatenate([np.zeros(0, dtype=np.int64)] + [o for _, o, _ in parts])
    pitches = np.concatenate([np.zeros(0, dtype=np.int64)] + [p for _, _, p in parts])
    order = np.argsort(codes, kind="stable")  # stable: within a code, pieces stay in ascending order
    codes, piece = codes[order], piece[order]
    new_code = np.ones(len(codes), dtype=bool)
    new_code[1:] = codes[1:] != codes[:-1]
    new_piece = new_code.copy()
    new_piece[1:] |= piece[1:] != piece[:-1]
    group = np.cumsum(new_code) - 1
    df = np.bincount(group, weights=new_piece)[group] if len(group) else np.zeros(0)  # pieces holding each posting's code
    return {
        "codes": codes,
        "piece": piece,
        "onset": onsets[order].astype(np.int32),
        "pitch": pitches[order].astype(np.int16),
        "df": df.astype(np.int32),
        "n_pieces": np.array(len(pieces)),
    }


@dataclass(frozen=True)
class Alignment:
    """A proposed copy: generated onset t matches training onset t + offset_beats, pitch p matches p + shift."""

    train_index: int
    offset_beats: float
    shift: int
    center_beats: float  # median onset of the generated n-grams that voted for it
    votes: float


def propose(
    index: dict[str, np.ndarray], piece: PieceNotes, n: int, candidates: int, max_df: int, same_key: bool
) -> list[Alignment]:
    """The best alignments of `piece` to training pieces by idf-weighted votes of shared n-grams.

    N-grams held by more than `max_df` training pieces (stock figures such as scales) do not vote.
    """
    codes, onsets, pitches = note_ngrams(piece, n)
    if not len(codes) or not len(index["codes"]):
        return []
    lo = np.searchsorted(index["codes"], codes, side="left")
    hi = np.searchsorted(index["codes"], codes, side="right")
    usable = hi > lo
    usable[usable] &= index["df"][lo[usable]] <= max_df
    if not usable.any():
        return []
    hits = (hi - lo)[usable]
    query = np.repeat(np.flatnonzero(usable), hits)
    postings = np.arange(hits.sum()) - np.repeat(np.cumsum(hits) - hits, hits) + np.repeat(lo[usable], hits)
    train_piece = index["piece"][postings].astype(np.int64)
    offset = index["onset"][postings].astype(np.int64) - onsets[query]
    shift = index["pitch"][postings].astype(np.int64) - pitches[query]
    weight = np.log1p(float(index["n_pieces"]) / index["df"][postings])
    if same_key:
        keep = shift == 0
        train_piece, offset, shift, weight, query = train_piece[keep], offset[keep], shift[keep], weight[keep], query[keep]
        if not len(weight):
            return []
    # one int64 key per (piece, offset, shift): offsets stay within +-2^27 grid steps, shifts within +-127
    keys = (train_piece << 36) + ((offset + (1 << 27)) << 8) + (shift + 128)
    unique, inverse = np.unique(keys, return_inverse=True)
    votes = np.bincount(inverse, weights=weight)
    chosen = []
    for i in np.argsort(-votes, kind="stable")[:candidates]:
        key = int(unique[i])
        center = float(np.median(onsets[query[inverse == i]])) / GRID
        offset_steps = ((key >> 8) & ((1 << 28) - 1)) - (1 << 27)
        chosen.append(Alignment(key >> 36, offset_steps / GRID, (key & 255) - 128, center, float(votes[i])))
    return chosen


def aligned_f1(
    piece: PieceNotes,
    train_piece: PieceNotes,
    alignment: Alignment,
    window_beats: float,
    transpositions: range,
    scored: int,
    onset_tolerance: float,
) -> float:
    """Highest F1 of the piece's window centred on the votes (`window_beats` long; the whole piece when shorter)
    against the aligned training window, over `transpositions` around the aligned one.

    Every transposition is tried: an exact count of coinciding (onset on the 1/12-beat grid, pitch) pairs
    ranks them, and mir_eval scores the `scored` best.
    """
    duration = piece.duration_beats
    if duration <= window_beats:
        start, end = 0.0, duration + 1.0
    else:
        start = min(max(alignment.center_beats - window_beats / 2, 0.0), duration - window_beats)
        end = start + window_beats
    generated = window(piece.notes, start, end)
    generated = generated[~generated["is_drum"]]
    offset = alignment.offset_beats
    reference = window(train_piece.notes, start + offset, end + offset)
    reference = reference[~reference["is_drum"]]
    if not len(generated) or not len(reference):
        return 0.0
    reference_keys = np.round((reference["start_beats"] - start - offset) * GRID).astype(np.int64) * 256 + reference["pitch"]
    generated_keys = np.round((generated["start_beats"] - start) * GRID).astype(np.int64) * 256 + generated["pitch"]
    coinciding = [np.isin(generated_keys + alignment.shift + k, reference_keys).sum() for k in transpositions]
    ranked = [transpositions[i] for i in np.argsort(-np.asarray(coinciding), kind="stable")[:scored]]
    ref_arrays = note_arrays(reference, start + offset)
    best = 0.0
    for k in ranked:
        best = max(best, note_f1(ref_arrays, note_arrays(generated, start, transpose=alignment.shift + k), onset_tolerance))
    return best


def longest_shared_runs(generated: TokenTable, train: TokenTable, cap: int = MAX_SHARED_TOKENS) -> np.ndarray:
    """Per generated piece, the longest run of its tokens that also occurs in the training tokens (exact up to `cap`).

    A generalised suffix array of both sides, sorted by each suffix's first `cap` tokens through prefix
    doubling (pieces end in unique separators, so no run crosses a piece): the training suffix sharing the
    longest prefix with a generated one is its nearest training neighbour in that order, above or below,
    and the shared length is read off the doubling ranks. Suffixes already told apart from all others drop
    out of later rounds, so the cost grows with the copied material only through its length's logarithm.
    """
    longest = np.zeros(len(generated), dtype=np.int64)
    if not len(generated.ids) or not len(train.ids):
        return longest
    n_gen = len(generated.ids) + len(generated)
    sequence, piece_of_position = _with_separators([generated, train])
    order, ranks = _suffix_ranks(sequence, cap)
    from_train = order >= n_gen
    slots = np.arange(len(order))
    before = np.maximum.accumulate(np.where(from_train, slots, -1))
    after = np.minimum.accumulate(np.where(from_train, slots, len(order))[::-1])[::-1]
    gen_slots = np.flatnonzero(~from_train)
    suffix = order[gen_slots]
    shared = np.zeros(len(suffix), dtype=np.int64)
    for neighbour in (before[gen_slots], after[gen_slots]):
        valid = (neighbour >= 0) & (neighbour < len(order))
        shared[valid] = np.maximum(shared[valid], _common_prefix(ranks, suffix[valid], order[neighbour[valid]]))
    np.maximum.at(longest, piece_of_position[suffix], np.minimum(shared, cap))
    return longest


def _suffix_ranks(sequence: np.ndarray, cap: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(suffixes sorted by their first `cap` tokens, ranks per doubling level).

    ranks[k][i] is the slot in the sorted order where the group of suffixes sharing i's first 2^k tokens starts,
    so two suffixes share their first 2^k tokens exactly when their level-k ranks are equal.
    """
    size = len(sequence)
    order = np.argsort(sequence, kind="stable").astype(np.int32)
    rank = np.empty(size, dtype=np.int32)
    rank[order] = _group_starts(sequence[order] != np.roll(sequence[order], 1))
    ranks = [rank.copy()]
    open_slots = _tied(rank[order], np.arange(size))
    width = 1
    while width < cap and len(open_slots):
        members = order[open_slots]
        following = np.where(members + width < size, rank[np.minimum(members + width, size - 1)], -1).astype(np.int32)
        regroup = np.lexsort((following, rank[members]))  # ties stay within their group's slots
        members, following, group = members[regroup], following[regroup], rank[members][regroup]
        order[open_slots] = members
        changed = np.ones(len(members), dtype=bool)
        changed[1:] = (group[1:] != group[:-1]) | (following[1:] != following[:-1])
        starts = open_slots[np.maximum.accumulate(np.where(changed, np.arange(len(members)), 0))].astype(np.int32)
        rank[members] = starts
        ranks.append(rank.copy())
        open_slots = _tied(starts, open_slots)  # suffixes told apart from all others drop out
        width *= 2
    return order, ranks


def _tied(group_of_slot: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """The slots whose group (ascending along the slots) holds more than one suffix."""
    if not len(slots):
        return slots
    boundary = np.flatnonzero(np.diff(group_of_slot) != 0) + 1
    edges = np.concatenate([[0], boundary, [len(slots)]])
    sizes = np.diff(edges)
    return slots[np.repeat(sizes > 1, sizes)]


def _group_starts(is_start: np.ndarray) -> np.ndarray:
    """For each slot of a sorted array, the slot where its run of equal values starts."""
    is_start = is_start.copy()
    if len(is_start):
        is_start[0] = True
    return np.maximum.accumulate(np.where(is_start, np.arange(len(is_start)), 0))


def _with_separators(tables: list[TokenTable]) -> tuple[np.ndarray, np.ndarray]:
    """All pieces of the tables in one array, each followed by its own negative separator; and each position's
    piece index within its table (the separators included)."""
    parts, pieces, separator = [], [], -1
    for table in tables:
        for i in range(len(table)):
            parts += [table.piece(i), np.array([separator])]
            pieces.append(np.full(len(table.piece(i)) + 1, i))
            separator -= 1
    return np.concatenate(parts).astype(np.int32), np.concatenate(pieces)


def _common_prefix(ranks: list[np.ndarray], first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Length of the common prefix of the suffixes at `first` and `second`, from the doubling ranks (level k
    ranks a suffix by its first 2^k tokens)."""
    length = np.zeros(len(first), dtype=np.int64)
    size = len(ranks[0])
    for level in range(len(ranks) - 1, -1, -1):
        a, b = first + length, second + length
        inside = (a < size) & (b < size)
        same = np.zeros(len(first), dtype=bool)
        same[inside] = ranks[level][a[inside]] == ranks[level][b[inside]]
        length += same * (1 << level)
    return length


@register_family
class Memorization(Family):
    name = "memorization"
    needs_train = True

    def __init__(
        self,
        ngram: int = 6,
        candidates: int = 3,
        transposition_invariant: bool = True,
        scored_transpositions: int = 2,
        window_beats: float = 32.0,
        max_document_frequency: float = 0.05,
        copy_threshold: float = 0.6,
        ngram_copy_length: int = 128,
        onset_tolerance: float = ONSET_TOLERANCE_BEATS,
    ) -> None:
        self.ngram = int(ngram)
        self.candidates = int(candidates)
        self.transposition_invariant = bool(transposition_invariant)
        self.scored_transpositions = int(scored_transpositions)
        self.window_beats = float(window_beats)
        self.max_document_frequency = float(max_document_frequency)
        self.copy_threshold = float(copy_threshold)
        self.ngram_copy_length = int(ngram_copy_length)
        self.onset_tolerance = float(onset_tolerance)

    def index(self, inputs: EvalInputs) -> dict[str, np.ndarray]:
        train = inputs.train

        def build() -> dict[str, np.ndarray]:
            return build_index(train.pieces, self.ngram)

        if inputs.assets is not None and train.key is not None:
            return inputs.assets.arrays(
                "memorization_index", INDEX_VERSION, {"pieces": train.key, "ngram": self.ngram, "grid": GRID}, build
            )
        return train.cached(f"memorization_index/{self.ngram}", build)

    def compute(self, inputs: EvalInputs) -> FamilyResult:
        if inputs.train is None or not len(inputs.train):
            return FamilyResult.not_available("no training set to compare with (give a data config or a run's config.yaml)")
        generated, train = inputs.generated, inputs.train
        index = self.index(inputs)
        max_df = max(1, int(math.ceil(self.max_document_frequency * len(train))))
        transpositions = range(-5, 7) if self.transposition_invariant else range(0, 1)
        best = np.zeros(len(generated))
        matched: list[str | None] = [None] * len(generated)
        for i, piece in enumerate(
            tqdm(generated.pieces, desc=f"memorization ({inputs.role})", unit="piece", leave=False, mininterval=1.0)
        ):
            for alignment in propose(index, piece, self.ngram, self.candidates, max_df, not self.transposition_invariant):
                train_piece = train.pieces[alignment.train_index]
                f1 = aligned_f1(
                    piece, train_piece, alignment, self.window_beats, transpositions, self.scored_transpositions, self.onset_tolerance
                )
                if f1 > best[i]:
                    best[i], matched[i] = f1, train.names[alignment.train_index]
        longest = longest_shared_runs(tokens_for(generated, inputs.assets), tokens_for(train, inputs.assets)).astype(np.float64)
        result = FamilyResult()
        result.per_piece = {
            "best_f1": best,
            "longest_shared_ngram": longest,
            "is_copy": (best >= self.copy_threshold).astype(np.float64),
        }
        result.set("mean_best_f1", nanmean(best), "no generated pieces")
        result.set("copy_rate", nanmean(best >= self.copy_threshold), "no generated pieces")
        result.set("mean_longest_shared_ngram", nanmean(longest), "no generated pieces")
        result.set("max_longest_shared_ngram", longest.max() if len(longest) else None, "no generated pieces")
        result.set("long_ngram_rate", nanmean(longest >= self.ngram_copy_length), "no generated pieces")
        result.artifacts["matched"] = matched
        return result
