"""Helpers the tokenizer tests import: tokenizers enumerated from conf/tokenizer/, the corpus styles."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from lyria.cli import CONF_DIR
from lyria.tokenizers import LyriaTokenizer

TOKENIZER_DIR = Path(CONF_DIR) / "tokenizer"
TOKENIZER_NAMES = sorted(p.stem for p in TOKENIZER_DIR.glob("*.yaml"))
DATA_CONFIG = OmegaConf.load(Path(CONF_DIR) / "data" / "music21_multistyle.yaml")
STYLES = [s["name"] for s in DATA_CONFIG.source.styles]
# Round trips and bar tracking run on this many test-split pieces of each style (the benchmark does more).
PIECES_PER_STYLE = 3
BPE_SIZE = 600


def build_tokenizer(name: str, **overrides) -> LyriaTokenizer:
    """The YAML's tokenizer with dotted-key overrides, built directly so its own errors surface."""
    cfg = OmegaConf.load(TOKENIZER_DIR / f"{name}.yaml")
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    kwargs.pop("_target_")
    return LyriaTokenizer(**kwargs)


def is_compound(name: str) -> bool:
    return OmegaConf.load(TOKENIZER_DIR / f"{name}.yaml").miditok_class in ("miditok.CPWord", "miditok.Octuple")


SINGLE_STREAM = [n for n in TOKENIZER_NAMES if not is_compound(n)]
