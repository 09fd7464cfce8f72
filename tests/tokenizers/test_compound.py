"""Compound tokens through the model and the sampler: every mixer, KV cache equal to a full pass; samples decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tokenizer_support import TOKENIZER_NAMES, build_tokenizer, is_compound

from lyria.cli import CONF_DIR
from lyria.generation.pieces import decode_or_repair
from lyria.generation.processors import GrammarMask, SpecialTokenMask, Temperature, TopP
from lyria.generation.sampler import Limits, Sampler
from lyria.models.lm import LyriaLM

MIXERS = sorted(p.stem for p in (Path(CONF_DIR) / "model" / "mixer").glob("*.yaml"))
COMPOUND = [n for n in TOKENIZER_NAMES if is_compound(n)]
STEPS = 40


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test here runs single-threaded (see the shared `one_thread` fixture)."""


def tiny_model(tokenizer, mixer: str = "attention_rope") -> LyriaLM:
    torch.manual_seed(0)
    cfg = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "model" / "mixer" / f"{mixer}.yaml"), resolve=True)
    if cfg.get("window") is not None:
        cfg["window"] = 8  # short enough that the test crosses window edges
    return LyriaLM(
        tokenizer.vocab_sizes, cfg, d_model=32, n_layers=2, n_heads=4, d_ff=64, dropout=0.0, max_seq_len=128,
        num_styles=tokenizer.num_style_slots, pad_id=tokenizer.pad_id,
    ).eval()


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("name", COMPOUND)
def test_compound_steps_through_every_mixer_with_the_cache(name, mixer, test_split_pieces):
    tokenizer = build_tokenizer(name)
    _, score = test_split_pieces["bach_chorale"][0]
    seq = tokenizer.encode(score)
    assert len(seq) >= STEPS
    tokens = torch.from_numpy(seq.ids[:STEPS])[None]
    bars = torch.from_numpy(seq.bar_ids[:STEPS].astype(np.int64))[None]
    model = tiny_model(tokenizer, mixer)
    with torch.no_grad():
        full, _ = model(tokens, bar_ids=bars)
        cache, stepped = model.new_cache(), []
        for t in range(tokens.shape[1]):
            logits, cache = model(tokens[:, t : t + 1], bar_ids=bars[:, t : t + 1], cache=cache)
            stepped.append(logits)
    assert isinstance(full, list) and len(full) == len(tokenizer.vocab_sizes)
    for field, field_logits in enumerate(full):
        assert field_logits.shape == (1, STEPS, tokenizer.vocab_sizes[field])
        incremental = torch.cat([s[field] for s in stepped], dim=1)
        torch.testing.assert_close(incremental, field_logits, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_untrained_model_samples_decode_under_the_grammar(name):
    tokenizer = build_tokenizer(name)
    compound = tokenizer.is_compound
    processors = [
        SpecialTokenMask(),
        GrammarMask(),
        Temperature(1.0, fields={"Pitch": 1.2} if compound else None),
        TopP(0.98, fields={"Duration": 0.9} if compound else None),
    ]
    sampler = Sampler(tiny_model(tokenizer), tokenizer, processors)
    results = sampler.generate(tokenizer.step_ids(tokenizer.bos_id)[None], [3, 4, 5], Limits(max_new_tokens=60))
    for result in results:
        assert result.ids.shape[1:] == (len(tokenizer.vocab_sizes),) if tokenizer.is_compound else result.ids.ndim == 1
        np.testing.assert_array_equal(result.bar_ids, tokenizer.bar_ids(result.ids))
        score, repaired = decode_or_repair(tokenizer, result.ids)
        assert score.note_num() > 0 and repaired is None
