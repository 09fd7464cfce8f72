"""Mixer variants enumerated from conf/model/mixer/, tiny models built from them, and musical bar layouts."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from lyria.models.lm import LyriaLM

MIXER_DIR = Path(__file__).resolve().parents[2] / "conf" / "model" / "mixer"
MIXER_NAMES = sorted(p.stem for p in MIXER_DIR.glob("*.yaml"))
# Config values tested besides the YAMLs as written: the other hybrid mode.
EXTRA_VARIANTS = [("hybrid_attention_conv", {"mode": "alternating"})]
MIXER_VARIANTS = [(name, {}) for name in MIXER_NAMES] + EXTRA_VARIANTS
# Small enough that 100 decoding steps cross several window edges.
TEST_WINDOW = 12


def variant_id(variant: tuple[str, dict]) -> str:
    name, overrides = variant
    return name + "".join(f"-{k}={v}" for k, v in overrides.items())


def mixer_config(name: str, overrides: dict | None = None, window: int | None = TEST_WINDOW) -> dict:
    """The YAML as a plain dict, with overrides; a set window is shrunk to `window` for short tests."""
    cfg = OmegaConf.to_container(OmegaConf.load(MIXER_DIR / f"{name}.yaml"), resolve=True)
    if window is not None and cfg.get("window") is not None:
        cfg["window"] = window
    cfg.update(overrides or {})
    return cfg


def tiny_lm(cfg: dict, vocab: int = 40, d_model: int = 32, n_layers: int = 4, max_seq_len: int = 512) -> LyriaLM:
    torch.manual_seed(0)
    model = LyriaLM(
        [vocab], cfg, d_model=d_model, n_layers=n_layers, n_heads=4, d_ff=2 * d_model, dropout=0.0, max_seq_len=max_seq_len
    )
    return model.eval()


def bar_layout(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """(B, T) bar ids with bars of 2..7 tokens, different per sequence, starting at a mid-piece bar."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        ids, bar = [], int(torch.randint(0, 30, (1,), generator=gen))
        while len(ids) < length:
            ids += [bar] * int(torch.randint(2, 8, (1,), generator=gen))
            bar += int(torch.randint(1, 3, (1,), generator=gen))  # an empty bar now and then
        rows.append(ids[:length])
    return torch.tensor(rows)
