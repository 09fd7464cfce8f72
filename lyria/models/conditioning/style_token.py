"""`style_token`: the style is a token of the sequence (BOS, STYLE_k, the piece), in front of every training crop."""

from __future__ import annotations

from lyria.models.conditioning.base import Conditioner


class StyleTokenConditioner(Conditioner):
    """The model reads the style from the style token the data (and the generation prompt) put after BOS.

    Nothing happens inside the model: the token's embedding is the condition. A re-read of a full context
    keeps the leading special tokens, so the style stays in view however long the piece.
    """

    uses_style_token = True
    conditional = True
