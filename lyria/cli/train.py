"""`lyria-train`: compose conf/train.yaml (plus overrides) and train."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lyria.cli import CONF_DIR


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lyria.training.train import train

    metrics, _ = train(cfg)
    return metrics.get("final_val_loss")


if __name__ == "__main__":
    main()
