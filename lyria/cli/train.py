"""`lyria-train`: compose conf/train.yaml (plus overrides) and train."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lyria.cli import CONF_DIR, run_cli, user_errors
from lyria.config import TrainSchema, validate


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    with user_errors("lyria-train"):
        validate(cfg, TrainSchema)  # before the heavy imports: a wrong value is reported in a second
        from lyria.training.train import train

        metrics, _ = train(cfg)
    return metrics.get("final_val_loss")


def main() -> None:
    run_cli(_main, "lyria-train")


if __name__ == "__main__":
    main()
