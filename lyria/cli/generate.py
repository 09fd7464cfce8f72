"""`lyria-generate ckpt=PATH n=8 ...`: sample pieces from a checkpoint and write them as MIDI, MusicXML, WAV and PNG."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lyria.cli import CONF_DIR, run_cli, user_errors
from lyria.config import GenerateSchema, validate


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="generate")
def _main(cfg: DictConfig) -> None:
    with user_errors("lyria-generate"):
        validate(cfg, GenerateSchema)  # before the heavy imports: a wrong value is reported in a second
        from lyria.generation.generate import generate

        generate(cfg)


def main() -> None:
    run_cli(_main, "lyria-generate")


if __name__ == "__main__":
    main()
