"""Sequence mixers; each `conf/model/mixer/*.yaml` names one class here by `_target_`."""

from lyria.models.mixers.attention import AttentionMixer
from lyria.models.mixers.base import Mixer, MixerContext

__all__ = ["AttentionMixer", "Mixer", "MixerContext"]
