"""The leaderboard: runs grouped by config over seeds, bootstrap intervals, paired tests, Markdown/CSV/HTML pages."""

from lyria.evaluation.leaderboard.build import build_leaderboard

__all__ = ["build_leaderboard"]
