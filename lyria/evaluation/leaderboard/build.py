"""`build_leaderboard(cfg)`: collect the runs under a folder, group and rank them, write the three pages, log the table.

Called by the `lyria-leaderboard` Hydra app and directly by the tests.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from lyria.config import ConfigError, LeaderboardSchema, build, validate
from lyria.evaluation.leaderboard.page import page
from lyria.evaluation.leaderboard.runs import collect_runs, group_runs
from lyria.evaluation.leaderboard.table import Leaderboard, make_leaderboard
from lyria.evaluation.leaderboard.writers import markdown, table_rows, write_csv

log = logging.getLogger(__name__)

OUTPUT_FILES = ("leaderboard.md", "leaderboard.csv", "leaderboard.html")
TABLE_KEY = "leaderboard"


def _log_table(cfg: DictConfig, board: Leaderboard) -> None:
    if not cfg.logger or "_target_" not in cfg.logger:
        return
    logger = build(cfg.logger, "logger")
    if not hasattr(logger, "log_table"):
        log.warning("logger %s cannot log tables; the leaderboard is in the written files only", cfg.logger._target_)
        return
    columns, rows = table_rows(board)
    logger.log_table(key=TABLE_KEY, columns=columns, data=rows)
    logger.experiment.finish()


def build_leaderboard(cfg: DictConfig) -> Leaderboard:
    """Writes leaderboard.md, .csv and .html to `cfg.output_dir` and returns the table they show."""
    cfg = validate(cfg, LeaderboardSchema)  # value rules: lyria.config.VALUE_RULES
    output_dir = Path(cfg.output_dir)
    runs, skips = collect_runs(cfg.runs, cfg.samples_per_run, exclude=[output_dir])
    for skip in skips:
        log.warning("skipped run %s: %s", skip.path, skip.reason)
    if not runs:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in skips[:5])
        raise ConfigError(
            f"runs={cfg.runs!r}: no usable runs under {cfg.runs} (a run is a folder with metrics.json or summary.json beside its resolved "
            f"config); {len(skips)} skipped" + (f": {reasons}" if reasons else "")
        )
    board = make_leaderboard(group_runs(runs, cfg.identity_ignore), cfg, skips)

    output_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path, html_path = (output_dir / name for name in OUTPUT_FILES)
    md.write_text(markdown(board, cfg.runs))
    write_csv(board, csv_path)
    html_path.write_text(page(board, cfg.runs, output_dir))
    _log_table(cfg, board)
    print(
        f"leaderboard: {len(runs)} runs in {len(board.rows)} groups, {len(skips)} skipped; "
        f"ranked by {board.rank_by or '(none)'}, baseline {board.baseline or '(none)'}\n"
        + "\n".join(f"  {path}" for path in (md, csv_path, html_path))
    )
    return board
