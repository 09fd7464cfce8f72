"""lyria-evaluate end to end on a small MIDI corpus: the metrics.json contract, determinism, assets, bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from evaluation_support import random_piece, write_samples
from hydra import compose, initialize_config_dir
from symusic import Score

from lyria.cli import CONF_DIR
from lyria.config import ConfigError
from lyria.data.notes import PieceNotes, notes_from_score, score_from_notes
from lyria.evaluation import FAMILIES
from lyria.evaluation.assets import AssetMismatchError, assert_comparable
from lyria.evaluation.evaluate import build_families, evaluate

EVAL_DIR = Path(CONF_DIR) / "eval"
CONTRACT_FAMILIES = ["features", "distances", "diversity", "mode_collapse", "memorization", "coherence", "style"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Two styles of 16 seeded tunes each, as a MIDI folder (`data=midi_folder`)."""
    root = tmp_path_factory.mktemp("corpus")
    for style, root_pitch, chords in (("jigs", 62, False), ("airs", 55, True)):
        for k in range(16):
            path = root / style / f"{style}_{k:02d}.mid"
            path.parent.mkdir(parents=True, exist_ok=True)
            score_from_notes(random_piece(1000 * root_pitch + k, n_notes=48, root=root_pitch, chords=chords)).dump_midi(str(path))
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def compose_evaluate(corpus, cache, tmp_path):
    def _compose(generated: Path, *overrides: str):
        base = [
            f"generated={generated}",
            "data=midi_folder",
            f"data.path={corpus}",
            "data.test_fraction=0.3",
            "data.val_fraction=0.1",
            "data.num_proc=1",
            f"paths.cache_dir={cache}",
            f"output_dir={tmp_path / 'evaluation'}",
            "eval.num_proc=1",
            "quiet=true",
        ]
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(config_name="evaluate", overrides=base + list(overrides))

    return _compose


def corpus_piece(corpus: Path, name: str):
    return notes_from_score(Score(str(next(corpus.rglob(name)))))


def strict_json(path: Path) -> dict:
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def numbers(section: dict) -> list:
    return [v for v in section.values() if not isinstance(v, dict)]


def test_metrics_json_contract_with_baseline_per_piece_and_report(compose_evaluate, corpus, tmp_path):
    pieces = [random_piece(seed, n_notes=40) for seed in range(6)] + [corpus_piece(corpus, "jigs_03.mid")] * 2
    generated = write_samples(tmp_path / "samples", pieces, styles=["jigs"] * 4 + ["airs"] * 4)
    (generated / "broken.mid").write_bytes(b"MThd not midi")
    index = json.loads((generated / "index.json").read_text())
    index["samples"].append({"index": 8, "file": "broken.mid"})
    (generated / "index.json").write_text(json.dumps(index))

    document = evaluate(compose_evaluate(generated))
    out = tmp_path / "evaluation"
    written = strict_json(out / "metrics.json")
    assert written == json.loads(json.dumps(document))
    assert written["version"] == 1
    for family in CONTRACT_FAMILIES:
        assert family in written and family in written["baseline"], family
        assert all(v is None or isinstance(v, (int, float)) and math.isfinite(v) for v in numbers(written[family]))
    assert written["mode_collapse"]["score"] is not None and written["baseline"]["mode_collapse"]["score"] is not None
    assert written["generated"]["n_pieces"] == 8 and written["generated"]["skipped"] == 1
    assert written["generated"]["skips"][0]["file"].endswith("broken.mid")
    assert written["reference"]["split"] == "test" and written["reference"]["n_pieces"] > 5
    assert set(written["per_piece"]) == {f"sample_{i:03d}.mid" for i in range(8)}
    row = written["per_piece"]["sample_006.mid"]
    assert {"features.pitch_range", "diversity.self_bleu", "memorization.best_f1", "coherence.structureness"} <= set(row)
    assert row == written["per_piece"]["sample_007.mid"] | {
        "diversity.self_bleu": row["diversity.self_bleu"]
    }  # the same piece twice
    assert set(written["per_style"]) == {"jigs", "airs"} and written["per_style"]["jigs"]["n_pieces"] == 4
    style = written["style"]  # the samples request styles: the data's own classifier scores them
    for requested in ("jigs", "airs"):
        row = [style[f"confusion.{requested}.{predicted}"] for predicted in ("airs", "jigs")]
        assert sum(row) == 4 and style[f"fidelity.{requested}"] == style[f"confusion.{requested}.{requested}"] / 4
        assert 0 <= style[f"real_accuracy.{requested}"] <= 1
    assert style["fidelity"] == pytest.approx(np.mean([row["style.style_match"] for row in written["per_piece"].values()]))
    assert written["baseline"]["style"]["fidelity"] is not None
    assert {"split_manifest", "memorization_index", "style_classifier"} <= set(written["assets"])
    report = (out / "report.md").read_text()
    assert "real-vs-real" in report and "broken.mid" in report and "## closest training pieces" in report
    assert "| requested / predicted | airs | jigs |" in report
    assert {p.name for p in (out / "plots").iterdir()} == {
        "features.png",
        "self_similarity.png",
        "pitch_class_transitions.png",
        "repetition.png",
    }


