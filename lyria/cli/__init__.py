"""Thin Hydra entry points; each composes a config from `conf/` and calls one library function.

`run_cli` wraps each: a mistake the user can fix (a config key, a value, a missing or corrupt file, a full
disk, a diverged run) ends the program with exit status 2 and one line on stderr naming the culprit, not a
traceback. `LYRIA_DEBUG=1` shows the full traceback instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from lyria.config import ConfigError, register_resolvers, unknown_key_message
from lyria.errors import DiskFullError, is_disk_full

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
DEBUG_ENV = "LYRIA_DEBUG"
EXIT_USER_ERROR = 2

register_resolvers()


def _user_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lyria.errors import CheckpointError, NonFiniteLossError

    return (ConfigError, CheckpointError, DiskFullError, NonFiniteLossError, FileNotFoundError, HydraException, OmegaConfBaseException)


def _schema(program: str):
    import lyria.config as config

    return {
        "lyria-train": config.TrainSchema,
        "lyria-generate": config.GenerateSchema,
        "lyria-evaluate": config.EvaluateSchema,
        "lyria-leaderboard": config.LeaderboardSchema,
        "lyria-export": config.ExportSchema,
        "lyria-style-classifier": config.StyleClassifierSchema,
    }.get(program)


def one_line(err: BaseException, program: str | None = None) -> str:
    """The error as one line: Hydra's and OmegaConf's multi-line messages folded, unknown keys explained."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    text = str(err)
    if is_disk_full(err) and not isinstance(err, DiskFullError):  # written by a library (a logger, MidiTok)
        return f"disk full: {err}; files written before are intact: free some space and run again"
    if isinstance(err, ConfigCompositionException):
        match = re.match(r"Could not override '([^']+)'", text)
        if match:  # a key that is not in the composed config (Hydra refuses it before lyria sees it)
            parts = match.group(1).split(".")
            message = unknown_key_message(_schema(program or ""), parts[:-1], parts[-1])
            return f"{message} (to add a key that the config does not have, write +{match.group(1)}=...)"
    if isinstance(err, MissingConfigException):  # an unknown group choice: name it and the options
        text = text.split("Config search path")[0]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) > 1 and lines[1].endswith(":"):
            return f"{lines[0]}; {lines[1]} {', '.join(lines[2:])}"
    if isinstance(err, OmegaConfBaseException):  # a required key (`???`), maybe met through an interpolation
        match = re.search(r"Missing mandatory value: (\S+)", text)
        if match:
            return f"config key '{match.group(1)}' is required: give it on the command line, e.g. {match.group(1)}=..."
    if isinstance(err, OverrideParseException):
        text = f"cannot parse the command-line override: {text}"
    if isinstance(err, FileNotFoundError) and err.filename and str(err.filename) not in text:
        text = f"{text}: {err.filename}"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(("full_key:", "object_type="))]
    return "; ".join(lines) or type(err).__name__


def _report(err: BaseException, program: str) -> None:
    print(f"{program}: error: {one_line(err, program)} (set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


@contextlib.contextmanager
def user_errors(program: str) -> Iterator[None]:
    """Inside a Hydra task: a user error becomes one line on stderr and exit status 2 (Hydra would otherwise
    print its own report around it)."""
    try:
        yield
    except Exception as err:  # noqa: BLE001  (user errors are one line; anything else keeps its traceback)
        if _debugging() or not (isinstance(err, _user_errors()) or is_disk_full(err)):
            raise
        _report(err, program)


def run_cli(hydra_main: Callable[[], Any], program: str) -> Any:
    """Runs a `@hydra.main` function; errors in composing the config (an unknown key or group choice, an
    override that does not parse) become one line on stderr and exit status 2."""
    # Hydra prints its own multi-line report and exits unless told to raise; lyria reports instead
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    with user_errors(program):
        return hydra_main()
