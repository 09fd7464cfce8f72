"""Error types for faults a user can fix (a bad file, a full disk, a diverged run), kept free of heavy imports
so the command-line entry points can catch them and print one line (`lyria.cli.run_cli`).

Configuration mistakes are `lyria.config.ConfigError`.
"""

from __future__ import annotations

import errno


class CheckpointError(ValueError):
    """A checkpoint (or exported model folder) that is missing, truncated, corrupt or not lyria's; names the file."""


class DiskFullError(OSError):
    """The disk filled up while writing a file; the message names the file and says what was kept intact."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss (or weights); the run stops without writing a checkpoint of it."""


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` (or what caused it) is an OSError for a full disk or an exceeded quota."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        err = err.__cause__ or err.__context__
    return False
