"""Evaluation: metric families of generated music against a reference set (importing the package registers
them), versioned assets, reports; and the leaderboard that ranks runs (`lyria.evaluation.leaderboard`)."""

from lyria.evaluation import coherence, continuation, distances, diversity, features, memorization, mode_collapse, style
from lyria.evaluation.base import FAMILIES, PIECE_METRICS, EvalInputs, Family, FamilyResult, PieceSet

__all__ = [
    "FAMILIES",
    "PIECE_METRICS",
    "EvalInputs",
    "Family",
    "FamilyResult",
    "PieceSet",
    "coherence",
    "continuation",
    "distances",
    "diversity",
    "features",
    "memorization",
    "mode_collapse",
    "style",
]
