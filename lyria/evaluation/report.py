"""Writes an evaluation: metrics.json (the contract the leaderboard reads), report.md and plots (matplotlib, Agg).

metrics.json: {"version", "assets": {name: {version, hash}}, "generated", "reference", "baseline_sets",
"settings", one section per family ({metric: number or null}), "baseline" (the same sections for
real-vs-real), "per_piece" ({piece file: {family.metric: value}}), "per_style", "baseline_per_style",
"unavailable" ({family.metric: reason}), "seconds"}. Every number is finite or null.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lyria.evaluation.base import EvalInputs, FamilyResult
from lyria.evaluation.coherence import bars_of, self_similarity
from lyria.evaluation.features import PITCH_CLASS_LABELS

METRICS_VERSION = 1
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"

# (family, metric, label) shown in the printed summary and at the top of the report
HEADLINE = [
    ("diversity", "vendi", "diversity: Vendi score (effective distinct pieces)"),
    ("diversity", "distinct_4", "diversity: distinct 4-grams"),
    ("diversity", "self_bleu", "diversity: self-BLEU (lower is more varied)"),
    ("mode_collapse", "score", "mode collapse score (0 varied .. 1 collapsed)"),
    ("mode_collapse", "coverage", "coverage of the reference"),
    ("memorization", "copy_rate", "memorization: share of copies"),
    ("memorization", "mean_longest_shared_ngram", "memorization: mean longest shared n-gram (tokens)"),
    ("coherence", "structureness", "coherence: structureness"),
    ("coherence", "key_consistency", "coherence: key consistency"),
    ("coherence", "similarity_error", "coherence: similarity error (lower is closer)"),
    ("distances", "frechet", "distance: Frechet (z-scored features)"),
    ("distances", "mean_overlap", "distance: mean feature overlap area"),
    ("style", "fidelity", "style fidelity: share classified as requested"),
]


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, np.integer)) or float(value).is_integer() and abs(value) >= 100:
        return f"{int(value)}"
    return f"{value:.3f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def summary_lines(document: dict, paths: dict[str, Path]) -> list[str]:
    generated, reference = document["generated"], document["reference"]
    where = reference.get("split") or reference.get("dir")
    lines = [
        "",
        "lyria evaluation",
        "----------------",
        f"{generated['n_pieces']} generated pieces ({generated['skipped']} skipped: unreadable or over data.limits) vs {reference['n_pieces']} reference pieces "
        f"({where}); "
        f"real-vs-real baseline: {document['baseline_sets']}",
        f"{'':52s} {'generated':>10s} {'real-vs-real':>13s}",
    ]
    for family, metric, label in HEADLINE:
        if family not in document:
            continue
        value = document[family].get(metric)
        base = document.get("baseline", {}).get(family, {}).get(metric)
        lines.append(f"{label:52s} {fmt(value):>10s} {fmt(base):>13s}")
    lines += style_lines(document)
    lines.append(f"report: {paths['report'].resolve()}")
    lines.append(f"metrics: {paths['metrics'].resolve()}")
    return lines


def style_lines(document: dict) -> list[str]:
    """Each requested style's fidelity beside the style classifier's accuracy on real test pieces of that style."""
    values = document.get("style") or {}
    styles = [k.split(".", 1)[1] for k in values if k.startswith("fidelity.")]
    if not styles:
        return []
    counts = document.get("generated", {}).get("styles", {})
    lines = [f"{'style fidelity by requested style':52s} {'generated':>10s} {'real pieces':>13s}"]
    for style in styles:
        count = counts.get(style)
        label = f"  {style} ({count if count is not None else '?'} sample{'' if count == 1 else 's'})"
        lines.append(f"{label:52s} {fmt(values.get(f'fidelity.{style}')):>10s} {fmt(values.get(f'real_accuracy.{style}')):>13s}")
    lines.append(f"{'  all requested styles (chance ' + fmt(values.get('chance')) + ')':52s} {fmt(values.get('fidelity')):>10s} {fmt(values.get('real_accuracy')):>13s}")
    return lines


CONFUSION = "confusion."


def _confusion_lines(values: dict) -> list[str]:
    """`confusion.<row>.<column>` counts as a markdown matrix (rows: requested style; columns: predicted)."""
    cells = {}
    for key, value in values.items():
        if key.startswith(CONFUSION):
            row, _, column = key[len(CONFUSION) :].partition(".")
            cells[(row, column)] = value
    if not cells:
        return []
    rows = list(dict.fromkeys(r for r, _ in cells))
    columns = list(dict.fromkeys(c for _, c in cells))
    lines = ["", "Confusion matrix (rows: requested style; columns: the classifier's prediction; piece counts):", ""]
    lines += ["| requested / predicted | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for row in rows:
        counts = [cells.get((row, c)) for c in columns]
        lines.append(f"| {row} | " + " | ".join("n/a" if n is None else str(int(n)) for n in counts) + " |")
    return lines


def _family_table(name: str, document: dict) -> list[str]:
    values = document.get(name, {})
    base = document.get("baseline", {}).get(name, {})
    lines = [f"## {name}", ""]
    reason = document["unavailable"].get(name)
    if reason and not values:
        return lines + [f"Not available: {reason}", ""]
    lines += ["| metric | generated | real-vs-real |", "|---|---:|---:|"]
    for metric, value in values.items():
        if not metric.startswith(CONFUSION):
            lines.append(f"| {metric} | {fmt(value)} | {fmt(base.get(metric))} |")
    lines += _confusion_lines(values)
    notes = {k.split(".", 1)[1]: v for k, v in document["unavailable"].items() if k.startswith(f"{name}.")}
    if notes:
        lines += ["", "Missing values: " + "; ".join(f"`{k}`: {v}" for k, v in sorted(notes.items()))]
    return lines + [""]


def _per_style_table(document: dict) -> list[str]:
    per_style = document.get("per_style") or {}
    if not per_style:
        return []
    columns = sorted({k for row in per_style.values() for k in row if k != "n_pieces"})
    lines = ["## per style", "", "| style | pieces | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for style, row in per_style.items():
        lines.append(f"| {style} | {row['n_pieces']} | " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
    return lines + [""]


def _copies_table(document: dict, results: dict[str, FamilyResult], names: list[str]) -> list[str]:
    memorization = results.get("memorization")
    if memorization is None or "best_f1" not in memorization.per_piece:
        return []
    best = memorization.per_piece["best_f1"]
    longest = memorization.per_piece["longest_shared_ngram"]
    matched = memorization.artifacts.get("matched", [None] * len(best))
    order = np.argsort(-best)[:10]
    lines = [
        "## closest training pieces",
        "",
        "| generated | best note F1 | training piece | longest shared n-gram |",
        "|---|---:|---|---:|",
    ]
    lines += [f"| {names[i]} | {fmt(best[i])} | {matched[i] or '-'} | {int(longest[i])} |" for i in order]
    return lines + [""]


def write_report(document: dict, results: dict[str, FamilyResult], names: list[str], plot_files: list[str], path: Path) -> None:
    generated, reference = document["generated"], document["reference"]
    lines = [
        "# lyria evaluation",
        "",
        f"- generated: `{generated['dir']}`: {generated['n_pieces']} pieces, {generated['skipped']} skipped (unreadable or over data.limits)"
        + (f", checkpoint `{generated['checkpoint']}`" if generated.get("checkpoint") else ""),
        f"- reference: {reference.get('split') or reference.get('dir')} ({reference['n_pieces']} pieces; "
        f"data from {reference['data']}; "
        f"{reference['train_pieces']} training pieces)",
        f"- real-vs-real baseline: {document['baseline_sets']}",
        "- assets: " + ", ".join(f"{k} v{v['version']} `{v['hash']}`" for k, v in document["assets"].items()),
        "",
        "## summary",
        "",
        "| metric | generated | real-vs-real |",
        "|---|---:|---:|",
    ]
    for family, metric, label in HEADLINE:
        if family in document:
            lines.append(
                f"| {label} | {fmt(document[family].get(metric))} | {fmt(document['baseline'].get(family, {}).get(metric))} |"
            )
    lines.append("")
    for family in results:
        lines += _family_table(family, document)
    lines += _per_style_table(document)
    lines += _copies_table(document, results, names)
    if plot_files:
        lines += ["## plots", ""] + [f"![{Path(p).stem}]({p})" for p in plot_files] + [""]
    if generated["skips"]:
        lines += ["## skipped samples", ""] + [f"- `{s['file']}`: {s['reason']}" for s in generated["skips"]] + [""]
    path.write_text("\n".join(lines))


def plot_features(results: dict[str, FamilyResult], path: Path) -> bool:
    import matplotlib.pyplot as plt

    features = results.get("features")
    if features is None or "generated" not in features.artifacts:
        return False
    generated, reference = features.artifacts["generated"], features.artifacts["reference"]
    names = generated.scalar_names
    columns = 4
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        gen, ref = generated.column(name), reference.column(name)
        gen, ref = gen[np.isfinite(gen)], ref[np.isfinite(ref)]
        both = np.concatenate([gen, ref])
        if len(both):
            bins = np.histogram_bin_edges(both, bins=20)
            ax.hist(ref, bins=bins, density=True, alpha=0.5, label="reference")
            ax.hist(gen, bins=bins, density=True, alpha=0.5, label="generated")
        else:
            ax.text(0.5, 0.5, "not defined for these pieces", ha="center", va="center", fontsize=8, transform=ax.transAxes)
        ax.set_title(name, fontsize=9)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def plot_self_similarity(inputs: EvalInputs, path: Path, groove_positions: int = 16, count: int = 3) -> bool:
    import matplotlib.pyplot as plt

    chosen = [("generated", inputs.generated, i) for i in range(min(count, len(inputs.generated)))]
    chosen += [("reference", inputs.reference, i) for i in range(min(count, len(inputs.reference)))]
    if not chosen:
        return False
    figure, axes = plt.subplots(1, len(chosen), figsize=(3 * len(chosen), 3.2), squeeze=False)
    for ax, (kind, piece_set, i) in zip(axes[0], chosen):
        ax.imshow(self_similarity(bars_of(piece_set.pieces[i], groove_positions)), vmin=0, vmax=1, cmap="magma", origin="lower")
        ax.set_title(f"{kind}: {Path(piece_set.names[i]).name[:24]}", fontsize=8)
        ax.set_xlabel("bar")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def plot_transitions(results: dict[str, FamilyResult], path: Path) -> bool:
    import matplotlib.pyplot as plt

    features = results.get("features")
    if features is None or "generated" not in features.artifacts:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, kind in zip(axes, ("generated", "reference")):
        matrices = features.artifacts[kind].vectors["pitch_class_transition_matrix"]
        finite = matrices[np.isfinite(matrices).all(axis=1)]
        mean = finite.mean(axis=0).reshape(12, 12) if len(finite) else np.zeros((12, 12))
        ax.imshow(mean, cmap="viridis")
        ax.set_xticks(range(12), PITCH_CLASS_LABELS, fontsize=7)
        ax.set_yticks(range(12), PITCH_CLASS_LABELS, fontsize=7)
        ax.set_title(f"pitch-class transitions: {kind}", fontsize=9)
        ax.set_xlabel("to")
        ax.set_ylabel("from")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def plot_repetition(results: dict[str, FamilyResult], path: Path) -> bool:
    import matplotlib.pyplot as plt

    coherence = results.get("coherence")
    if coherence is None or "generated_profile" not in coherence.artifacts:
        return False
    nll = coherence.artifacts.get("nll_by_position")
    figure, axes = plt.subplots(1, 2 if nll is not None else 1, figsize=(10 if nll is not None else 5, 3.4), squeeze=False)
    ax = axes[0, 0]
    for kind in ("generated", "reference"):
        profile = coherence.artifacts[f"{kind}_profile"]
        ax.plot(np.arange(1, len(profile) + 1), profile, label=kind)
    ax.set_xlabel("lag (bars)")
    ax.set_ylabel("mean bar similarity")
    ax.legend(fontsize=8)
    if nll is not None:
        axes[0, 1].plot(np.arange(1, len(nll) + 1), nll)
        axes[0, 1].set_xscale("log")
        axes[0, 1].set_xlabel("token position")
        axes[0, 1].set_ylabel("NLL (nats), held-out pieces")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def write_outputs(
    document: dict, results: dict[str, FamilyResult], inputs: EvalInputs, out_dir: Path, plots: bool = True
) -> dict[str, Path]:
    """metrics.json, report.md and (with `plots`) PNGs under out_dir/plots; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_files = []
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        plot_dir = out_dir / "plots"
        plot_dir.mkdir(exist_ok=True)
        for name, draw in (
            ("features.png", lambda p: plot_features(results, p)),
            ("self_similarity.png", lambda p: plot_self_similarity(inputs, p)),
            ("pitch_class_transitions.png", lambda p: plot_transitions(results, p)),
            ("repetition.png", lambda p: plot_repetition(results, p)),
        ):
            if draw(plot_dir / name):
                plot_files.append(f"plots/{name}")
    paths = {"metrics": out_dir / METRICS_FILE, "report": out_dir / REPORT_FILE}
    paths["metrics"].write_text(json.dumps(document, indent=2, allow_nan=False))
    write_report(document, results, inputs.generated.names, plot_files, paths["report"])
    return paths
