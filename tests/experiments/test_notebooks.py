"""The notebooks run end to end on a tiny trained study run (nbclient, a real kernel), so they never go stale."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lyria.training.train import train

nbformat = pytest.importorskip("nbformat", reason="the dev extra (nbformat, nbclient, ipykernel) runs the notebooks")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
TINY_STUDY = [
    "study=default",
    "study.generate.n=2",
    "study.generate.batch_size=2",
    "study.generate.max_new_tokens=48",
    "study.generate.max_bars=4",
    "study.generate.render.formats=[midi]",
    "study.evaluate.overrides=['eval.num_proc=1','eval.baseline=false']",
]


def run_notebook(name: str, cwd: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    """Executes notebooks/<name>.ipynb in a fresh kernel with `env` added to the environment; fails on any error."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    saved = dict(os.environ)
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return notebook


def outputs(notebook, kind: str) -> list:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if kind in o.get("data", {})]


@pytest.mark.slow
def test_quickstart_and_leaderboard_notebooks_run_on_a_tiny_study(compose_train, midi_folder, shared_cache, tmp_path):
    cfg = compose_train(
        "data=midi_folder",
        f"data.path={midi_folder}",
        "data.max_pieces_per_style=null",
        "data.val_fraction=0.2",
        "data.test_fraction=0.3",
        *TINY_STUDY,
        f"paths.output_dir={tmp_path / 'runs' / '0'}",
    )
    _, objects = train(cfg)
    checkpoint = objects["paths"]["best_checkpoint"]
    env = {"LYRIA_CACHE": str(shared_cache), "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")) if p)}

    quick = run_notebook(
        "quickstart",
        tmp_path,
        env
        | {
            "LYRIA_NB_CHECKPOINT": checkpoint,
            "LYRIA_NB_OUTPUT_DIR": str(tmp_path / "quick"),
            "LYRIA_NB_N_SAMPLES": "2",
            "LYRIA_NB_MAX_NEW_TOKENS": "48",
            "LYRIA_NB_MAX_BARS": "4",
            "LYRIA_NB_EVAL_OVERRIDES": "eval.num_proc=1 eval.baseline=false",
        },
    )
    written = sorted(p.suffix for p in (tmp_path / "quick" / "samples").glob("sample_000.*"))
    assert {".mid", ".wav", ".png", ".musicxml"} <= set(written)
    assert any("<audio" in o["data"]["text/html"] for o in outputs(quick, "text/html"))  # IPython.display.Audio
    assert outputs(quick, "image/png")  # piano rolls (and the NLL plot)
    assert (tmp_path / "quick" / "evaluation" / "metrics.json").is_file()

    board = run_notebook(
        "leaderboard",
        tmp_path,
        env | {"LYRIA_NB_RUNS": str(tmp_path / "runs"), "LYRIA_NB_OUTPUT_DIR": str(tmp_path / "board")},
    )
    assert {p.name for p in (tmp_path / "board").iterdir()} >= {"leaderboard.md", "leaderboard.csv", "leaderboard.html"}
    assert len(outputs(board, "image/png")) >= 2  # the per-group plots
