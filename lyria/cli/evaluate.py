"""`lyria-evaluate generated=DIR [reference=test|DIR] ...`: score generated MIDI against real music."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lyria.cli import CONF_DIR


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from lyria.evaluation.evaluate import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
