"""The HTML leaderboard in a real headless browser (Debian's chromium, driven by Playwright): it loads with no console
error and no network request, sorting by a clicked column reorders the rows, the audio plays from its relative path,
and a screenshot is saved."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from leaderboard_support import GroupSpec, leaderboard_config, make_study
from lyria.evaluation.leaderboard import build_leaderboard

CHROMIUM = Path("/usr/bin/chromium")
# No downloads, no background traffic: the browser only opens the page it is given.
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
SPECS = [
    GroupSpec("attention_rope", coherence=0.5, collapse=0.1, diversity=0.2, bits_per_note=5.0),
    GroupSpec("dilated_conv", coherence=0.6, collapse=0.3, diversity=0.8, bits_per_note=4.0),
    GroupSpec("hierarchical", coherence=0.5, collapse=0.5, diversity=0.5, bits_per_note=6.0),
]


@pytest.fixture(scope="module")
def browser():
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (scripts/install_system_deps.sh installs Debian's chromium)")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs both: a skip there would hide a broken set-up
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


def test_the_page_loads_cleanly_sorts_by_a_clicked_column_and_is_screenshotted(tmp_path, compose_train, browser):
    study = make_study(tmp_path / "sweep", SPECS, seeds=[1, 2, 3], n_pieces=8, rng=np.random.default_rng(0), n_samples=1)
    board = build_leaderboard(leaderboard_config(compose_train, study))
    html = study.parent / "board" / "leaderboard.html"

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors, outside = [], []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))

    def only_local(route):
        if route.request.url.startswith(("file://", "data:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(html.as_uri())
    page.wait_for_load_state("load")

    def order() -> list[str]:
        return page.eval_on_selector_all("#leaderboard tbody tr", "rows => rows.map(row => row.dataset.group)")

    def click(column: str) -> None:
        page.locator("#leaderboard thead th", has_text=column).locator("button").click()

    def sort_state(column: str) -> str | None:
        return page.locator("#leaderboard thead th", has_text=column).get_attribute("aria-sort")

    assert order() == [row.group.label for row in board.rows]  # ranked by bits per note
    means = {row.group.label: row.cells["diversity.vendi"].interval.mean for row in board.rows}
    by_diversity = sorted(means, key=means.get)
    assert by_diversity != order()

    click("diversity.vendi")
    assert order() == by_diversity and sort_state("diversity.vendi") == "ascending"
    click("diversity.vendi")
    assert order() == by_diversity[::-1] and sort_state("diversity.vendi") == "descending"
    click("group")
    assert order() == sorted(means) and sort_state("group") == "ascending"
    assert sort_state("diversity.vendi") is None

    # the first audio player loads its WAV through the relative path
    duration = page.evaluate(
        """() => new Promise((resolve, reject) => {
            const audio = document.querySelector("audio");
            audio.addEventListener("loadedmetadata", () => resolve(audio.duration));
            audio.addEventListener("error", () => reject(new Error("audio failed: " + audio.src)));
            audio.load();
        })"""
    )
    assert duration == pytest.approx(1.0, abs=0.01)  # 8000 samples at 8 kHz

    screenshot = tmp_path / "leaderboard.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
    page.close()
    assert errors == [] and outside == []
