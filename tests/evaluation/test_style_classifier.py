"""The style classifier: accuracy on clearly different styles, fidelity and its confusion matrix, the versioned
asset (data and settings in its hash), loading without running code, and the printed summary."""

from __future__ import annotations

import json
import re
import pickle
from pathlib import Path

import numpy as np
import pytest
from evaluation_support import random_piece
from hydra import compose, initialize_config_dir
from symusic import Note, Score, Tempo, TimeSignature, Track

from lyria.cli import CONF_DIR
from lyria.data.notes import notes_from_score, score_from_notes
from lyria.evaluation import style_classifier as sc
from lyria.evaluation.assets import AssetMismatchError, AssetStore, assert_comparable
from lyria.evaluation.base import EvalInputs, PieceSet
from lyria.evaluation.report import style_lines
from lyria.evaluation.sets import split_key
from lyria.evaluation.style import StyleFidelity

TPQ = 480
MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])


def build(notes: list[tuple[float, float, int]], numerator: int, denominator: int):
    score = Score(TPQ)
    track = Track("music", 0, False)
    for start, duration, pitch in notes:
        track.notes.append(Note(int(round(start * TPQ)), int(round(duration * TPQ)), int(pitch), 80))
    score.tracks.append(track)
    score.time_signatures.append(TimeSignature(0, numerator, denominator))
    score.tempos.append(Tempo(0, qpm=90))
    return notes_from_score(score)


