"""`lyria-evaluate generated=DIR [reference=test|DIR] ...`: score generated MIDI against real music."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lyria.cli import CONF_DIR, run_cli, user_errors
from lyria.config import EvaluateSchema, validate


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def _main(cfg: DictConfig) -> None:
    with user_errors("lyria-evaluate"):
        validate(cfg, EvaluateSchema)  # before the heavy imports: a wrong value is reported in a second
        from lyria.evaluation.evaluate import evaluate

        evaluate(cfg)


def main() -> None:
    run_cli(_main, "lyria-evaluate")


if __name__ == "__main__":
    main()
