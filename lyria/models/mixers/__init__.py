"""Sequence mixers; each `conf/model/mixer/*.yaml` names one class here by `_target_`."""

from lyria.models.mixers.attention import AttentionMixer
from lyria.models.mixers.base import Mixer, MixerContext
from lyria.models.mixers.conv import DilatedConvMixer
from lyria.models.mixers.hierarchical import HierarchicalMixer
from lyria.models.mixers.hybrid import HybridMixer
from lyria.models.mixers.relative import RelativeAttentionMixer

__all__ = [
    "AttentionMixer",
    "DilatedConvMixer",
    "HierarchicalMixer",
    "HybridMixer",
    "Mixer",
    "MixerContext",
    "RelativeAttentionMixer",
]
