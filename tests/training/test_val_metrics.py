"""Validation perplexity is exp of the epoch's mean loss per token, not the mean of per-batch exp(loss)."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch

from lyria.data.datamodule import collate
from lyria.training.module import LyriaLightningModule, token_loss

VOCAB = 40
EASY = 5


def _batches():
    """A batch the model predicts well (all EASY, which it is biased towards) and a long one it does not."""
    rng = np.random.default_rng(0)
    easy = [{"tokens": np.full(9, EASY), "bar_ids": np.zeros(9, dtype=np.int64), "style_id": 0}]
    hard = [{"tokens": rng.integers(10, VOCAB, size=33), "bar_ids": np.zeros(33, dtype=np.int64), "style_id": 0} for _ in range(3)]
    return [collate(easy, pad_id=0), collate(hard, pad_id=0)]


def test_val_ppl_is_exp_of_the_mean_loss_over_all_targets(one_thread):
    model_cfg = {"mixer": {"_target_": "lyria.models.mixers.AttentionMixer"}, "d_model": 16, "n_layers": 1, "n_heads": 2,
                 "d_ff": 32, "max_seq_len": 64, "dropout": 0.0}
    torch.manual_seed(0)
    module = LyriaLightningModule(model=model_cfg, training={}, vocab_sizes=[VOCAB], num_styles=2, pad_id=0)
    bias = torch.zeros(VOCAB)
    bias[EASY] = 6.0
    module.model.heads[0].register_forward_hook(lambda mod, inp, out: out + bias)
    batches = _batches()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)  # the batches as they are
    logged = trainer.validate(module, dataloaders=loader, verbose=False)[0]

    losses, counts = [], []
    with torch.no_grad():
        for batch in batches:
            logits, _ = module.model(batch["tokens"], bar_ids=batch["bar_ids"])
            loss, _, count = token_loss(logits, batch["targets"])
            losses.append(float(loss))
            counts.append(int(count))
    mean_loss = sum(l * c for l, c in zip(losses, counts)) / sum(counts)
    assert logged["val/loss"] == pytest.approx(mean_loss, rel=1e-5)
    assert logged["val/ppl"] == pytest.approx(math.exp(mean_loss), rel=1e-5)
    # the mean of per-batch perplexities is a different, larger number here
    mean_of_exp = sum(math.exp(l) for l in losses) / len(losses)
    assert abs(mean_of_exp - logged["val/ppl"]) > 0.05 * logged["val/ppl"]
