"""`lyria-leaderboard` end to end on fake studies: the three pages, reproducibility, config errors, the logger."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from leaderboard_support import GroupSpec, leaderboard_config, make_study
from lyria.config import ConfigError
from lyria.evaluation.leaderboard import build_leaderboard

SPECS = [GroupSpec("attention_rope", coherence=0.5), GroupSpec("dilated_conv", coherence=0.62, bits_per_note=4.0)]


@pytest.fixture
def study(tmp_path):
    return make_study(tmp_path / "sweep", SPECS, seeds=[1, 2, 3], n_pieces=8, rng=np.random.default_rng(0), n_samples=2)


def test_the_three_pages_are_written_and_agree(study, compose_train):
    board = build_leaderboard(leaderboard_config(compose_train, study, "baseline=attention_rope"))
    out = study.parent / "board"
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert [r["group"] for r in rows] == ["model/mixer=dilated_conv", "model/mixer=attention_rope", "real data (reference vs. reference)"]
    assert [r["kind"] for r in rows] == ["model", "model", "reference"]
    for row, csv_row in zip(board.rows, rows):
        interval = row.cells["coherence.structureness"].interval
        assert float(csv_row["coherence.structureness"]) == pytest.approx(interval.mean)
        assert float(csv_row["coherence.structureness:ci_low"]) == pytest.approx(interval.low)
        assert csv_row["seeds"] == "1 2 3"

    md = (out / "leaderboard.md").read_text()
    assert "| 1 | model/mixer=dilated_conv | 1, 2, 3 |" in md
    assert "Wilcoxon signed-rank" in md and "Holm" in md

    page = (out / "leaderboard.html").read_text()
    assert page.count("<svg") == len(board.metrics)
    targets = re.findall(r'(?:href|src)="([^"#][^"]*)"', page)
    # the empty icon, then per sample (2 x 3 seeds x 2 groups): the MIDI link, the audio, the piano roll (link and image)
    assert len(targets) == 1 + 2 * 3 * 2 * 4
    for target in targets:
        if not target.startswith("data:"):
            assert not re.match(r"^[a-z]+:", target), target  # nothing from a server
            assert (out / target).is_file(), target  # sample links are relative to the page and resolve
    assert page.count("<audio") == 2 * 3 * 2


def test_the_same_runs_give_the_same_table(study, compose_train, tmp_path):
    out = study.parent / "board"
    build_leaderboard(leaderboard_config(compose_train, study))
    first = {name: (out / name).read_text() for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.html")}
    build_leaderboard(leaderboard_config(compose_train, study))
    assert {name: (out / name).read_text() for name in first} == first
    build_leaderboard(leaderboard_config(compose_train, study, "seed=1"))
    assert (out / "leaderboard.csv").read_text() != first["leaderboard.csv"]


def test_skipped_runs_are_listed_on_every_page(study, compose_train):
    (study / "0" / "metrics.json").write_text("{broken")
    board = build_leaderboard(leaderboard_config(compose_train, study))
    assert len(board.skips) == 1 and sum(len(r.group.runs) for r in board.rows) == 5
    out = study.parent / "board"
    assert "1 skipped" in (out / "leaderboard.md").read_text()
    assert "not valid JSON" in (out / "leaderboard.md").read_text() and "not valid JSON" in (out / "leaderboard.html").read_text()


def test_a_folder_without_usable_runs_is_an_error_naming_it(tmp_path, compose_train):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match=r"no usable runs under .*empty.*1 skipped.*no training config"):
        build_leaderboard(leaderboard_config(compose_train, tmp_path / "empty"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+rank_bi=x", r"unknown config key 'rank_bi'; did you mean 'rank_by'"),
        ("confidence=1.5", r"confidence=1.5 is not allowed: expected a number > 0 and < 1"),
        ("n_resamples=10", r"n_resamples=10 is not allowed: expected an integer >= 100"),
        ("alpha=many", r"invalid value for config key 'alpha'"),
    ],
)
def test_bad_settings_fail_at_start_up_naming_the_key(study, compose_train, override, message):
    with pytest.raises(ConfigError, match=message):
        build_leaderboard(leaderboard_config(compose_train, study, override))


@pytest.mark.slow
def test_the_command_line_app_logs_the_table_to_an_offline_wandb_run(study):
    out = study.parent / "cli_board"
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run(
        [sys.executable, "-m", "lyria.cli.leaderboard", f"runs={study}", "logger=wandb", "baseline=attention_rope", f"hydra.run.dir={out}"],
        check=True, env=env, capture_output=True, text=True, timeout=300,
    )
    assert "6 runs in 2 groups" in result.stdout
    assert {"leaderboard.md", "leaderboard.csv", "leaderboard.html"} <= {p.name for p in out.iterdir()}
    tables = list(out.glob("wandb/offline-run-*/files/media/table/leaderboard_*.table.json"))
    assert len(tables) == 1
    logged = json.loads(tables[0].read_text())
    assert [row[2] for row in logged["data"]][:2] == ["model/mixer=dilated_conv", "model/mixer=attention_rope"]
