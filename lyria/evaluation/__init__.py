"""Evaluation: metrics of generated music against a reference set, and the leaderboard that ranks runs."""
