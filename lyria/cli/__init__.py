"""Thin Hydra entry points; each composes a config from `conf/` and calls one library function."""

from pathlib import Path

from lyria.config import register_resolvers

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

register_resolvers()
