"""`lyria-leaderboard runs=DIR`: rank every run under DIR into leaderboard.md / .csv / .html."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lyria.cli import CONF_DIR, run_cli, user_errors
from lyria.config import LeaderboardSchema, validate


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="leaderboard")
def _main(cfg: DictConfig) -> None:
    with user_errors("lyria-leaderboard"):
        validate(cfg, LeaderboardSchema)  # before the heavy imports: a wrong value is reported in a second
        from lyria.evaluation.leaderboard import build_leaderboard

        build_leaderboard(cfg)


def main() -> None:
    run_cli(_main, "lyria-leaderboard")


if __name__ == "__main__":
    main()
