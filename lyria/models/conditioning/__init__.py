"""Conditioning schemes: how a condition (a style) enters the model; each `conf/model/conditioning/*.yaml`
names one class here by `_target_` (see `base` for the hooks, the reserved "no style" slot and dropout)."""

from lyria.models.conditioning.adaln import AdaLNConditioner
from lyria.models.conditioning.base import Conditioner
from lyria.models.conditioning.cross_attention import CrossAttentionConditioner
from lyria.models.conditioning.output import StyleOutput
from lyria.models.conditioning.style_embedding import StyleEmbeddingConditioner
from lyria.models.conditioning.style_token import StyleTokenConditioner

__all__ = [
    "AdaLNConditioner",
    "Conditioner",
    "CrossAttentionConditioner",
    "StyleEmbeddingConditioner",
    "StyleOutput",
    "StyleTokenConditioner",
]
