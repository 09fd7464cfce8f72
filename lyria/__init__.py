"""lyria: a research framework for symbolic music generation with Transformers."""

__version__ = "0.1.0"