@pytest.fixture
def copied_samples(corpus, tmp_path, cache, compose_evaluate):
    """Samples that copy three training pieces (one transposed), beside three new tunes."""
    from lyria.evaluation.evaluate import prepare
    from lyria.evaluation.sets import load_split

    cfg = compose_evaluate(tmp_path)
    _, prepared = prepare(cfg.data, cfg.tokenizer)
    train = load_split(prepared, "train")
    moved = train.pieces[2].notes.copy()
    moved["pitch"] += 4
    transposed = PieceNotes(moved, train.pieces[2].bar_starts_beats, train.pieces[2].bar_starts, train.pieces[2].time_signatures)
    return write_samples(
        tmp_path / "copies", [train.pieces[0], train.pieces[1], transposed] + [random_piece(s) for s in range(3)]
    )


def test_memorization_finds_the_copies_end_to_end(compose_evaluate, copied_samples):
    document = evaluate(compose_evaluate(copied_samples, "eval.baseline=false", "eval.plots=false"))
    flags = [document["per_piece"][f"sample_{i:03d}.mid"]["memorization.is_copy"] for i in range(6)]
    assert flags == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert document["memorization"]["copy_rate"] == pytest.approx(0.5)
    assert document["baseline"] == {}


def test_same_inputs_give_the_same_numbers_with_or_without_cached_assets(compose_evaluate, copied_samples, tmp_path):
    first = evaluate(compose_evaluate(copied_samples, "eval.plots=false", f"assets_dir={tmp_path / 'assets'}"))
    again = evaluate(compose_evaluate(copied_samples, "eval.plots=false", f"assets_dir={tmp_path / 'assets'}"))
    fresh = evaluate(compose_evaluate(copied_samples, "eval.plots=false", "assets_dir=null"))
    for other in (again, fresh):
        for key in CONTRACT_FAMILIES + ["baseline", "per_piece", "per_style"]:
            assert other[key] == first[key], key
    assert again["assets"] == first["assets"]
    assert_comparable(first, again)
    changed = evaluate(
        compose_evaluate(copied_samples, "eval.plots=false", "eval.feature_resolution=12", f"assets_dir={tmp_path / 'assets'}")
    )
    with pytest.raises(AssetMismatchError, match="features/test"):
        assert_comparable(first, changed)


