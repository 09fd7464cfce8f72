"""The style classifier (musical features -> logistic regression, trained on the real training split) and style
fidelity: how often generated pieces are classified as the style they were asked for. See README "Style fidelity"."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from lyria.evaluation.assets import atomic_write, digest
from lyria.evaluation.base import PieceNotes
from lyria.evaluation.coherence import estimate_keys
from lyria.evaluation.features import (
    FAMILY as FEATURES_FAMILY,
    PIECE_METRICS,
    TIME_BIN_LABELS,
    FeatureSettings,
    bar_beats,
    duration_histogram,
    ioi_histogram,
    metrics_of,
    pitch_class_transition_matrix,
    pitched,
)

log = logging.getLogger(__name__)

VERSION = 1
ASSET = "style_classifier"
FORMAT = "lyria-style-classifier"

INTERVAL_LIMIT = 12  # melodic intervals of the top line, clipped to +-an octave
# onset positions within a beat: on the beat, sixteenths, triplets, eighths (nearest wins)
BEAT_PHASES = np.array([0.0, 0.25, 1 / 3, 0.5, 2 / 3, 0.75, 1.0])
PHASE_LABELS = ["0", "1/4", "1/3", "1/2", "2/3", "3/4"]


@dataclass(frozen=True)
class ClassifierSettings:
    """How the classifier is trained (recorded in the asset and its key).

    `weight_decays`: the L2 strengths tried, one chosen by balanced accuracy on the validation split;
    `hidden`: 0 for a linear model, else the width of one tanh hidden layer; `max_pieces_per_style`:
    a seeded cap on each style's training pieces (null: all).
    """

    hidden: int = 0
    weight_decays: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    max_iter: int = 300
    seed: int = 0
    max_pieces_per_style: int | None = 2000
    feature_resolution: int = 24

    def as_dict(self) -> dict:
        return asdict(self) | {"weight_decays": [float(w) for w in self.weight_decays]}


# ---------------------------------------------------------------------------------------------------------
# features


def _feature_names() -> list[str]:
    names = [f"features.{n}" for n in metrics_of(FEATURES_FAMILY)]
    names += [f"ioi_hist.{label}" for label in TIME_BIN_LABELS] + [f"duration_hist.{label}" for label in TIME_BIN_LABELS]
    names += [f"key_pc.{i}" for i in range(12)] + ["key_minor"]
    names += [f"key_transition.{a}.{b}" for a in range(12) for b in range(12)]
    names += [f"interval.{i}" for i in range(-INTERVAL_LIMIT, INTERVAL_LIMIT + 1)] + ["mean_abs_interval", "repeated_pitch"]
    names += [f"beat_phase.{label}" for label in PHASE_LABELS]
    names += ["pitch_mean", "pitch_std", "pitch_low", "pitch_high", "notes_per_onset", "chord_onsets"]
    names += ["bar_beats", "ts_numerator", "ts_denominator"]
    return names


def style_features(piece: PieceNotes, settings: FeatureSettings | None = None) -> np.ndarray:
    """The piece's feature vector (NaN where a feature is undefined, e.g. a piece without pitched notes)."""
    settings = settings or FeatureSettings()
    parts: list[np.ndarray] = [np.array([PIECE_METRICS[n].fn(piece, settings) for n in metrics_of(FEATURES_FAMILY)])]
    parts += [ioi_histogram(piece), duration_histogram(piece)]
    notes = pitched(piece)
    if len(notes):
        weights = np.bincount(notes["pitch"] % 12, weights=notes["end_beats"] - notes["start_beats"], minlength=12)
        key = int(estimate_keys(weights[None, :])[0])
        tonic = key % 12 if key >= 0 else 0
        histogram = np.roll(weights, -tonic)
        parts.append(histogram / histogram.sum() if histogram.sum() > 0 else np.full(12, np.nan))
        parts.append(np.array([float(key >= 12)]))
        transitions = pitch_class_transition_matrix(piece).reshape(12, 12)
        parts.append(np.roll(np.roll(transitions, -tonic, axis=0), -tonic, axis=1).ravel())
    else:
        parts += [np.full(12, np.nan), np.full(1, np.nan), np.full(144, np.nan)]
    parts.append(_interval_features(notes))
    parts.append(_phase_histogram(notes))
    parts.append(_register_and_texture(notes))
    if piece.time_signatures:
        _, numerator, denominator = piece.time_signatures[0]
    else:
        numerator, denominator = 4, 4
    parts.append(np.array([bar_beats(piece), numerator, denominator], dtype=np.float64))
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])


