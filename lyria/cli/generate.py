"""`lyria-generate ckpt=PATH n=8 ...`: sample pieces from a checkpoint and write them as MIDI, MusicXML, WAV and PNG."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lyria.cli import CONF_DIR


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="generate")
def main(cfg: DictConfig) -> None:
    from lyria.generation.generate import generate

    generate(cfg)


if __name__ == "__main__":
    main()
