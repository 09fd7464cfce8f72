"""MidiTok tokenizers built from config, with reserved special tokens and bar ids."""

from lyria.tokenizers.base import LyriaTokenizer, TokenizerConfigError, TokSequence

__all__ = ["LyriaTokenizer", "TokenizerConfigError", "TokSequence"]