def _top_line(notes: np.ndarray) -> np.ndarray:
    """The highest pitch at each distinct onset."""
    if not len(notes):
        return np.zeros(0, dtype=np.int64)
    onsets, group = np.unique(np.round(notes["start_beats"], 6), return_inverse=True)
    top = np.full(len(onsets), -1, dtype=np.int64)
    np.maximum.at(top, group, notes["pitch"].astype(np.int64))
    return top


def _interval_features(notes: np.ndarray) -> np.ndarray:
    steps = np.diff(_top_line(notes))
    if not len(steps):
        return np.full(2 * INTERVAL_LIMIT + 3, np.nan)
    clipped = np.clip(steps, -INTERVAL_LIMIT, INTERVAL_LIMIT) + INTERVAL_LIMIT
    histogram = np.bincount(clipped, minlength=2 * INTERVAL_LIMIT + 1) / len(steps)
    return np.concatenate([histogram, [np.abs(steps).mean(), float(np.mean(steps == 0))]])


def _phase_histogram(notes: np.ndarray) -> np.ndarray:
    if not len(notes):
        return np.full(len(PHASE_LABELS), np.nan)
    phase = np.unique(np.round(notes["start_beats"], 6)) % 1.0
    nearest = np.abs(phase[:, None] - BEAT_PHASES[None, :]).argmin(axis=1) % len(PHASE_LABELS)  # 1.0 is 0
    return np.bincount(nearest, minlength=len(PHASE_LABELS)) / len(phase)


def _register_and_texture(notes: np.ndarray) -> np.ndarray:
    if not len(notes):
        return np.full(6, np.nan)
    pitch = notes["pitch"].astype(np.float64)
    _, per_onset = np.unique(np.round(notes["start_beats"], 6), return_counts=True)
    return np.array([pitch.mean(), pitch.std(), np.percentile(pitch, 5), np.percentile(pitch, 95), per_onset.mean(), np.mean(per_onset > 1)])


def feature_matrix(pieces: Sequence[PieceNotes], settings: FeatureSettings, desc: str = "style features") -> np.ndarray:
    rows = [style_features(p, settings) for p in tqdm(pieces, desc=desc, unit="piece", leave=False, mininterval=1.0)]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(_feature_names()))


# ---------------------------------------------------------------------------------------------------------
# the model


@dataclass
class StyleClassifier:
    """A trained classifier: z-scoring of the kept features, then dense layers (tanh between), softmax over `styles`."""

    styles: list[str]
    feature_names: list[str]
    keep: np.ndarray  # bool, over feature_names
    mean: np.ndarray
    scale: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]  # (weight (in, out), bias (out,))
    meta: dict = field(default_factory=dict)

    def standardize(self, features: np.ndarray) -> np.ndarray:
        z = (features[:, self.keep] - self.mean) / self.scale
        return np.where(np.isfinite(z), z, 0.0)  # an undefined feature sits at the training mean

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = self.standardize(features)
        for i, (weight, bias) in enumerate(self.layers):
            x = x @ weight + bias
            if i < len(self.layers) - 1:
                x = np.tanh(x)
        return x

    def probabilities(self, pieces: Sequence[PieceNotes]) -> np.ndarray:
        """(pieces, styles) softmax probabilities."""
        if not len(pieces):
            return np.zeros((0, len(self.styles)))
        logits = self.logits(feature_matrix(pieces, self.feature_settings()))
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, pieces: Sequence[PieceNotes]) -> list[str]:
        return [self.styles[i] for i in self.probabilities(pieces).argmax(axis=1)]

    def feature_settings(self) -> FeatureSettings:
        return FeatureSettings(resolution=int(self.meta.get("settings", {}).get("feature_resolution", 24)))

    @property
    def test_accuracy(self) -> dict[str, float | None]:
        """Accuracy on the real test split per style (None for a style without test pieces)."""
        return dict(self.meta.get("test", {}).get("per_style", {}))

    # -- files: numpy arrays and one JSON string, never pickle

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {
            "format": np.array(FORMAT),
            "meta": np.array(json.dumps(self.meta | {"styles": self.styles, "feature_names": self.feature_names}, sort_keys=True)),
            "keep": self.keep.astype(bool),
            "mean": self.mean,
            "scale": self.scale,
        }
        for i, (weight, bias) in enumerate(self.layers):
            arrays[f"layer{i}.weight"], arrays[f"layer{i}.bias"] = weight, bias
        return arrays

    def save(self, path: str | Path) -> Path:
        path = Path(path)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, **self.to_arrays())

        atomic_write(path, write)
        return path


