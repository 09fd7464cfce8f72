"""Fixtures: a few test-split pieces of every music21 style (parsed once), small learned vocabularies."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from symusic import Score
from tokenizer_support import BPE_SIZE, DATA_CONFIG, PIECES_PER_STYLE, SINGLE_STREAM, STYLES, build_tokenizer

from lyria.data.prepare import assign_split, convert_pieces
from lyria.data.sources import Music21CorpusSource
from lyria.tokenizers import LyriaTokenizer


@pytest.fixture(scope="session")
def test_split_pieces(shared_cache) -> dict[str, list[tuple[str, Score]]]:
    """Per style, up to PIECES_PER_STYLE pieces that the default split puts in the test split (Monteverdi has two)."""
    source = Music21CorpusSource(OmegaConf.to_container(DATA_CONFIG.source.styles))
    chosen, per_style = [], {s: 0 for s in STYLES}
    for ref in source.pieces():
        if per_style[ref.style] < PIECES_PER_STYLE and assign_split(ref.piece_id, DATA_CONFIG.val_fraction, DATA_CONFIG.test_fraction) == "test":
            chosen.append(ref)
            per_style[ref.style] += 1
    converted, skipped = convert_pieces(chosen, Path(shared_cache) / "data", num_proc=2, timeout_s=120)
    assert not skipped, skipped
    out: dict[str, list[tuple[str, Score]]] = {s: [] for s in STYLES}
    for meta in sorted(converted, key=lambda m: m["piece_id"]):
        out[meta["style"]].append((meta["piece_id"], Score(meta["score_path"])))
    assert all(out.values()), {k: len(v) for k, v in out.items()}
    return out


@pytest.fixture(scope="session")
def training_pieces(test_split_pieces) -> list[Score]:
    """Pieces to learn small BPE vocabularies from in unit tests (the pipeline learns on the train split)."""
    return [score for pieces in test_split_pieces.values() for _, score in pieces]


@pytest.fixture(scope="session")
def bpe_tokenizers(training_pieces, tmp_path_factory) -> dict[str, LyriaTokenizer]:
    """Every single-stream tokenizer with a small learned vocabulary."""
    folder = tmp_path_factory.mktemp("bpe-train")
    paths = []
    for i, score in enumerate(training_pieces):
        paths.append(folder / f"{i}.mid")
        score.dump_midi(str(paths[-1]))
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in SINGLE_STREAM:
            tokenizer = build_tokenizer(name, learned_vocab_size=BPE_SIZE)
            tokenizer.learn_vocabulary(paths)
            out[name] = tokenizer
    return out