def test_a_midi_folder_reference_is_parsed_isolated_and_split_in_halves_for_the_baseline(compose_evaluate, corpus, tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    for i in range(10):
        score_from_notes(random_piece(70 + i)).dump_midi(str(reference / f"r{i}.mid"))
    (reference / "corrupt.mid").write_bytes(b"\x00\x01")
    samples = write_samples(tmp_path / "samples", [random_piece(s) for s in range(6)])
    document = evaluate(compose_evaluate(samples, f"reference={reference}", "eval=fast"))
    assert document["reference"]["dir"] == str(reference) and document["reference"]["n_pieces"] == 10
    assert document["reference"]["skipped"] == 1
    assert document["baseline_sets"].startswith("one half of the reference (5)")


def test_a_continuation_is_scored_against_its_prompt_piece(compose_evaluate, corpus, tmp_path):
    prompt = next(corpus.rglob("airs_05.mid"))
    real = notes_from_score(Score(str(prompt)))
    samples = write_samples(
        tmp_path / "continued", [real, random_piece(3)], extra={"settings": {"prompt": str(prompt), "prompt_bars": 2}}
    )
    document = evaluate(compose_evaluate(samples, "eval=fast"))
    per_piece = document["per_piece"]
    assert per_piece["sample_000.mid"]["continuation.note_f1"] == pytest.approx(1.0)
    assert per_piece["sample_001.mid"]["continuation.note_f1"] < 0.5
    assert document["continuation"]["n_pieces"] == 2
    assert "continuation" not in document["baseline"]


def test_config_errors_name_the_key(compose_evaluate, tmp_path):
    samples = write_samples(tmp_path / "samples", [random_piece(1)])
    with pytest.raises(ConfigError, match="not the 'features' metric family"):
        evaluate(compose_evaluate(samples, "eval.families.features._target_=lyria.evaluation.coherence.Coherence"))
    with pytest.raises(ConfigError, match="copy_threshold"):
        evaluate(compose_evaluate(samples, "+eval.families.memorization.copy_treshold=0.5"))
    with pytest.raises(ConfigError, match="did you mean 'eval.families'"):
        evaluate(compose_evaluate(samples, "+eval.famlies=1"))
    with pytest.raises(ConfigError, match="did you mean 'structureness'"):
        evaluate(compose_evaluate(samples, "eval.families.coherence.metrics=[structurenes]"))
    with pytest.raises(ConfigError, match=r"generated='.*missing' is not allowed: expected an existing folder"):
        evaluate(compose_evaluate(tmp_path / "missing"))


def test_a_saved_run_config_builds_only_lyria_data_sources(compose_evaluate, tmp_path):
    samples = write_samples(tmp_path / "samples", [random_piece(1)])
    hostile = tmp_path / "config.yaml"
    hostile.write_text(
        "data:\n  source:\n    _target_: os.system\n    command: 'echo owned'\n"
        "tokenizer:\n  _target_: lyria.tokenizers.LyriaTokenizer\n"
    )
    with pytest.raises(ConfigError, match="refusing to load 'os.system'"):
        evaluate(compose_evaluate(samples, f"training_data={hostile}"))


@pytest.mark.parametrize("choice", sorted(p.stem for p in EVAL_DIR.glob("*.yaml")))
def test_every_eval_config_builds_registered_families(choice, corpus, cache, tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name="evaluate", overrides=[f"eval={choice}", "generated=x", f"paths.cache_dir={cache}", "output_dir=x"]
        )
    families = build_families(cfg.eval.families)
    assert families and all(f.name in FAMILIES and isinstance(f, FAMILIES[f.name]) for f in families)


@pytest.mark.slow
def test_train_generate_evaluate_reads_the_run_config_and_scores_nll_by_position(compose_train, tmp_path):
    from lyria.generation.generate import generate
    from lyria.training.train import train

    _, objects = train(compose_train())
    index = generate(
        compose_train(
            f"ckpt={objects['paths']['best_checkpoint']}",
            "n=6",
            "max_new_tokens=96",
            f"output_dir={tmp_path / 'samples'}",
            config_name="generate",
        )
    )
    env = {**os.environ, "WANDB_MODE": "offline"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lyria.cli.evaluate",
            f"generated={tmp_path / 'samples'}",
            f"hydra.run.dir={tmp_path / 'evaluation'}",
            f"assets_dir={tmp_path / 'assets'}",
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "real-vs-real" in out.stdout and str(tmp_path / "evaluation" / "report.md") in out.stdout
    document = strict_json(tmp_path / "evaluation" / "metrics.json")
    assert document["generated"]["n_pieces"] == index["written"]
    assert document["reference"]["data"].endswith("config.yaml")
    assert document["coherence"]["nll_position.1-2"] is not None and "context_gain" in document["coherence"]


class StandInClassifier:
    """The contract of lyria.evaluation.style_classifier that the style family calls: a piece 'sounds like'
    jigs when its tune sits above middle C."""

    VERSION = 1

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.write_bytes(b"stand-in classifier")

    def classifier_for_data(self, prepared, assets_dir=None):
        return object(), self.path

    def style_fidelity(self, pieces, styles, classifier):
        if "polka" in styles:
            raise ValueError("the style classifier does not know ['polka']")
        predicted = ["jigs" if np.median(p.notes["pitch"]) >= 60 else "airs" for p in pieces]
        match = [float(p == s) for p, s in zip(predicted, styles)]
        return {"values": {"fidelity": float(np.mean(match))}, "per_piece": {"style_match": match}}


def test_style_fidelity_through_the_classifier_contract(compose_evaluate, tmp_path, monkeypatch):
    import lyria.evaluation.style as style

    monkeypatch.setattr(style, "classifier_module", lambda: StandInClassifier(tmp_path / "classifier.npz"))
    high, low = random_piece(1, root=67), random_piece(2, root=36)
    samples = write_samples(tmp_path / "styled", [high, high, low, low], styles=["jigs", "airs", "airs", None])
    document = evaluate(compose_evaluate(samples, "eval=fast"))
    assert document["style"]["fidelity"] == pytest.approx(2 / 3)
    assert [document["per_piece"][f"sample_{i:03d}.mid"]["style.style_match"] for i in range(4)] == [1.0, 0.0, 1.0, None]
    assert document["assets"]["style_classifier"]["version"] == 1
    assert document["baseline"]["style"]["fidelity"] is not None  # real pieces scored with their own styles
    unknown = write_samples(tmp_path / "polka", [high], styles=["polka"])
    assert "does not know ['polka']" in evaluate(compose_evaluate(unknown, "eval=fast"))["unavailable"]["style"]


def test_infilled_bars_are_scored_against_the_real_bars(compose_evaluate, corpus, tmp_path):
    original = next(corpus.rglob("jigs_07.mid"))
    real = notes_from_score(Score(str(original)))
    refilled = real.notes.copy()
    inside = (refilled["start_beats"] >= 8) & (refilled["start_beats"] < 16)  # bars 3-4 (1-based), 4/4
    refilled["pitch"][inside] += 2
    changed = PieceNotes(refilled, real.bar_starts_beats, real.bar_starts, real.time_signatures)
    samples = write_samples(
        tmp_path / "infilled", [real, changed], extra={"mode": "infill", "settings": {"infill": str(original), "bars": "3-4"}}
    )
    document = evaluate(compose_evaluate(samples, "eval=fast"))
    assert document["per_piece"]["sample_000.mid"]["continuation.note_f1"] == pytest.approx(1.0)
    assert document["per_piece"]["sample_001.mid"]["continuation.note_f1"] == pytest.approx(0.0)


def test_index_entries_name_their_midi_as_file_or_files_and_an_entry_without_midi_is_named(tmp_path):
    from lyria.evaluation.sets import load_generated

    folder = write_samples(tmp_path / "samples", [random_piece(i) for i in range(2)])
    index = json.loads((folder / "index.json").read_text())
    index["samples"][0] = {"index": 0, "file": index["samples"][0]["files"]["midi"]}  # the older form
    (folder / "index.json").write_text(json.dumps(index))
    generated, _, _ = load_generated(folder, num_proc=1)
    assert len(generated) == 2

    index["samples"][1] = {"index": 1, "files": {"wav": "sample_001.wav"}}
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"samples\[1\] has no MIDI file"):
        load_generated(folder, num_proc=1)