def load_classifier(path: str | Path) -> StyleClassifier:
    """Reads a saved classifier (numpy arrays and JSON only: `allow_pickle=False`, so no code runs)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path} is not a readable style classifier (numpy arrays without pickled objects): {err}") from err
    if str(arrays.get("format", "")) != FORMAT or "meta" not in arrays:
        raise ValueError(f"{path} is not a lyria style classifier (no '{FORMAT}' format marker)")
    meta = json.loads(str(arrays["meta"]))
    if meta.get("version") != VERSION:
        raise ValueError(f"{path} is style classifier format v{meta.get('version')}; this lyria reads v{VERSION}: retrain it")
    if meta.get("feature_names") != _feature_names():
        raise ValueError(f"{path} was trained on other features than this lyria computes: retrain it")
    layers, i = [], 0
    while f"layer{i}.weight" in arrays:
        layers.append((arrays[f"layer{i}.weight"].astype(np.float64), arrays[f"layer{i}.bias"].astype(np.float64)))
        i += 1
    styles = list(meta.pop("styles"))
    names = list(meta.pop("feature_names"))
    if not layers or layers[-1][0].shape[1] != len(styles):
        raise ValueError(f"{path}: the output layer does not match its {len(styles)} styles")
    return StyleClassifier(styles, names, arrays["keep"].astype(bool), arrays["mean"], arrays["scale"], layers, meta)


_LOADED: dict[tuple[str, int, int], StyleClassifier] = {}


def classifier_at(path: str | Path) -> StyleClassifier:
    """load_classifier, remembered per file (path, size and modification time)."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _LOADED:
        _LOADED[key] = load_classifier(path)
    return _LOADED[key]


def _fit(x: np.ndarray, y: np.ndarray, n_classes: int, weight_decay: float, settings: ClassifierSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """Full-batch L-BFGS on class-balanced cross-entropy plus L2 on the weights (float64, seeded)."""
    import torch

    torch.manual_seed(settings.seed)
    inputs = torch.from_numpy(x)
    targets = torch.from_numpy(y.astype(np.int64))
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    class_weight = torch.from_numpy(np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0))
    widths = [x.shape[1]] + ([settings.hidden] if settings.hidden > 0 else []) + [n_classes]
    layers = [torch.nn.Linear(a, b, dtype=torch.float64) for a, b in zip(widths[:-1], widths[1:])]
    if settings.hidden <= 0:
        for layer in layers:
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
    parameters = [p for layer in layers for p in layer.parameters()]
    optimizer = torch.optim.LBFGS(parameters, lr=1.0, max_iter=settings.max_iter, history_size=20, line_search_fn="strong_wolfe")

    def forward(batch):
        for i, layer in enumerate(layers):
            batch = layer(batch)
            if i < len(layers) - 1:
                batch = torch.tanh(batch)
        return batch

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(forward(inputs), targets, weight=class_weight)
        loss = loss + weight_decay * sum((layer.weight**2).sum() for layer in layers)
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small problem: threads only contend (and the result does not depend on their number)
    try:
        optimizer.step(closure)
    finally:
        torch.set_num_threads(threads)
    return [(layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy()) for layer in layers]


def _standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keep = np.isfinite(x).any(axis=0)
    columns = x[:, keep]
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(columns, axis=0)
        std = np.nanstd(columns, axis=0)
    return keep, mean, np.where(std > 1e-8, std, 1.0)


