"""The leaderboard as one self-contained HTML page: a sortable table, one inline SVG plot per metric, and the
samples of every group (MIDI links, audio players, piano rolls) by paths relative to the page. Nothing is fetched."""

from __future__ import annotations

import html
import io
import os
from pathlib import Path
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first: no display on servers

from lyria.evaluation.leaderboard.table import BETTER, WORSE, Leaderboard, interval_flag  # noqa: E402
from lyria.evaluation.leaderboard.writers import REFERENCE_LABEL, VERDICT_MARKS, explanation, header, number  # noqa: E402

VERDICT_COLORS = {BETTER: "#1a7f37", WORSE: "#cf222e"}
BASELINE_COLOR, PLAIN_COLOR = "#0969da", "#57606a"

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 96rem; padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; } h3 { font-size: 1rem; }
.explain { color: #57606a; max-width: 60rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #d0d7de; padding: .35rem .6rem; text-align: right; vertical-align: top; white-space: nowrap; }
th { background: #f6f8fa; position: sticky; top: 0; }
th button { all: unset; cursor: pointer; font-weight: 600; }
th button:focus-visible { outline: 2px solid #0969da; }
th[aria-sort=ascending] button::after { content: " \\25B2"; }
th[aria-sort=descending] button::after { content: " \\25BC"; }
td.label, th.label { text-align: left; white-space: normal; min-width: 14rem; }
td .ci { color: #57606a; font-size: .85em; margin-left: .3em; }
td .better { color: #1a7f37; } td .worse { color: #cf222e; } td .different { color: #9a6700; }
tr.baseline td { background: #ddf4ff; }
tfoot td { color: #57606a; font-style: italic; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
.plots figure { margin: 0; border: 1px solid #d0d7de; padding: .5rem; }
.plots svg { display: block; max-width: 100%; height: auto; }
.samples td, .samples th { text-align: left; }
.samples img { height: 64px; }
ul.notes li, ul.skips li { margin: .2rem 0; }
"""

# Sorts a table body by the clicked column: numbers by value, text alphabetically, empty cells always last.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  heads.forEach(function (th, column) {
    var button = th.querySelector("button");
    if (!button) { return; }
    button.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      heads.forEach(function (other) { other.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var numeric = th.dataset.type === "number";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _link(path: Path, page_dir: Path) -> str:
    return quote(Path(os.path.relpath(path.resolve(), page_dir.resolve())).as_posix())


def _table(board: Leaderboard) -> str:
    heads = ['<th data-type="number"><button>rank</button></th>', '<th class="label" data-type="text"><button>group</button></th>',
             '<th data-type="number"><button>seeds</button></th>']
    for metric in board.metrics:
        direction = board.directions.get(metric)
        tip = f"{direction} is better" if direction else "no known direction"
        heads.append(f'<th data-type="number" title="{_esc(tip)}"><button>{_esc(header(board, metric))}</button></th>')
    body = []
    for row in board.rows:
        label = row.group.label
        cells = [
            f'<td data-value="{row.rank if row.rank is not None else ""}">{row.rank or ""}</td>',
            f'<td class="label" data-value="{_esc(label)}">{_esc(label)}</td>',
            f'<td data-value="{len(row.seeds)}" title="seeds: {_esc(", ".join(map(str, row.seeds)))}">{len(row.seeds)}</td>',
        ]
        for metric in board.metrics:
            cell = row.cells.get(metric)
            if cell is None:
                cells.append('<td data-value="">–</td>')
                continue
            interval = cell.interval
            mark = ""
            if cell.verdict:
                mark = f' <span class="{cell.verdict}" title="Holm-adjusted p = {cell.p_adjusted:.3g}">{VERDICT_MARKS[cell.verdict]}</span>'
            tested = f"; p = {cell.test.p_value:.3g} over {cell.test.n_pairs} pairs" if cell.test else ""
            title = f"{interval.n_seeds} seeds, {interval.n_pieces if cell.per_piece else 'no per-piece'} values{tested}"
            cells.append(
                f'<td data-value="{interval.mean!r}" title="{_esc(title)}">{number(interval.mean)}'
                f'<span class="ci">[{number(interval.low)}, {number(interval.high)}]{interval_flag(cell, board.min_seeds)}</span>{mark}</td>'
            )
        css = ' class="baseline"' if label == board.baseline else ""
        body.append(f'<tr{css} data-group="{_esc(label)}">' + "".join(cells) + "</tr>")
    foot = ""
    if board.reference:
        values = "".join(f"<td>{number(board.reference.get(m))}</td>" for m in board.metrics)
        foot = f'<tfoot><tr><td></td><td class="label">{REFERENCE_LABEL}</td><td></td>{values}</tr></tfoot>'
    return (
        '<div class="scroll"><table id="leaderboard" class="sortable"><thead><tr>' + "".join(heads) + "</tr></thead><tbody>"
        + "".join(body) + "</tbody>" + foot + "</table></div>"
    )


def _plot(board: Leaderboard, metric: str) -> str:
    """Mean and interval of every group (in table order) as an inline SVG; the reference as a dashed line."""
    rows = [row for row in board.rows if metric in row.cells]
    height = 0.9 + 0.32 * len(rows)
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": metric, "font.size": 9}):
        figure, axes = plt.subplots(figsize=(5.2, height))
        for position, row in enumerate(rows):
            interval = row.cells[metric].interval
            color = VERDICT_COLORS.get(row.cells[metric].verdict, BASELINE_COLOR if row.group.label == board.baseline else PLAIN_COLOR)
            axes.errorbar(
                interval.mean, position, xerr=[[interval.mean - interval.low], [interval.high - interval.mean]],
                fmt="o", color=color, capsize=3, markersize=4,
            )
        if metric in board.reference:
            axes.axvline(board.reference[metric], color="#8c959f", linestyle="--", linewidth=1, label="real data")
            axes.legend(loc="best", frameon=False)
        axes.set_yticks(range(len(rows)), [row.group.label for row in rows])
        axes.invert_yaxis()
        axes.set_title(header(board, metric))
        axes.grid(axis="x", color="#eaeef2")
        figure.tight_layout()
        buffer = io.StringIO()
        # No creation date or creator in the metadata: the same table gives the same page.
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
        plt.close(figure)
    svg = buffer.getvalue()
    # Inline SVG needs no XML prolog or doctype.
    return svg[svg.index("<svg"):]


def _samples(board: Leaderboard, page_dir: Path) -> str:
    parts = []
    for row in board.rows:
        lines = []
        for run in row.group.runs:
            for sample in run.samples:
                files = sample.files
                midi = next((files[s] for s in (".mid", ".midi") if s in files), None)
                links = f'<a href="{_link(midi, page_dir)}">MIDI</a>' if midi else ""
                audio = f'<audio controls preload="none" src="{_link(files[".wav"], page_dir)}"></audio>' if ".wav" in files else ""
                roll = ""
                if ".png" in files:
                    target = _link(files[".png"], page_dir)
                    roll = f'<a href="{target}"><img loading="lazy" alt="piano roll of {_esc(sample.name)}" src="{target}"></a>'
                lines.append(f"<tr><td>{_esc(run.seed)}</td><td>{_esc(sample.name)}</td><td>{links}</td><td>{audio}</td><td>{roll}</td></tr>")
        if lines:
            parts.append(
                f"<h3>{_esc(row.group.label)}</h3><table class=\"samples\"><thead><tr><th>seed</th><th>piece</th><th>MIDI</th>"
                f"<th>audio</th><th>piano roll</th></tr></thead><tbody>{''.join(lines)}</tbody></table>"
            )
    return "".join(parts) or "<p>No samples were found beside the runs' metrics.</p>"


def page(board: Leaderboard, runs_dir: str, page_dir: Path) -> str:
    """The whole page; sample links are relative to `page_dir`, where the page will be written."""
    plots = "".join(f"<figure>{_plot(board, metric)}</figure>" for metric in board.metrics)
    skips = "".join(f"<li><code>{_esc(skip.path)}</code>: {_esc(skip.reason)}</li>" for skip in board.skips)
    notes = "".join(f"<li>{_esc(note)}</li>" for note in board.notes)
    sections = [
        f"<h1>Leaderboard: <code>{_esc(runs_dir)}</code></h1>",
        "".join(f'<p class="explain">{_esc(line)}</p>' for line in explanation(board)),
        _table(board),
        '<h2 id="plots">Metrics</h2><div class="plots">' + plots + "</div>",
        '<h2 id="samples">Samples</h2>' + _samples(board, page_dir),
    ]
    if skips:
        sections.append(f'<h2 id="skipped">Skipped runs ({len(board.skips)})</h2><ul class="skips">{skips}</ul>')
    if notes:
        sections.append(f'<h2 id="notes">Notes</h2><ul class="notes">{notes}</ul>')
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # An empty icon: the browser asks for no favicon file.
        '<link rel="icon" href="data:,">'
        f"<title>lyria leaderboard: {_esc(runs_dir)}</title><style>{STYLE}</style></head><body>"
        + "".join(sections)
        + f"<script>{SCRIPT}</script></body></html>\n"
    )
