"""Generation: one sampling loop over a chain of logits processors, with the KV cache."""
