"""Learned vocabularies (BPE): trained on the training split only, cached by their settings, stored with the data."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from lyria.tokenizers.base import TOKENIZER_FILE, LyriaTokenizer

log = logging.getLogger(__name__)


def vocabulary_key(tokenizer: LyriaTokenizer, train_pieces: list[dict]) -> str:
    """What a learned vocabulary depends on: the base settings, its size, and which music it was trained on."""
    pieces = sorted((p["piece_id"], p["content_hash"]) for p in train_pieces)
    return hashlib.sha1(json.dumps([tokenizer.settings(), pieces], sort_keys=True, default=str).encode()).hexdigest()[:16]


def learn_or_load(tokenizer: LyriaTokenizer, train_pieces: list[dict], cache_dir: str | Path) -> Path:
    """Gives `tokenizer` its learned vocabulary: from `cache_dir/<key>/` if there, else trained and stored there.

    `train_pieces` are the training split's rows (`piece_id`, `content_hash`, `score_path`), never
    validation or test pieces, so held-out likelihoods are not flattered by merges fitted to them.
    """
    if not train_pieces:
        raise ValueError(f"tokenizer.learned_vocab_size={tokenizer.learned_vocab_size} needs training pieces; the training split is empty")
    folder = Path(cache_dir) / vocabulary_key(tokenizer, train_pieces)
    if (folder / TOKENIZER_FILE).is_file():
        tokenizer.use_learned_vocabulary(LyriaTokenizer.load(folder))
        return folder
    started = time.perf_counter()
    tokenizer.learn_vocabulary([p["score_path"] for p in train_pieces])
    staging = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    tokenizer.save(staging)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    log.info(
        "learned a %d-token vocabulary (%s) on %d training pieces in %.1f s -> %s",
        tokenizer.vocab_sizes[0],
        tokenizer.name,
        len(train_pieces),
        time.perf_counter() - started,
        folder,
    )
    return folder