def chorale_like(seed: int):
    """Four-part homophony in 4/4: a triad on every beat, a held chord closing each phrase, any key."""
    rng = np.random.default_rng(seed)
    tonic = 48 + int(rng.integers(0, 12))
    notes, time = [], 0.0
    for bar in range(8):
        for beat in range(4):
            degree = int(rng.choice([0, 3, 4, 5, 1]))
            duration = 2.0 if (bar % 2 == 1 and beat == 2) else 1.0
            if bar % 2 == 1 and beat == 3:
                continue
            triad = [MAJOR[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in (0, 2, 4)]
            for pitch in (tonic - 12 + triad[0], tonic + triad[1], tonic + triad[2], tonic + 12 + triad[0]):
                notes.append((time, duration, int(pitch)))
            time += duration
    return build(notes, 4, 4)


def fiddle_like(seed: int):
    """A single line of running eighth notes in 6/8, up and down the scale and its arpeggios, any key."""
    rng = np.random.default_rng(seed)
    tonic = 62 + int(rng.integers(0, 12))
    degree, notes = 0, []
    for k in range(96):
        degree = int(np.clip(degree + rng.choice([-2, -1, 1, 2, 3]), -3, 10))
        pitch = tonic + MAJOR[degree % 7] + 12 * (degree // 7)
        notes.append((k * 0.5, 0.5, int(pitch)))
    return build(notes, 6, 8)


STYLES = {"bach_chorale": chorale_like, "irish_oneills": fiddle_like}


def pieces_of(seeds: range) -> tuple[list, list[str]]:
    pieces, styles = [], []
    for style, make in STYLES.items():
        pieces += [make(seed) for seed in seeds]
        styles += [style] * len(seeds)
    return pieces, styles


@pytest.fixture(scope="module")
def trained() -> sc.StyleClassifier:
    return sc.train_classifier(pieces_of(range(0, 12)), pieces_of(range(100, 104)), pieces_of(range(200, 208)))


def test_classifier_tells_chorales_from_fiddle_tunes_on_new_pieces(trained):
    assert trained.styles == sorted(STYLES)
    report = sc.accuracy_report(trained, *pieces_of(range(300, 310)))
    assert report["per_style"] == {"bach_chorale": 1.0, "irish_oneills": 1.0}
    assert np.asarray(report["confusion"]).sum() == 20
    # the test split's accuracy is recorded with the classifier, per style
    assert trained.meta["test"]["per_style"] == {"bach_chorale": 1.0, "irish_oneills": 1.0}
    assert trained.meta["train_pieces_per_style"] == {"bach_chorale": 12, "irish_oneills": 12}
    assert set(trained.meta["validation_balanced_accuracy"]) == {str(d) for d in sc.ClassifierSettings().weight_decays}


def test_a_transposed_piece_keeps_its_style(trained):
    piece = fiddle_like(7)
    moved = piece.notes.copy()
    moved["pitch"] -= 7
    down = type(piece)(moved, piece.bar_starts_beats, piece.bar_starts, piece.time_signatures)
    np.testing.assert_allclose(
        sc.style_features(down)[trained.feature_names.index("key_pc.0") : trained.feature_names.index("key_minor")],
        sc.style_features(piece)[trained.feature_names.index("key_pc.0") : trained.feature_names.index("key_minor")],
    )
    assert trained.predict([down]) == ["irish_oneills"]


def test_fidelity_and_confusion_of_pieces_with_known_styles(trained):
    chorales = [chorale_like(s) for s in range(400, 403)]
    tunes = [fiddle_like(s) for s in range(400, 405)]
    # three chorales and two fiddle tunes requested as chorales; three fiddle tunes requested as such
    pieces = chorales + tunes[:2] + tunes[2:]
    requested = ["bach_chorale"] * 5 + ["irish_oneills"] * 3
    scores = sc.style_fidelity(pieces, requested, trained)
    values = scores["values"]
    assert values["fidelity.bach_chorale"] == pytest.approx(3 / 5)
    assert values["fidelity.irish_oneills"] == 1.0
    assert values["fidelity"] == pytest.approx(6 / 8) and values["fidelity_macro"] == pytest.approx(0.8)
    assert values["chance"] == 0.5
    assert scores["per_piece"]["style_match"] == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    p = np.asarray(scores["per_piece"]["p_requested"])
    assert np.all(p[:3] > 0.5) and np.all(p[3:5] < 0.5) and np.all(p[5:] > 0.5)
    confusion = {k.removeprefix("confusion."): v for k, v in values.items() if k.startswith("confusion.")}
    assert confusion == {
        "bach_chorale.bach_chorale": 3,
        "bach_chorale.irish_oneills": 2,
        "irish_oneills.bach_chorale": 0,
        "irish_oneills.irish_oneills": 3,
    }
    assert sum(confusion.values()) == len(pieces)
    # the real-vs-real reference: the classifier's test accuracy, per style and for this mix of styles
    assert values["real_accuracy.bach_chorale"] == trained.meta["test"]["per_style"]["bach_chorale"]
    assert values["real_accuracy"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"does not know \['polka'\]"):
        sc.style_fidelity(pieces[:1], ["polka"], trained)


def test_saved_classifier_round_trips_and_loading_runs_no_code(trained, tmp_path):
    path = trained.save(tmp_path / "classifier.npz")
    loaded = sc.load_classifier(path)
    pieces, _ = pieces_of(range(500, 503))
    np.testing.assert_allclose(loaded.probabilities(pieces), trained.probabilities(pieces))
    assert loaded.meta["test"] == json.loads(json.dumps(trained.meta["test"]))

    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("pwned",))

    arrays = trained.to_arrays()
    arrays["meta"] = np.array([Payload()], dtype=object)  # a pickled object where JSON belongs
    with open(tmp_path / "evil.npz", "wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(ValueError, match="not a readable style classifier"):
        sc.load_classifier(tmp_path / "evil.npz")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="evil.pkl"):
        sc.load_classifier(tmp_path / "evil.pkl")
    assert not marker.exists()


def write_corpus(root: Path, extra: bool = False, per_style: int = 8) -> Path:
    """Two styles of seeded tunes as a MIDI folder: jigs (one line, above middle C), airs (in octaves, lower)."""
    for style, tonic, chords in (("jigs", 62, False), ("airs", 55, True)):
        for k in range(per_style + (2 if extra and style == "jigs" else 0)):
            path = root / style / f"{style}_{k:02d}.mid"
            path.parent.mkdir(parents=True, exist_ok=True)
            score_from_notes(random_piece(1000 * tonic + k, n_notes=40, root=tonic, chords=chords)).dump_midi(str(path))
    return root


def prepared_data(corpus: Path, cache: Path):
    from lyria.evaluation.evaluate import prepare

    overrides = [
        "generated=unused",
        "data=midi_folder",
        f"data.path={corpus}",
        "data.test_fraction=0.3",
        "data.val_fraction=0.1",
        "data.num_proc=1",
        f"paths.cache_dir={cache}",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=overrides)
    return prepare(cfg.data, cfg.tokenizer)[1]


def family_assets(prepared, assets_dir: Path) -> dict:
    """The assets the style family records for two requested tunes of the data."""
    pieces = [random_piece(1, root=62), random_piece(2, root=55, chords=True)]
    generated = PieceSet("generated", ["a.mid", "b.mid"], pieces, ["jigs", "airs"])
    result = StyleFidelity().compute(EvalInputs(generated, generated, data=prepared, assets=AssetStore(assets_dir)))
    assert result.values["fidelity"] is not None, result.unavailable
    return {"version": 1, "assets": result.assets}


def test_classifier_asset_records_its_data_and_refuses_comparison_across_data(tmp_path):
    prepared = prepared_data(write_corpus(tmp_path / "corpus"), tmp_path / "cache")
    monday = family_assets(prepared, tmp_path / "assets_monday")
    tuesday = family_assets(prepared, tmp_path / "assets_tuesday")  # trained again from scratch: the same file
    assert monday == tuesday
    assert_comparable(monday, tuesday)

    classifier, path = sc.classifier_for_data(prepared, tmp_path / "assets_monday")
    assert path.parent == tmp_path / "assets_monday" / "style_classifier" and path.name.startswith(f"v{sc.VERSION}-")
    assert classifier.meta["data"]["train_hash"] == split_key(prepared, "train")
    assert classifier.meta["settings"] == sc.ClassifierSettings().as_dict()
    other_settings = sc.ClassifierSettings(weight_decays=(0.5,))
    assert sc.classifier_path(prepared, tmp_path / "assets_monday", other_settings) != path

    grown = prepared_data(write_corpus(tmp_path / "corpus2", extra=True), tmp_path / "cache2")
    assert split_key(grown, "train") != split_key(prepared, "train")
    elsewhere = family_assets(grown, tmp_path / "assets_monday")
    assert elsewhere["assets"]["style_classifier"] != monday["assets"]["style_classifier"]
    with pytest.raises(AssetMismatchError, match="style_classifier"):
        assert_comparable(monday, elsewhere)


def test_a_single_style_cannot_train_a_classifier(tmp_path):
    with pytest.raises(ValueError, match="at least two styles"):
        sc.train_classifier(([chorale_like(0), chorale_like(1)], ["bach_chorale"] * 2))


def test_summary_prints_each_style_beside_real_accuracy():
    document = {
        "generated": {"styles": {"bach_chorale": 4, "irish_oneills": 1}},
        "style": {
            "fidelity": 0.5,
            "chance": 0.5,
            "real_accuracy": 0.9,
            "fidelity.bach_chorale": 0.75,
            "real_accuracy.bach_chorale": 1.0,
            "fidelity.irish_oneills": 0.0,
            "real_accuracy.irish_oneills": 0.7,
        },
    }
    lines = style_lines(document)
    assert len(lines) == 4
    assert "bach_chorale (4 samples)" in lines[1] and lines[1].split()[-2:] == ["0.750", "1.000"]
    assert "irish_oneills (1 sample)" in lines[2] and lines[2].split()[-2:] == ["0.000", "0.700"]
    assert lines[3].split()[-2:] == ["0.500", "0.900"]
    assert style_lines({"style": {}}) == []


def test_cli_trains_then_reads_back_and_prints_accuracy_per_style(tmp_path, capsys):
    from lyria.config import ConfigError

    corpus = write_corpus(tmp_path / "corpus")
    overrides = [
        "data=midi_folder",
        f"data.path={corpus}",
        "data.test_fraction=0.3",
        "data.val_fraction=0.1",
        "data.num_proc=1",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="style_classifier", overrides=overrides)
        wider = compose(config_name="style_classifier", overrides=overrides + ["classifier.hidden=8"])
        wrong = compose(config_name="style_classifier", overrides=overrides + ["+classifier.hiden=8"])
    classifier, path = sc.run(cfg)
    printed = capsys.readouterr().out
    assert path.is_file() and path.is_relative_to(tmp_path / "cache" / "eval" / "style_classifier")
    for style in ("airs", "jigs"):
        assert f"{style} " in printed and "test accuracy" in printed
    assert str(path.resolve()) in printed
    mtime = path.stat().st_mtime_ns
    again, same = sc.run(cfg)  # read back, not retrained
    assert same == path and path.stat().st_mtime_ns == mtime and again.meta == classifier.meta
    _, other = sc.run(wider)
    assert other != path and len(sc.load_classifier(other).layers) == 2
    with pytest.raises(ConfigError, match=r"unknown settings \['hiden'\]"):
        sc.run(wrong)


@pytest.mark.slow
def test_classifier_tells_real_bach_chorales_from_real_irish_tunes(shared_cache, tmp_path):
    """Real music21 pieces: a test split of chorales and O'Neill's tunes the classifier never saw."""
    from omegaconf import OmegaConf

    from lyria.evaluation.evaluate import prepare

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["generated=unused", f"paths.cache_dir={shared_cache}"])
    styles = [
        {"name": "bach_chorale", "composer": "bach", "extensions": ["mxl", "xml"]},
        {"name": "irish_oneills", "composer": "oneills1850", "extensions": ["abc"]},
    ]
    OmegaConf.update(cfg, "data.source.styles", styles, force_add=True)
    for key, value in (("max_pieces_per_style", 40), ("test_fraction", 0.3), ("val_fraction", 0.1)):
        OmegaConf.update(cfg, f"data.{key}", value)
    _, prepared = prepare(cfg.data, cfg.tokenizer)
    classifier, _ = sc.classifier_for_data(prepared, tmp_path / "assets")
    test = classifier.meta["test"]
    assert min(test["pieces_per_style"].values()) >= 5, test
    assert all(accuracy >= 0.8 for accuracy in test["per_style"].values()), test


def test_cli_mistakes_are_one_line_naming_the_key(tmp_path):
    import os

    from lyria.config import ConfigError
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("LYRIA_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "-m", "lyria.cli.style_classifier", "classifier.hiden=8", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("lyria-style-classifier: error: ") and re.search(r"unknown config key 'classifier\.hiden'; did you mean 'classifier\.hidden'", last), result.stderr
    with pytest.raises(ConfigError, match=r"classifier\.weight_decays is empty"):
        sc.settings_from_config({"weight_decays": []})


def test_a_new_classifier_version_changes_the_family_settings(monkeypatch):
    """The settings key the cached real-vs-real baseline: a new classifier format must not reuse old scores."""
    before = StyleFidelity().settings()
    monkeypatch.setattr(sc, "VERSION", sc.VERSION + 1)
    assert StyleFidelity().settings() == before | {"classifier_version": sc.VERSION}
