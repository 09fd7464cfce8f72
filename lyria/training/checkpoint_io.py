"""How Lightning writes checkpoints here: atomically (temporary file, fsync, rename) and never of a broken model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lyria.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` into a temporary file beside the target, flushed and fsynced, then renamed over it.

    A crash, a kill or a full disk during the write leaves the previous checkpoint intact; a full disk
    raises `lyria.errors.DiskFullError` naming the file. Every trainer config uses it (`trainer.plugins`).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_write(Path(path), lambda handle: torch.save(checkpoint, handle), what="checkpoint")