def confusion_matrix(true: Sequence[str], predicted: Sequence[str], rows: Sequence[str], columns: Sequence[str]) -> np.ndarray:
    """counts[i, j]: pieces of style rows[i] classified as columns[j]."""
    row_index, column_index = {s: i for i, s in enumerate(rows)}, {s: j for j, s in enumerate(columns)}
    counts = np.zeros((len(rows), len(columns)), dtype=np.int64)
    for t, p in zip(true, predicted):
        if t in row_index and p in column_index:
            counts[row_index[t], column_index[p]] += 1
    return counts


def accuracy_report(classifier: StyleClassifier, pieces: Sequence[PieceNotes], styles: Sequence[str]) -> dict:
    """Accuracy per style, overall and balanced (mean over styles with pieces), and the confusion matrix."""
    predicted = classifier.predict(pieces) if len(pieces) else []
    matrix = confusion_matrix(styles, predicted, classifier.styles, classifier.styles)
    per_style = {
        s: (float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum() else None) for i, s in enumerate(classifier.styles)
    }
    defined = [v for v in per_style.values() if v is not None]
    total = int(matrix.sum())
    return {
        "n_pieces": total,
        "pieces_per_style": {s: int(matrix[i].sum()) for i, s in enumerate(classifier.styles)},
        "accuracy": float(np.trace(matrix) / total) if total else None,
        "balanced_accuracy": float(np.mean(defined)) if defined else None,
        "per_style": per_style,
        "confusion": matrix.tolist(),
    }


