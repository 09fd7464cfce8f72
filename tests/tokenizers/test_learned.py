"""Learned vocabularies (BPE): trained on the training split only, cached by their settings, stored with the data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizer_support import build_tokenizer

from lyria.data.prepare import prepare_data
from lyria.data.sources import MidiFolderSource
from lyria.tokenizers import LyriaTokenizer
from lyria.tokenizers.base import _transpose_token


def test_learned_transposition_maps_to_the_transposed_tokens(bpe_tokenizers):
    tokenizer = bpe_tokenizers["remi"]
    table = tokenizer.transposition_table(3)
    mapped = np.flatnonzero(table >= 0)
    assert 0.3 < len(mapped) / len(table) < 1.0  # merges of transposed sequences exist only in part
    for token_id in mapped:
        assert tokenizer.tokens_of(table[token_id]) == [_transpose_token(t, 3) for t in tokenizer.tokens_of(token_id)]


def test_prepare_learns_on_the_training_split_only_and_caches(midi_folder, tmp_path, monkeypatch):
    learned_on: list[list[str]] = []
    original = LyriaTokenizer.learn_vocabulary

    def recording(self, score_paths):
        learned_on.append([str(p) for p in score_paths])
        return original(self, score_paths)

    monkeypatch.setattr(LyriaTokenizer, "learn_vocabulary", recording)
    source = MidiFolderSource(str(midi_folder))
    cache = tmp_path / "cache"
    tokenizer = build_tokenizer("tsd", learned_vocab_size=400)
    prepared = prepare_data(source, tokenizer, cache, val_fraction=0.2, test_fraction=0.2, num_proc=1)
    assert tokenizer.is_trained and len(learned_on) == 1
    piece_of = {str(p.with_suffix(".mid")): json.loads(p.read_text())["piece_id"] for p in (cache / "scores").rglob("*.json") if not p.name.endswith(".skip.json")}
    assert sorted(piece_of[p] for p in learned_on[0]) == sorted(prepared.splits["train"]["piece_id"])
    assert max(max(ids) for ids in prepared.splits["train"]["ids"]) >= len(tokenizer.tok.vocab)  # learned ids in use

    # a fresh tokenizer with the same settings: the token cache and its stored vocabulary, no training
    again = build_tokenizer("tsd", learned_vocab_size=400)
    cached = prepare_data(source, again, cache, val_fraction=0.2, test_fraction=0.2, num_proc=1)
    assert cached.report["cache_hit"] and len(learned_on) == 1
    assert again.is_trained and again.tok._model.get_vocab() == tokenizer.tok._model.get_vocab()
    # another vocabulary size is another vocabulary and another dataset
    smaller = build_tokenizer("tsd", learned_vocab_size=380)
    rebuilt = prepare_data(source, smaller, cache, val_fraction=0.2, test_fraction=0.2, num_proc=1)
    assert rebuilt.cache_path != prepared.cache_path and len(learned_on) == 2 and smaller.vocab_sizes == [380]
    assert len(list((cache / "vocab").iterdir())) == 2


def test_a_saved_learned_vocabulary_encodes_the_same(bpe_tokenizers, test_split_pieces, tmp_path):
    tokenizer = bpe_tokenizers["structured"]
    _, score = test_split_pieces["american_fiddle"][0]
    loaded = LyriaTokenizer.load(tokenizer.save(tmp_path))
    np.testing.assert_array_equal(loaded.encode(score).ids, tokenizer.encode(score).ids)
    assert loaded.settings() == tokenizer.settings() and loaded.name == "Structured+BPE"
    assert Path(tmp_path / "tokenizer.json").is_file()
