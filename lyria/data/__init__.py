"""Data: sources -> Score cache -> token ids (Arrow) -> Lightning DataModule."""