def _capped(styles: list[str], cap: int | None, seed: int) -> np.ndarray:
    """Indices of at most `cap` pieces per style (a seeded sample), sorted."""
    styles_array = np.asarray(styles)
    if cap is None:
        return np.arange(len(styles))
    chosen = []
    for style in sorted(set(styles)):
        members = np.flatnonzero(styles_array == style)
        if len(members) > cap:
            members = np.random.default_rng([seed, len(members), cap]).choice(members, cap, replace=False)
        chosen.append(members)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def train_classifier(
    train: tuple[Sequence[PieceNotes], Sequence[str]],
    validation: tuple[Sequence[PieceNotes], Sequence[str]] | None = None,
    test: tuple[Sequence[PieceNotes], Sequence[str]] | None = None,
    settings: ClassifierSettings = ClassifierSettings(),
    meta: dict | None = None,
) -> StyleClassifier:
    """Fits the classifier on (pieces, styles) of the training split; scores the validation and test splits.

    Needs at least two styles with training pieces; pieces without a style are left out.
    """
    pieces, styles = list(train[0]), [s for s in train[1]]
    labelled = [i for i, s in enumerate(styles) if s]
    chosen = [labelled[i] for i in _capped([styles[i] for i in labelled], settings.max_pieces_per_style, settings.seed)]
    known = sorted({styles[i] for i in chosen})
    if len(known) < 2:
        raise ValueError(f"a style classifier needs training pieces of at least two styles, found {known or 'none'}")
    feature_settings = FeatureSettings(resolution=settings.feature_resolution)
    x = feature_matrix([pieces[i] for i in chosen], feature_settings, "style features (train)")
    y = np.array([known.index(styles[i]) for i in chosen])
    keep, mean, scale = _standardizer(x)
    names = _feature_names()

    def model(layers, extra=None) -> StyleClassifier:
        return StyleClassifier(known, names, keep, mean, scale, layers, {"version": VERSION, "settings": settings.as_dict()} | (extra or {}))

    z = model([]).standardize(x)
    tried = {}
    if validation is not None and any(s in known for s in validation[1]) and len(settings.weight_decays) > 1:
        val_pieces = [p for p, s in zip(*validation) if s in known]
        val_styles = [s for s in validation[1] if s in known]
        val_x = feature_matrix(val_pieces, feature_settings, "style features (validation)")
        for decay in settings.weight_decays:
            candidate = model(_fit(z, y, len(known), decay, settings))
            predicted = [known[i] for i in candidate.logits(val_x).argmax(axis=1)]
            hits = confusion_matrix(val_styles, predicted, known, known)
            per_style = [hits[i, i] / hits[i].sum() for i in range(len(known)) if hits[i].sum()]
            tried[str(float(decay))] = float(np.mean(per_style))
        # the best balanced accuracy; on a tie the stronger regularisation
        best = max(settings.weight_decays, key=lambda d: (round(tried[str(float(d))], 9), d))
    else:
        best = sorted(settings.weight_decays)[len(settings.weight_decays) // 2]
    classifier = model(
        _fit(z, y, len(known), best, settings),
        {
            "weight_decay": float(best),
            "validation_balanced_accuracy": tried,
            "train_pieces_per_style": {s: int((y == i).sum()) for i, s in enumerate(known)},
        }
        | (meta or {}),
    )
    if test is not None:
        test_pieces = [p for p, s in zip(*test) if s in known]
        classifier.meta["test"] = accuracy_report(classifier, test_pieces, [s for s in test[1] if s in known])
        classifier.meta["test"]["unknown_styles"] = sorted({s for s in test[1] if s and s not in known})
    return classifier


# ---------------------------------------------------------------------------------------------------------
# the prepared data's classifier and the fidelity of generated pieces


def classifier_key(prepared, settings: ClassifierSettings) -> dict:
    """What the classifier of `prepared` is computed from: the three split manifests, the settings and the features."""
    from lyria.evaluation.sets import split_key

    return {
        "train": split_key(prepared, "train"),
        "validation": split_key(prepared, "validation"),
        "test": split_key(prepared, "test"),
        "settings": settings.as_dict(),
        "features": _feature_names(),  # a feature added to the features family makes a new classifier
    }


def classifier_path(prepared, assets_dir: str | Path | None, settings: ClassifierSettings) -> Path:
    """`<assets_dir>/style_classifier/v<VERSION>-<key>.npz`; without an assets_dir, beside the token cache."""
    root = Path(assets_dir) if assets_dir is not None else Path(prepared.cache_path) / "eval"
    return root / ASSET / f"v{VERSION}-{digest([ASSET, VERSION, classifier_key(prepared, settings)])}.npz"


def classifier_for_data(
    prepared, assets_dir: str | Path | None = None, settings: ClassifierSettings | None = None
) -> tuple[StyleClassifier, Path]:
    """The classifier of the prepared data: read from its asset file, or trained on the training split and saved."""
    from lyria.evaluation.sets import load_split

    settings = settings or ClassifierSettings()
    path = classifier_path(prepared, assets_dir, settings)
    if path.is_file():
        try:
            return classifier_at(path), path
        except ValueError as err:  # a truncated or outdated file is rebuilt, not trusted
            log.warning("retraining the style classifier: %s", err)
    splits = {name: load_split(prepared, name) for name in ("train", "validation", "test")}
    key = classifier_key(prepared, settings)
    log.info("training the style classifier on %d training pieces", len(splits["train"]))
    classifier = train_classifier(
        (splits["train"].pieces, splits["train"].styles),
        (splits["validation"].pieces, splits["validation"].styles),
        (splits["test"].pieces, splits["test"].styles),
        settings,
        {"data": {"train_hash": key["train"], "validation_hash": key["validation"], "test_hash": key["test"]}},
    )
    classifier.save(path)
    log.info("saved the style classifier %s (test accuracy %s)", path, classifier.meta["test"].get("accuracy"))
    return classifier, path


def style_fidelity(pieces: Sequence[PieceNotes], styles: Sequence[str], classifier: StyleClassifier | str | Path) -> dict[str, Any]:
    """How well pieces sound like their requested styles.

    values: `fidelity` (share of all pieces classified as their requested style), `fidelity_macro` (mean
    over the requested styles), `fidelity.<style>` per requested style, `chance` (1 / styles the classifier
    knows), `real_accuracy.<style>` (the classifier's accuracy on the real test pieces of that style: the
    real-vs-real reference for `fidelity.<style>`), `real_accuracy` (those accuracies weighted by the
    requested mix of styles: the reference for `fidelity`), `test_accuracy` and `test_balanced_accuracy`
    (the whole real test split), and `confusion.<requested>.<predicted>` (piece counts; rows: requested
    styles; columns: every style the classifier knows). per_piece: `style_match` (1 or 0) and `p_requested` (the probability of the
    requested style). Raises ValueError for a requested style the classifier does not know.
    """
    model = classifier if isinstance(classifier, StyleClassifier) else classifier_at(classifier)
    styles = list(styles)
    if len(styles) != len(pieces):
        raise ValueError(f"{len(pieces)} pieces but {len(styles)} requested styles")
    unknown = sorted({str(s) for s in styles} - set(model.styles))
    if unknown:
        raise ValueError(f"the style classifier does not know {unknown}; it was trained on {model.styles}")
    probabilities = model.probabilities(pieces)
    predicted = [model.styles[i] for i in probabilities.argmax(axis=1)]
    match = np.array([float(p == s) for p, s in zip(predicted, styles)])
    requested = sorted(set(styles))
    values: dict[str, float | None] = {
        "fidelity": float(match.mean()) if len(match) else None,
        "fidelity_macro": float(np.mean([match[np.array(styles) == s].mean() for s in requested])) if requested else None,
        "chance": 1.0 / len(model.styles),
    }
    test = model.meta.get("test", {})
    real = model.test_accuracy
    counts = {s: styles.count(s) for s in requested}
    weighted = [(counts[s], real.get(s)) for s in requested if real.get(s) is not None]
    # what real pieces in the same mix of styles score: the reference for `fidelity`
    values["real_accuracy"] = sum(n * a for n, a in weighted) / sum(n for n, _ in weighted) if weighted else None
    values["test_accuracy"] = test.get("accuracy")
    values["test_balanced_accuracy"] = test.get("balanced_accuracy")
    for style in requested:
        values[f"fidelity.{style}"] = float(match[np.array(styles) == style].mean())
        values[f"real_accuracy.{style}"] = real.get(style)
    matrix = confusion_matrix(styles, predicted, requested, model.styles)
    for i, style in enumerate(requested):
        for j, other in enumerate(model.styles):
            values[f"confusion.{style}.{other}"] = float(matrix[i, j])
    column = [model.styles.index(s) for s in styles]
    p_requested = probabilities[np.arange(len(styles)), column] if len(styles) else np.zeros(0)
    return {
        "values": values,
        "per_piece": {"style_match": match.tolist(), "p_requested": p_requested.tolist()},
        "predicted": predicted,
        "styles": list(model.styles),
    }


def describe(classifier: StyleClassifier) -> list[str]:
    """Lines on the classifier: training data, settings and accuracy on the real test split per style."""
    meta, test = classifier.meta, classifier.meta.get("test", {})
    lines = [
        f"style classifier v{meta.get('version')}: {len(classifier.styles)} styles, "
        f"trained on {sum(meta.get('train_pieces_per_style', {}).values())} pieces "
        f"(training data {meta.get('data', {}).get('train_hash', '?')}), L2 {meta.get('weight_decay')}",
        f"real test split: accuracy {_fmt(test.get('accuracy'))}, balanced {_fmt(test.get('balanced_accuracy'))} "
        f"over {test.get('n_pieces', 0)} pieces",
    ]
    for style in classifier.styles:
        lines.append(
            f"  {style:24s} test accuracy {_fmt(test.get('per_style', {}).get(style)):>6s} "
            f"({test.get('pieces_per_style', {}).get(style, 0)} test, {meta.get('train_pieces_per_style', {}).get(style, 0)} train)"
        )
    return lines


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def settings_from_config(node: Any) -> ClassifierSettings:
    """ClassifierSettings from a config node; an unknown key is a ConfigError naming the known ones."""
    from lyria.config import ConfigError, to_plain

    values = dict(to_plain(node) or {})
    known = set(ClassifierSettings.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"classifier: unknown settings {unknown}; known: {sorted(known)}")
    if "weight_decays" in values:
        values["weight_decays"] = tuple(float(w) for w in values["weight_decays"])
        if not values["weight_decays"]:
            raise ConfigError("classifier.weight_decays is empty: give at least one L2 strength")
    return ClassifierSettings(**values)


def run(cfg) -> tuple[StyleClassifier, Path]:
    """lyria-style-classifier: the classifier of the configured data, its accuracy printed per style."""
    from lyria.evaluation.evaluate import prepare

    settings = settings_from_config(cfg.get("classifier"))
    _, prepared = prepare(cfg.data, cfg.tokenizer)
    classifier, path = classifier_for_data(prepared, cfg.assets_dir, settings)
    print("\n".join(describe(classifier) + [f"classifier: {path.resolve()}"]))
    return classifier, path
