"""`lyria-leaderboard runs=DIR`: rank every run under DIR into leaderboard.md / .csv / .html."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lyria.cli import CONF_DIR


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="leaderboard")
def main(cfg: DictConfig) -> None:
    from lyria.evaluation.leaderboard import build_leaderboard

    build_leaderboard(cfg)


if __name__ == "__main__":
    main()
