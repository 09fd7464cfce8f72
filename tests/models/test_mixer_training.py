"""Every mixer config learns: the loss on real Bach chorales at least halves within a fixed step budget."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mixer_cases import mixer_config

from lyria.data.prepare import prepare_data
from lyria.data.sources import Music21CorpusSource
from lyria.tokenizers import LyriaTokenizer

CROP, BATCH, STEPS = 96, 8, 40


@pytest.fixture(scope="module")
def chorale_crops(tmp_path_factory):
    """Non-overlapping (ids, bar_ids) crops of CROP + 1 tokens from a few tokenized chorales."""
    tokenizer = LyriaTokenizer()
    source = Music21CorpusSource([{"name": "bach", "composer": "bach", "extensions": ["mxl"]}])
    data = prepare_data(source, tokenizer, tmp_path_factory.mktemp("bach-cache"), max_pieces_per_style=6, num_proc=1)
    ids, bars = [], []
    for row in data.splits["train"]:
        for start in range(0, len(row["ids"]) - CROP - 1, CROP + 1):
            ids.append(row["ids"][start : start + CROP + 1])
            bars.append(row["bar_ids"][start : start + CROP + 1])
    assert len(ids) >= 2 * BATCH
    return tokenizer.vocab_size, tokenizer.pad_id, torch.tensor(ids), torch.tensor(bars)


@pytest.mark.slow
def test_loss_falls_on_chorales(mixer_variant, mixer_cfg, chorale_crops):
    from lyria.models.lm import LyriaLM

    vocab, pad_id, ids, bars = chorale_crops
    torch.manual_seed(0)
    cfg = mixer_config(*mixer_variant, window=None)  # the config's own window: training is what it is for
    model = LyriaLM(
        [vocab], cfg, d_model=64, n_layers=2, n_heads=4, d_ff=128, dropout=0.0, max_seq_len=CROP, pad_id=pad_id
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss_on(rows: torch.Tensor) -> torch.Tensor:
        logits, _ = model(ids[rows, :-1], bar_ids=bars[rows, :-1])
        return F.cross_entropy(logits.reshape(-1, vocab), ids[rows, 1:].reshape(-1), ignore_index=pad_id)

    held = torch.arange(BATCH)  # a fixed batch, scored before and after
    with torch.no_grad():
        before = loss_on(held).item()
    order = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        loss = loss_on(torch.randint(0, len(ids), (BATCH,), generator=order))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = loss_on(held).item()
    assert after < 0.5 * before, f"loss {before:.2f} -> {after:.2f} in {STEPS} steps"
