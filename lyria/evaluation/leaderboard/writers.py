"""The leaderboard as text: the Markdown page, the CSV table (also the rows logged to a logger), shared wording."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from lyria.evaluation.leaderboard.table import BETTER, DEGENERATE_SEEDS, DIFFERENT, HIGHER, LOWER, ONE_SEED, WORSE, Cell, Leaderboard, interval_flag

VERDICT_MARKS = {BETTER: "▲", WORSE: "▼", DIFFERENT: "≠"}
DIRECTION_ARROWS = {LOWER: "↓", HIGHER: "↑", None: ""}
REFERENCE_LABEL = "real data (reference vs. reference)"


def number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4g}"


def cell_text(cell: Cell | None, min_seeds: int) -> str:
    """`0.123 [0.110, 0.140]† ▲`: mean, interval, interval flag, verdict against the baseline."""
    if cell is None:
        return "–"
    interval = cell.interval
    mark = VERDICT_MARKS.get(cell.verdict, "")
    return f"{number(interval.mean)} [{number(interval.low)}, {number(interval.high)}]{interval_flag(cell, min_seeds)}" + (f" {mark}" if mark else "")


def header(board: Leaderboard, metric: str) -> str:
    arrow = DIRECTION_ARROWS[board.directions.get(metric)]
    return f"{metric} {arrow}".strip()


def explanation(board: Leaderboard) -> list[str]:
    """The sentences that say how to read the table: the same in every format."""
    n_runs = sum(len(row.group.runs) for row in board.rows)
    lines = [f"{n_runs} runs in {len(board.rows)} groups; {len(board.skips)} skipped."]
    if board.rank_by:
        lines.append(f"Ranked by {board.rank_by} ({board.directions[board.rank_by]} is better).")
    lines.append(
        f"Each cell: the mean over seeds (of each seed's mean over its generated pieces, where per-piece values exist) "
        f"and its {board.confidence:.0%} interval from a hierarchical bootstrap (seeds resampled, then pieces within each "
        f"seed; {board.n_resamples} resamples, seed {board.seed}). Run-level metrics are resampled over seeds alone: "
        f"{DEGENERATE_SEEDS} marks those with fewer than {board.min_seeds} seeds, whose interval is close to degenerate; "
        f"{ONE_SEED} marks a single seed, whose interval covers piece-to-piece variation only."
    )
    if board.baseline is not None and board.n_tests == 0:
        lines.append(f"Against the baseline '{board.baseline}': no paired test could be made (see the notes).")
    elif board.baseline is not None:
        lines.append(
            f"Against the baseline '{board.baseline}': {board.test_name}, per piece matched by seed and piece name "
            f"(per seed for run-level metrics); Holm's correction over the {board.n_tests} tests of this table; "
            f"{VERDICT_MARKS[BETTER]} better, {VERDICT_MARKS[WORSE]} worse, {VERDICT_MARKS[DIFFERENT]} different "
            f"(no known direction) at adjusted p < {board.alpha}. Fewer than {board.min_pairs} non-zero pairs: not tested."
        )
    return lines


def _markdown_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(board: Leaderboard, runs_dir: str) -> str:
    head = ["rank", "group", "seeds", *(header(board, m) for m in board.metrics)]
    lines = [f"# Leaderboard: `{runs_dir}`", "", *explanation(board), ""]
    lines += ["| " + " | ".join(_markdown_escape(h) for h in head) + " |", "|" + "|".join(["---:", "---", "---"] + ["---"] * len(board.metrics)) + "|"]
    for row in board.rows:
        cells = [cell_text(row.cells.get(m), board.min_seeds) for m in board.metrics]
        seeds = ", ".join(str(s) for s in row.seeds)
        lines.append("| " + " | ".join([str(row.rank or ""), _markdown_escape(row.group.label), seeds, *cells]) + " |")
    if board.reference:
        lines.append("| " + " | ".join(["", REFERENCE_LABEL, "", *(number(board.reference.get(m)) for m in board.metrics)]) + " |")
    if board.skips:
        lines += ["", "## Skipped runs", "", *(f"- `{skip.path}`: {skip.reason}" for skip in board.skips)]
    if board.notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in board.notes)]
    return "\n".join(lines) + "\n"


def table_rows(board: Leaderboard) -> tuple[list[str], list[list[Any]]]:
    """A flat table (one row per group, then the reference): what the CSV holds and what a logger receives."""
    per_metric = ("", ":ci_low", ":ci_high", ":n_seeds", ":n_pieces", ":p_value", ":p_holm", ":verdict")
    columns = ["kind", "rank", "group", "seeds"] + [f"{m}{suffix}" for m in board.metrics for suffix in per_metric]
    rows = []
    for row in board.rows:
        values: list[Any] = ["model", row.rank, row.group.label, " ".join(str(s) for s in row.seeds)]
        for metric in board.metrics:
            cell = row.cells.get(metric)
            if cell is None:
                values += [None] * len(per_metric)
                continue
            interval, test = cell.interval, cell.test
            values += [
                interval.mean, interval.low, interval.high, interval.n_seeds, interval.n_pieces if cell.per_piece else 0,
                test.p_value if test else None, cell.p_adjusted, cell.verdict or None,
            ]
        rows.append(values)
    if board.reference:
        reference: list[Any] = ["reference", None, REFERENCE_LABEL, ""]
        for metric in board.metrics:
            reference += [board.reference.get(metric)] + [None] * (len(per_metric) - 1)
        rows.append(reference)
    return columns, rows


def write_csv(board: Leaderboard, path: Path) -> None:
    columns, rows = table_rows(board)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
