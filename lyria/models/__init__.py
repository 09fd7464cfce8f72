"""The language model, its blocks, sequence mixers, positional schemes and conditioning."""
