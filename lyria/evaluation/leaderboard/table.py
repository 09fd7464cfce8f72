"""The leaderboard table: one row per config group, one cell per metric with its mean, bootstrap interval and
paired test against the baseline group, ranked by one metric in its known direction."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
from tqdm import tqdm

from lyria.config import ConfigError
from lyria.evaluation.leaderboard.runs import Group, Run, Skip, matches
from lyria.evaluation.leaderboard.stats import TEST_NAME, Interval, PairedTest, hierarchical_bootstrap, holm, min_pairs_for, paired_test

LOWER, HIGHER = "lower", "higher"
BETTER, WORSE, DIFFERENT = "better", "worse", "different"


@dataclass(frozen=True)
class Directions:
    """Which way is better for a metric: exact names or glob patterns; the most specific match wins."""

    lower: tuple[str, ...]
    higher: tuple[str, ...]

    def of(self, metric: str) -> str | None:
        """LOWER, HIGHER or None; an exact name beats any pattern, then the most literal characters win."""
        candidates = [(pattern, LOWER) for pattern in self.lower] + [(pattern, HIGHER) for pattern in self.higher]
        found = [((pattern == metric, len(pattern.replace("*", ""))), pattern, d) for pattern, d in candidates if matches(metric, [pattern])]
        if not found:
            return None
        best = max(specificity for specificity, _, _ in found)
        winners = {direction: pattern for specificity, pattern, direction in found if specificity == best}
        if len(winners) > 1:
            raise ConfigError(
                f"metric '{metric}' matches '{winners[LOWER]}' in lower_is_better and '{winners[HIGHER]}' in "
                "higher_is_better equally: name it exactly in one of them"
            )
        return next(iter(winners))


@dataclass
class Cell:
    interval: Interval
    # True: resampled over seeds and pieces; False: over seeds only (a run-level metric).
    per_piece: bool
    test: PairedTest | None = None
    p_adjusted: float | None = None
    verdict: str = ""


@dataclass
class Row:
    group: Group
    cells: dict[str, Cell]
    rank: int | None = None

    @property
    def seeds(self) -> list[Any]:
        return [run.seed for run in self.group.runs]


@dataclass
class Leaderboard:
    """Everything the writers show: ranked rows, the column order, directions, the reference row and notes."""

    rows: list[Row]
    metrics: list[str]
    directions: dict[str, str | None]
    reference: dict[str, float]
    rank_by: str | None
    baseline: str | None
    confidence: float
    n_resamples: int
    seed: int
    alpha: float
    min_seeds: int
    min_pairs: int
    n_tests: int
    test_name: str = TEST_NAME
    skips: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _values(run: Run, metric: str) -> list[float] | None:
    if metric in run.per_piece:
        return list(run.per_piece[metric].values())
    if metric in run.metrics:
        return [run.metrics[metric]]
    return None


def select_metrics(runs: Iterable[Run], include: Iterable[str], exclude: Iterable[str], rank_by: str | None) -> list[str]:
    """Columns: the metrics matching `include` (in its order, each by first appearance), minus `exclude`."""
    seen = list(dict.fromkeys(name for run in runs for name in (*run.metrics, *run.per_piece)))
    include, exclude = list(include), list(exclude)
    chosen = [m for pattern in include for m in seen if matches(m, [pattern]) and not matches(m, exclude)]
    chosen = list(dict.fromkeys(chosen))
    if rank_by is not None:
        if rank_by not in seen:
            raise ConfigError(f"rank_by={rank_by} is not a metric of any run; available: {sorted(seen)}")
        chosen = [rank_by] + [m for m in chosen if m != rank_by]
    return chosen


def _cell(group: Group, metric: str, n_resamples: int, confidence: float, seed: int, notes: list[str]) -> Cell | None:
    runs = [run for run in group.runs if _values(run, metric) is not None]
    if not runs:
        return None
    per_piece = all(metric in run.per_piece for run in runs)
    if per_piece:
        samples = [_values(run, metric) for run in runs]
    else:
        if any(metric in run.per_piece for run in runs):
            notes.append(f"{group.label}: '{metric}' has per-piece values in some runs only; resampled over seeds alone")
        samples = [[float(np.mean(_values(run, metric)))] for run in runs]
    # Each cell gets its own stream from (seed, group, metric): adding a group or a metric changes no other cell.
    rng = np.random.default_rng([seed, zlib.crc32(f"{group.key}/{metric}".encode())])
    return Cell(interval=hierarchical_bootstrap(samples, n_resamples, confidence, rng), per_piece=per_piece)


def _rank(rows: list[Row], rank_by: str, direction: str) -> list[Row]:
    sign = 1.0 if direction == LOWER else -1.0
    ranked = sorted(rows, key=lambda r: (rank_by not in r.cells, sign * r.cells[rank_by].interval.mean if rank_by in r.cells else 0.0, r.group.label))
    for position, row in enumerate(ranked, start=1):
        row.rank = position if rank_by in row.cells else None
    return ranked


def _find_baseline(rows: list[Row], baseline: str) -> Row:
    settings = baseline.split()
    found = [row for row in rows if row.group.label == baseline or all(row.group.describes(s) for s in settings)]
    if len(found) != 1:
        labels = [row.group.label for row in rows]
        what = "matches no group" if not found else f"matches {len(found)} groups ({[r.group.label for r in found]})"
        raise ConfigError(f"baseline='{baseline}' {what}; give one group's label or overrides, e.g. one of {labels}")
    return found[0]


def _by_seed(group: Group, notes: list[str]) -> dict[Any, Run]:
    runs: dict[Any, Run] = {}
    for run in group.runs:
        if run.seed in runs:
            notes.append(f"{group.label}: two runs with seed {run.seed} ({runs[run.seed].path}, {run.path}); pairing uses the first")
            continue
        runs[run.seed] = run
    return runs


def _differences(row: Row, baseline: Row, metric: str, notes: list[str]) -> list[float]:
    """Candidate minus baseline, paired by seed and, for per-piece metrics, by piece name (same prompts, same seeds)."""
    ours, theirs = _by_seed(row.group, notes), _by_seed(baseline.group, notes)
    per_piece = row.cells[metric].per_piece and baseline.cells[metric].per_piece
    differences = []
    for seed in ours.keys() & theirs.keys():
        if seed is None:
            continue
        a, b = ours[seed], theirs[seed]
        if per_piece:
            pieces_a, pieces_b = a.per_piece[metric], b.per_piece[metric]
            differences += [pieces_a[name] - pieces_b[name] for name in sorted(pieces_a.keys() & pieces_b.keys())]
        elif metric in a.metrics and metric in b.metrics:
            differences.append(a.metrics[metric] - b.metrics[metric])
    return differences


def _test_against(rows: list[Row], baseline: Row, metrics: list[str], directions: dict[str, str | None], alpha: float, min_pairs: int, notes: list[str]) -> int:
    """Tests every other row's cells against the baseline's, Holm-adjusts all p-values together; returns the count."""
    tested: list[tuple[str, Cell]] = []
    too_few: dict[str, int] = {}
    for row in rows:
        for metric in metrics:
            if row is baseline or metric not in row.cells or metric not in baseline.cells:
                continue
            test = paired_test(_differences(row, baseline, metric, notes))
            if test.n_pairs < min_pairs:
                too_few[metric] = max(too_few.get(metric, 0), test.n_pairs)
                continue
            row.cells[metric].test = test
            tested.append((metric, row.cells[metric]))
    if too_few:
        listed = ", ".join(f"{metric} ({most})" for metric, most in too_few.items())
        notes.append(
            f"not tested, with fewer than the {min_pairs} non-zero pairs against the baseline that the test needs to "
            f"reach alpha={alpha} (most pairs in parentheses): {listed}"
        )
    for (metric, cell), adjusted in zip(tested, holm([cell.test.p_value for _, cell in tested])):
        cell.p_adjusted = float(adjusted)
        if adjusted < alpha:
            lower = cell.test.mean_difference < 0
            direction = directions[metric]
            cell.verdict = DIFFERENT if direction is None else (BETTER if lower == (direction == LOWER) else WORSE)
    return len(tested)


DEGENERATE_SEEDS, ONE_SEED = "†", "‡"


def interval_flag(cell: Cell, min_seeds: int) -> str:
    """A mark for an interval that says less than it seems: over a handful of seeds only (†), or one seed (‡)."""
    if not cell.per_piece and cell.interval.n_seeds < min_seeds:
        return DEGENERATE_SEEDS
    if cell.per_piece and cell.interval.n_seeds == 1:
        return ONE_SEED
    return ""


def make_leaderboard(groups: list[Group], cfg: Any, skips: list[Skip] = ()) -> Leaderboard:
    """Cells, ranking and paired tests for `groups`; `cfg` holds the leaderboard settings (conf/leaderboard.yaml)."""
    if not groups:
        raise ValueError("no runs to rank")
    runs = [run for group in groups for run in group.runs]
    notes = [note for run in runs for note in run.notes]
    metrics = select_metrics(runs, cfg.metrics, cfg.exclude_metrics, cfg.rank_by)
    rules = Directions(tuple(cfg.lower_is_better), tuple(cfg.higher_is_better))
    directions = {metric: rules.of(metric) for metric in metrics}
    if cfg.rank_by is not None and directions[cfg.rank_by] is None:
        raise ConfigError(
            f"rank_by={cfg.rank_by}: no known direction; add it to lower_is_better or higher_is_better "
            f"(now {list(cfg.lower_is_better)} / {list(cfg.higher_is_better)})"
        )

    rows = []
    with tqdm(total=len(groups) * len(metrics), desc="bootstrap", unit="cell", disable=len(groups) * len(metrics) < 200) as bar:
        for group in groups:
            cells = {}
            for metric in metrics:
                cell = _cell(group, metric, cfg.n_resamples, cfg.confidence, cfg.seed, notes)
                if cell is not None:
                    cells[metric] = cell
                bar.update()
            rows.append(Row(group=group, cells=cells))
    if cfg.rank_by is not None:
        rows = _rank(rows, cfg.rank_by, directions[cfg.rank_by])

    baseline = None
    if cfg.baseline is not None:
        baseline = _find_baseline(rows, cfg.baseline)
    elif cfg.rank_by is not None and len(rows) > 1:
        baseline = rows[0]
    min_pairs = min_pairs_for(cfg.alpha)
    n_tests = _test_against(rows, baseline, metrics, directions, cfg.alpha, min_pairs, notes) if baseline else 0

    reference = {}
    for metric in metrics:
        values = [run.reference[metric] for run in runs if metric in run.reference]
        if values:
            reference[metric] = float(np.mean(values))
    return Leaderboard(
        rows=rows,
        metrics=metrics,
        directions=directions,
        reference=reference,
        rank_by=cfg.rank_by,
        baseline=baseline.group.label if baseline else None,
        confidence=cfg.confidence,
        n_resamples=cfg.n_resamples,
        seed=cfg.seed,
        alpha=cfg.alpha,
        min_seeds=cfg.min_seeds,
        min_pairs=min_pairs,
        n_tests=n_tests,
        skips=list(skips),
        notes=list(dict.fromkeys(notes)),
    )
