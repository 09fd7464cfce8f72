"""NLL per note: the validation likelihood that compares across tokenizers (summed NLL / notes in the targets)."""

from __future__ import annotations

import math

import datasets
import lightning as L
import numpy as np
import pytest
import torch
from tokenizer_support import SINGLE_STREAM, TOKENIZER_NAMES, build_tokenizer

from lyria.data.datamodule import EvalWindows, SequenceLayout, collate
from lyria.training.module import LyriaLightningModule, token_loss


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_note_counts_count_every_note_once(name, test_split_pieces):
    tokenizer = build_tokenizer(name)
    counts = tokenizer.note_counts()
    _, score = test_split_pieces["palestrina_mass"][0]
    ids = tokenizer.encode(score).ids
    notes = ids[:, tokenizer.note_field] if ids.ndim == 2 else ids
    assert counts[notes].sum() == tokenizer.decode(ids).note_num()


@pytest.mark.parametrize("name", SINGLE_STREAM[:1])
def test_learned_tokens_carry_their_notes(name, bpe_tokenizers, test_split_pieces):
    tokenizer = bpe_tokenizers[name]
    counts = tokenizer.note_counts()
    assert counts.max() > 1  # some merged tokens hold several notes
    _, score = test_split_pieces["bach_chorale"][0]
    ids = tokenizer.encode(score).ids
    assert counts[ids].sum() == tokenizer.decode(ids).note_num()


@pytest.mark.parametrize("name", ["tsd", "octuple"])
def test_validation_logs_nll_and_bits_per_note(name, test_split_pieces):
    tokenizer = build_tokenizer(name)
    rows = [tokenizer.encode(score) for _, score in test_split_pieces["irish_oneills"]]
    split = datasets.Dataset.from_dict(
        {"ids": [r.ids.tolist() for r in rows], "bar_ids": [r.bar_ids.tolist() for r in rows], "style_id": [0] * len(rows), "n_tokens": [len(r) for r in rows]}
    )
    layout = SequenceLayout(bos=tokenizer.step_ids(tokenizer.bos_id), eos=tokenizer.step_ids(tokenizer.eos_id), pad_id=tokenizer.pad_id)
    windows = EvalWindows(split, layout, max_len=65)
    loader = torch.utils.data.DataLoader(windows, batch_size=4, collate_fn=lambda e: collate(e, tokenizer.pad_id))
    model_cfg = {"mixer": {"_target_": "lyria.models.mixers.AttentionMixer"}, "d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64, "max_seq_len": 64, "dropout": 0.0}
    module = LyriaLightningModule(
        model=model_cfg, training={}, vocab_sizes=tokenizer.vocab_sizes, num_styles=4, pad_id=tokenizer.pad_id,
        note_counts=tokenizer.note_counts().tolist(), note_field=tokenizer.note_field,
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    logged = trainer.validate(module, dataloaders=loader, verbose=False)[0]

    nll = notes = 0.0
    counts = torch.from_numpy(tokenizer.note_counts())
    with torch.no_grad():
        for batch in loader:
            logits, _ = module.model(batch["tokens"], bar_ids=batch["bar_ids"])
            loss, _, count = token_loss(logits, batch["targets"])
            nll += float(loss) * int(count)
            targets = batch["targets"] if batch["targets"].dim() == 2 else batch["targets"][..., tokenizer.note_field]
            notes += float(counts[targets[targets >= 0]].sum())
    assert notes == sum(tokenizer.decode(r.ids).note_num() for r in rows)
    assert logged["val/nll_per_note"] == pytest.approx(nll / notes, rel=1e-4)
    assert logged["val/bits_per_note"] == pytest.approx(nll / notes / math.log(2), rel=1e-4)
    assert np.isfinite(logged["val/loss"])
