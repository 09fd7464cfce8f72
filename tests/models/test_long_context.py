"""Training and cached generation at max_seq_len=4096 on CPU, for the mixers built for long context."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mixer_cases import mixer_config, tiny_lm, variant_id

LONG_CONTEXT = [
    ("attention_sliding", {}),
    ("dilated_conv", {}),
    ("hybrid_attention_conv", {}),
    ("hybrid_attention_conv", {"window": 128}),
    ("hierarchical", {}),
]
LENGTH, GENERATED, TOKENS_PER_BAR = 4096, 48, 24


@pytest.mark.parametrize("name,overrides", LONG_CONTEXT, ids=[variant_id(v) for v in LONG_CONTEXT])
def test_train_step_and_generation_at_4096(name, overrides):
    model = tiny_lm(mixer_config(name, overrides, window=None), vocab=64, d_model=64, n_layers=4, max_seq_len=LENGTH)
    tokens = torch.randint(1, 64, (1, LENGTH), generator=torch.Generator().manual_seed(0))
    bar_ids = torch.arange(LENGTH)[None] // TOKENS_PER_BAR

    model.train()
    logits, _ = model(tokens, bar_ids=bar_ids)
    F.cross_entropy(logits[0, :-1], tokens[0, 1:]).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.embeddings[0].weight.grad[tokens[0, 0]].abs().sum() > 0

    model.eval()
    prompt = LENGTH - GENERATED
    with torch.no_grad():
        logits, cache = model(tokens[:, :prompt], bar_ids=bar_ids[:, :prompt], cache=model.new_cache())
        generated = tokens[:, :prompt]
        steps = [logits[:, -1]]
        for t in range(prompt, LENGTH):
            next_token = steps[-1].argmax(-1, keepdim=True)
            generated = torch.cat([generated, next_token], dim=1)
            logits, cache = model(next_token, bar_ids=bar_ids[:, t : t + 1], cache=cache)
            steps.append(logits[:, -1])
        full, _ = model(generated, bar_ids=bar_ids)
    assert cache.length == LENGTH
    assert (torch.stack(steps[1:], 1) - full[:, prompt:]).abs().max() <= 1e-4
