"""Reserved vocabulary: specials come first, in a fixed order; adding a style renumbers nothing."""

from __future__ import annotations

import pytest

from lyria.tokenizers import LyriaTokenizer, TokenizerConfigError


def test_specials_are_laid_out_first_in_a_fixed_order():
    tok = LyriaTokenizer(num_style_slots=4)
    ids = [tok.pad_id, tok.bos_id, tok.eos_id, tok.mask_id, tok.fill_id, tok.sep_id]
    assert ids == list(range(6))
    assert [tok.style_token_id(slot) for slot in range(4)] == [6, 7, 8, 9]
    assert tok.num_special == 10


def test_adding_a_style_renumbers_nothing(tmp_path):
    tok = LyriaTokenizer(num_style_slots=4, styles=["bach", "essen"])
    vocab_before = dict(tok.tok.vocab)
    assert tok.add_style("palestrina") == 2
    assert tok.add_style("bach") == 0  # idempotent
    assert dict(tok.tok.vocab) == vocab_before
    assert tok.style_token_id("palestrina") == tok.style_token_id(2)
    tok.save(tmp_path)
    loaded = LyriaTokenizer.load(tmp_path)
    assert loaded.styles == ["bach", "essen", "palestrina"]
    assert dict(loaded.tok.vocab) == vocab_before


def test_running_out_of_style_slots_is_a_clear_error():
    tok = LyriaTokenizer(num_style_slots=2, styles=["a"])  # the last slot is reserved for "no style"
    assert tok.null_style_slot == 1
    with pytest.raises(TokenizerConfigError, match="num_style_slots=2"):
        tok.add_style("b")


def test_persisted_slots_are_kept_and_new_styles_take_free_ones(tmp_path):
    tok = LyriaTokenizer(num_style_slots=6, styles={"jigs": 2, "airs": 0})
    assert tok.add_style("reels") == 1
    assert tok.styles == ["airs", "reels", "jigs"]
    with pytest.raises(TokenizerConfigError, match="belongs to 'jigs'"):
        tok.add_style("hornpipes", 2)
    with pytest.raises(TokenizerConfigError, match="usable slots"):
        tok.add_style("hornpipes", 5)
    tok.save(tmp_path)
    assert LyriaTokenizer.load(tmp_path).style_slots == {"airs": 0, "reels": 1, "jigs": 2}


def test_loading_a_missing_or_foreign_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        LyriaTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"tokenization": "REMI"}')
    with pytest.raises(ValueError, match="not a lyria tokenizer file"):
        LyriaTokenizer.load(tmp_path)
