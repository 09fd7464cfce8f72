"""Token sequences of one fixed evaluation tokenizer (MidiTok REMI, default settings) and their n-grams.

Whatever tokenizer a model was trained with, token-level metrics (distinct-n, self-BLEU, shared n-grams)
read the same REMI tokens, so runs with different tokenizers compare. An n-gram is coded as a 64-bit
polynomial hash of its ids (collisions are negligible at these sizes).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from lyria.data.notes import PieceNotes, score_from_notes
from lyria.evaluation.base import PieceSet

log = logging.getLogger(__name__)

TOKENS_VERSION = 1
HASH_BASE = np.uint64(0x9E3779B97F4A7C15)


@functools.lru_cache(maxsize=1)
def evaluation_tokenizer():
    """REMI with MidiTok's default settings and lyria's reserved specials (no style slots)."""
    from lyria.tokenizers import LyriaTokenizer

    return LyriaTokenizer("miditok.REMI", config={}, num_style_slots=0)


def _encode(piece: PieceNotes) -> np.ndarray:
    if not len(piece.notes):
        return np.zeros(0, dtype=np.int64)
    try:
        return evaluation_tokenizer().encode_ids(score_from_notes(piece))
    except Exception as err:  # a piece REMI rejects gets no tokens; the caller counts it
        log.debug("evaluation tokenizer rejected a piece: %s", err)
        return np.zeros(0, dtype=np.int64)


@dataclass
class TokenTable:
    """All pieces' ids in one array; piece i is ids[offsets[i]:offsets[i + 1]]."""

    ids: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_sequences(cls, sequences: list[np.ndarray]) -> "TokenTable":
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        ids = np.concatenate(sequences).astype(np.int64) if sequences else np.zeros(0, dtype=np.int64)
        return cls(ids, np.concatenate([[0], np.cumsum(lengths)]))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def piece(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def take(self, indices) -> "TokenTable":
        return TokenTable.from_sequences([self.piece(int(i)) for i in indices])

    def ngrams(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(codes, piece index, position in the piece) of every n-gram that lies inside one piece."""
        total = len(self.ids)
        if total < n:
            empty = np.zeros(0, dtype=np.int64)
            return empty.astype(np.uint64), empty, empty
        ids = self.ids.astype(np.uint64)
        codes = np.zeros(total - n + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n):
                codes = codes * HASH_BASE + ids[k : total - n + 1 + k] + np.uint64(1)
        starts = np.arange(total - n + 1)
        piece = np.searchsorted(self.offsets, starts, side="right") - 1
        inside = starts + n <= self.offsets[piece + 1]
        return codes[inside], piece[inside], starts[inside] - self.offsets[piece[inside]]


def encode_pieces(pieces: list[PieceNotes], num_proc: int = 2) -> TokenTable:
    """REMI ids of every piece (a piece the tokenizer rejects has none), in `num_proc` forked processes."""
    evaluation_tokenizer()  # built once here, inherited by the forked workers
    progress = {"desc": "evaluation tokens", "unit": "piece", "leave": False, "mininterval": 1.0, "total": len(pieces)}
    if num_proc > 1 and len(pieces) >= 64:
        with mp.get_context("fork").Pool(num_proc) as pool:
            sequences = list(tqdm(pool.imap(_encode, pieces, chunksize=16), **progress))
    else:
        sequences = [_encode(p) for p in tqdm(pieces, **progress)]
    return TokenTable.from_sequences(sequences)


def tokens_for(piece_set: PieceSet, assets=None, num_proc: int = 2) -> TokenTable:
    """The set's evaluation tokens, once per set; dataset sets read them from / write them to the asset store."""

    def compute() -> TokenTable:
        if assets is not None and piece_set.key is not None:
            arrays = assets.arrays(
                f"eval_tokens/{piece_set.label}",
                TOKENS_VERSION,
                {"pieces": piece_set.key, "tokenizer": evaluation_tokenizer().settings()},
                lambda: vars(encode_pieces(piece_set.pieces, num_proc)),
            )
            return TokenTable(arrays["ids"], arrays["offsets"])
        return encode_pieces(piece_set.pieces, num_proc)

    return piece_set.cached("eval_tokens", compute)
