"""`lyria-style-classifier [data=...] [classifier.hidden=64]`: train or read back the data's style classifier and
print its accuracy on the real test split per style."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lyria.cli import CONF_DIR, run_cli, user_errors
from lyria.config import StyleClassifierSchema, validate

PROGRAM = "lyria-style-classifier"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="style_classifier")
def _main(cfg: DictConfig) -> None:
    with user_errors(PROGRAM):
        validate(cfg, StyleClassifierSchema)  # before the heavy imports: a wrong key is reported in a second
        from lyria.evaluation.style_classifier import run

        run(cfg)


def main() -> None:
    run_cli(_main, PROGRAM)


if __name__ == "__main__":
    main()
