"""Reference losses a trained model must beat, computed on exactly the targets the model is scored on."""

from __future__ import annotations

import numpy as np
import torch

from lyria.data.datamodule import IGNORE_INDEX


def unigram_log_probs(train_split, layout, vocab_sizes: list[int]) -> list[np.ndarray]:
    """Per-field log frequencies of the training tokens as framed for the model (add-one smoothed)."""
    counts = [np.ones(v, dtype=np.float64) for v in vocab_sizes]
    for ids, bar_ids, style_id in zip(train_split["ids"], train_split["bar_ids"], train_split["style_id"]):
        framed, _ = layout.frame(np.asarray(ids), np.asarray(bar_ids), style_id)
        framed = framed[1:]  # BOS is never a target
        framed = framed[:, None] if framed.ndim == 1 else framed
        for field, field_counts in enumerate(counts):
            np.add.at(field_counts, framed[:, field], 1.0)
    return [np.log(c / c.sum()) for c in counts]


def unigram_loss(log_probs: list[np.ndarray], loader) -> float:
    """Mean NLL per target step (summed over fields) of the unigram model over a loader's targets."""
    total, count = 0.0, 0
    tables = [torch.from_numpy(lp) for lp in log_probs]
    for batch in loader:
        targets = batch["targets"]
        targets = targets[..., None] if targets.dim() == 2 else targets
        mask = targets[..., 0] != IGNORE_INDEX
        if "loss_mask" in batch:  # the targets the model is scored on (not a re-inserted head)
            mask &= batch["loss_mask"]
        for field, table in enumerate(tables):
            total -= table[targets[..., field][mask]].sum().item()
        count += int(mask.sum())
    return total / max(count, 1)
