"""Every conf/tokenizer YAML builds, saves and loads; settings MidiTok would ignore or get wrong fail at start-up."""

from __future__ import annotations

import numpy as np
import pytest
from symusic import Note, Score, TimeSignature, Track
from tokenizer_support import TOKENIZER_NAMES, build_tokenizer, is_compound

from lyria.tokenizers import LyriaTokenizer, TokenizerConfigError
from lyria.tokenizers.base import PieceTooLongError


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_every_yaml_builds_saves_and_loads(name, tmp_path, test_split_pieces):
    tokenizer = build_tokenizer(name)
    assert tokenizer.vocab_sizes[0] > tokenizer.num_special and tokenizer.is_compound == is_compound(name)
    loaded = LyriaTokenizer.load(tokenizer.save(tmp_path))
    assert loaded.settings() == tokenizer.settings() and loaded.vocab_sizes == tokenizer.vocab_sizes
    _, score = test_split_pieces["monteverdi_madrigal"][0]
    np.testing.assert_array_equal(loaded.encode(score).ids, tokenizer.encode(score).ids)


@pytest.mark.parametrize(
    "name,overrides,message",
    [
        ("remi", {"config.use_velocitys": True}, r"unknown tokenizer.config key\(s\) \['use_velocitys'\] for REMI"),
        ("tsd", {"config.max_bar_embedding": 10}, r"\['max_bar_embedding'\] for TSD"),
        ("structured", {"config.use_time_signatures": True}, r"Structured does not support tokenizer.config \['use_time_signatures'\]"),
        ("cpword", {"config.use_rests": True}, "CPWord cannot combine tokenizer.config.use_rests and use_time_signatures"),
        ("octuple", {"learned_vocab_size": 2000}, "MidiTok cannot learn a vocabulary for the multi-vocabulary tokenizer Octuple"),
        ("remi", {"learned_vocab_size": 100}, r"learned_vocab_size=100 must be larger than the base vocabulary of REMI"),
        ("remi", {"config.special_tokens": ["PAD"]}, "special_tokens is fixed by lyria"),
    ],
)
def test_settings_that_cannot_work_are_named(name, overrides, message):
    with pytest.raises(TokenizerConfigError, match=message):
        build_tokenizer(name, **overrides)


def test_octuple_refuses_to_cut_a_long_piece():
    score = Score(480)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    track = Track("t", 0, False)
    for bar in range(12):
        track.notes.append(Note(bar * 1920, 480, 60, 80))
    score.tracks.append(track)
    with pytest.raises(PieceTooLongError, match=r"12 bars.*max_bar_embedding"):
        build_tokenizer("octuple", **{"config.max_bar_embedding": 8}).encode(score)
    assert len(build_tokenizer("octuple").encode(score)) == 12
