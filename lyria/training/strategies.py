"""Distributed strategies that need to know the model's structure (FSDP wraps whole Transformer blocks)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy

from lyria.models.lm import Block


class BlockFSDPStrategy(FSDPStrategy):
    """FSDP with one shard unit per `Block`; optionally recomputes each block's activations in backward.

    Checkpoints are written as one full state dict, so they load like any other lyria checkpoint.
    """

    def __init__(self, sharding_strategy: str = "FULL_SHARD", activation_checkpointing: bool = False, **kwargs: Any) -> None:
        super().__init__(
            auto_wrap_policy={Block},
            activation_checkpointing_policy={Block} if activation_checkpointing else None,
            sharding_strategy=sharding_strategy,
            state_dict_type="full",
            **kwargs,
        )
