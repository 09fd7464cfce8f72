"""Per-piece musical features (MusPy's published definitions where MusPy has one) and the `features` family.

Times are in beats (quarter notes) on a grid of `resolution` steps per beat, MusPy's `resolution`. Drums:
pitch features ignore drum notes, as MusPy does; rhythm features (empty beats, groove) count every note;
`drum_pattern_consistency` reads drum notes only and is undefined (NaN) for a piece without drums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from lyria.evaluation.base import (
    EvalInputs,
    Family,
    FamilyResult,
    PieceNotes,
    PieceSet,
    check_metric_names,
    metrics_of,
    nanmean,
    piece_metric,
    register_family,
    PIECE_METRICS,
)

FEATURES_VERSION = 1
FAMILY = "features"

MAJOR = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], dtype=bool)
MINOR = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], dtype=bool)
# rows: the 12 major then the 12 minor scales, rooted on C, C#, ...
SCALES = np.stack([np.roll(MAJOR, root) for root in range(12)] + [np.roll(MINOR, root) for root in range(12)])
# bins centred on note values of 1/8 ... 4 beats (geometric edges), open at both ends
TIME_EDGES_BEATS = 2.0 ** (np.arange(-4, 3) + 0.5)
TIME_BIN_LABELS = ["<=1/16", "1/8", "1/4", "1/2", "1", "2", "4", ">=8"]
PITCH_CLASS_LABELS = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


@dataclass(frozen=True)
class FeatureSettings:
    """How notes meet the time grid. `polyphony_threshold`: MusPy's (steps with more pitches count)."""

    resolution: int = 24
    polyphony_threshold: int = 2


def pitched(piece: PieceNotes) -> np.ndarray:
    return piece.notes[~piece.notes["is_drum"]]


def steps(beats: np.ndarray, resolution: int) -> np.ndarray:
    return np.round(np.asarray(beats, dtype=np.float64) * resolution).astype(np.int64)


def bar_beats(piece: PieceNotes) -> float:
    """Length of a bar in beats from the first time signature (4/4 when the piece has none)."""
    if not piece.time_signatures:
        return 4.0
    _, numerator, denominator = piece.time_signatures[0]
    return numerator * 4.0 / denominator


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram (normalised here); NaN for an empty histogram."""
    total = counts.sum()
    if total <= 0:
        return math.nan
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def _pitch_class_counts(notes: np.ndarray) -> np.ndarray:
    return np.bincount(notes["pitch"] % 12, minlength=12).astype(np.float64)


@piece_metric(FAMILY)
def pitch_range(piece: PieceNotes, settings: FeatureSettings) -> float:
    """max(pitch) - min(pitch) over pitched notes (MusPy `pitch_range`); NaN without pitched notes."""
    notes = pitched(piece)
    return float(notes["pitch"].max() - notes["pitch"].min()) if len(notes) else math.nan


@piece_metric(FAMILY)
def n_pitches_used(piece: PieceNotes, settings: FeatureSettings) -> float:
    """|{pitch}| over pitched notes (MusPy `n_pitches_used`)."""
    return float(len(np.unique(pitched(piece)["pitch"])))


@piece_metric(FAMILY)
def n_pitch_classes_used(piece: PieceNotes, settings: FeatureSettings) -> float:
    """|{pitch mod 12}| over pitched notes (MusPy `n_pitch_classes_used`)."""
    return float(len(np.unique(pitched(piece)["pitch"] % 12)))


@piece_metric(FAMILY)
def pitch_entropy(piece: PieceNotes, settings: FeatureSettings) -> float:
    """-sum_i P(pitch=i) log2 P(pitch=i), P the normalised note-count pitch histogram (MusPy `pitch_entropy`)."""
    return entropy_bits(np.bincount(pitched(piece)["pitch"], minlength=128).astype(np.float64))


@piece_metric(FAMILY)
def pitch_class_entropy(piece: PieceNotes, settings: FeatureSettings) -> float:
    """-sum_c P(pc=c) log2 P(pc=c) over the 12 pitch classes, note counts (MusPy `pitch_class_entropy`)."""
    return entropy_bits(_pitch_class_counts(pitched(piece)))


@piece_metric(FAMILY)
def scale_consistency(piece: PieceNotes, settings: FeatureSettings) -> float:
    """max over the 24 major/minor scales of #(notes in scale) / #(notes) (MusPy `scale_consistency`)."""
    counts = _pitch_class_counts(pitched(piece))
    total = counts.sum()
    return float((SCALES @ counts).max() / total) if total else math.nan


def _sounding_pitch_counts(piece: PieceNotes, resolution: int) -> np.ndarray:
    """Distinct pitched notes sounding at each step of [0, end of the last note of any track) (MusPy's piano roll)."""
    length = int(steps(piece.notes["end_beats"], resolution).max()) if len(piece.notes) else 0
    notes = pitched(piece)
    if length <= 0 or not len(notes):
        return np.zeros(max(length, 0), dtype=np.int64)
    used, column = np.unique(notes["pitch"], return_inverse=True)
    begin = np.clip(steps(notes["start_beats"], resolution), 0, length)
    end = np.clip(steps(notes["end_beats"], resolution), 0, length)
    cells = (length + 1) * len(used)
    change = np.bincount(begin * len(used) + column, minlength=cells) - np.bincount(end * len(used) + column, minlength=cells)
    on = np.cumsum(change.reshape(length + 1, len(used))[:-1], axis=0) > 0
    return on.sum(axis=1)


@piece_metric(FAMILY)
def polyphony(piece: PieceNotes, settings: FeatureSettings) -> float:
    """#(pitches on, summed over steps) / #(steps with at least one pitch on) (MusPy `polyphony`)."""
    counts = _sounding_pitch_counts(piece, settings.resolution)
    active = np.count_nonzero(counts)
    return float(counts.sum() / active) if active else math.nan


@piece_metric(FAMILY)
def polyphony_rate(piece: PieceNotes, settings: FeatureSettings) -> float:
    """#(steps with more than `polyphony_threshold` pitches on) / #(steps) (MusPy `polyphony_rate`, threshold 2)."""
    counts = _sounding_pitch_counts(piece, settings.resolution)
    return float(np.count_nonzero(counts > settings.polyphony_threshold) / len(counts)) if len(counts) else math.nan


@piece_metric(FAMILY)
def empty_beat_rate(piece: PieceNotes, settings: FeatureSettings) -> float:
    """#(empty beats) / #(beats), all notes (MusPy `empty_beat_rate`).

    With L the last note end in steps and r the resolution there are L // r + 1 beats; a note covers the
    beats start // r to end // r inclusive (MusPy's convention).
    """
    r = settings.resolution
    if not len(piece.notes):
        return math.nan
    begin = steps(piece.notes["start_beats"], r) // r
    end = steps(piece.notes["end_beats"], r) // r
    length = int(steps(piece.notes["end_beats"], r).max())
    if length < 1:
        return math.nan
    n_beats = length // r + 1
    change = np.zeros(n_beats + 1, dtype=np.int64)
    np.add.at(change, begin, 1)
    np.add.at(change, end + 1, -1)
    covered = np.count_nonzero(np.cumsum(change[:-1]) > 0)
    return float(1.0 - covered / n_beats)


@piece_metric(FAMILY)
def groove_consistency(piece: PieceNotes, settings: FeatureSettings) -> float:
    """1 - sum_i d(G_i, G_{i+1}) / (R (T - 1)) (MusPy `groove_consistency`; Wu & Yang 2020).

    G_i is the binary onset vector of bar i over R = bar length x resolution steps (all notes; bar length
    from the first time signature), d the Hamming distance, T the number of bars; NaN when T < 2.
    """
    r = settings.resolution
    measure = int(round(bar_beats(piece) * r))
    if not len(piece.notes) or measure < 1:
        return math.nan
    length = int(steps(piece.notes["end_beats"], r).max())
    n_measures = length // measure + 1
    if n_measures < 2:
        return math.nan
    bar, position = np.divmod(steps(piece.notes["start_beats"], r), measure)
    patterns = np.zeros((n_measures, measure), dtype=bool)
    patterns[bar, position] = True
    distance = np.count_nonzero(patterns[:-1] != patterns[1:])
    return float(1.0 - distance / (measure * (n_measures - 1)))


def _drum_pattern(resolution: int, meter: str) -> np.ndarray:
    pattern = np.zeros(resolution, dtype=bool)
    pattern[0] = True
    parts = (4, 2) if meter == "duple" else (3,)
    for part in parts:
        if resolution % part == 0:
            pattern[:: resolution // part] = True
    return pattern


@piece_metric(FAMILY)
def drum_pattern_consistency(piece: PieceNotes, settings: FeatureSettings) -> float:
    """max over duple/triple meter of #(drum notes on the meter's grid) / #(drum notes) (MusPy).

    Duple grid: onsets at 0, 1/4, 1/2, 3/4 of a beat; triple: 0, 1/3, 2/3. NaN without drum notes.
    """
    drums = piece.notes[piece.notes["is_drum"]]
    if not len(drums):
        return math.nan
    position = steps(drums["start_beats"], settings.resolution) % settings.resolution
    return float(max(_drum_pattern(settings.resolution, meter)[position].mean() for meter in ("duple", "triple")))


@piece_metric(FAMILY)
def note_density(piece: PieceNotes, settings: FeatureSettings) -> float:
    """#(notes, all tracks) / (end of the last note in beats): notes per beat."""
    duration = piece.duration_beats
    return float(len(piece.notes) / duration) if duration > 0 else math.nan


def _onsets(notes: np.ndarray) -> np.ndarray:
    return np.unique(np.round(notes["start_beats"], 6))


@piece_metric(FAMILY)
def mean_ioi(piece: PieceNotes, settings: FeatureSettings) -> float:
    """Mean inter-onset interval in beats between consecutive distinct onsets of pitched notes."""
    onsets = _onsets(pitched(piece))
    return float(np.diff(onsets).mean()) if len(onsets) > 1 else math.nan


@piece_metric(FAMILY)
def mean_duration(piece: PieceNotes, settings: FeatureSettings) -> float:
    """Mean note duration in beats (pitched notes)."""
    notes = pitched(piece)
    return float((notes["end_beats"] - notes["start_beats"]).mean()) if len(notes) else math.nan


def _time_histogram(values: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.digitize(values, TIME_EDGES_BEATS), minlength=len(TIME_EDGES_BEATS) + 1).astype(np.float64)
    total = counts.sum()
    return counts / total if total else np.full(len(counts), np.nan)


def pitch_class_histogram(piece: PieceNotes) -> np.ndarray:
    """P(pc = c): the normalised note-count pitch-class histogram (12 bins); NaN without pitched notes."""
    counts = _pitch_class_counts(pitched(piece))
    return counts / counts.sum() if counts.sum() else np.full(12, np.nan)


def ioi_histogram(piece: PieceNotes) -> np.ndarray:
    """Normalised histogram of inter-onset intervals (beats) in the bins `TIME_BIN_LABELS`."""
    return _time_histogram(np.diff(_onsets(pitched(piece))))


def duration_histogram(piece: PieceNotes) -> np.ndarray:
    """Normalised histogram of note durations (beats) in the bins `TIME_BIN_LABELS`."""
    notes = pitched(piece)
    return _time_histogram(notes["end_beats"] - notes["start_beats"])


def pitch_class_transition_matrix(piece: PieceNotes) -> np.ndarray:
    """T[a, b] = share of transitions from pitch class a to b between consecutive onsets.

    Every note sounding at onset k moves to every note at onset k + 1 (chords count each pair), so
    T = C[:-1]^T C[1:] / sum, with C the onsets x 12 count matrix. Flattened to 144 values.
    """
    notes = pitched(piece)
    if not len(notes):
        return np.full(144, np.nan)
    _, group = np.unique(np.round(notes["start_beats"], 6), return_inverse=True)
    counts = np.zeros((group.max() + 1, 12))
    np.add.at(counts, (group, notes["pitch"] % 12), 1.0)
    transitions = counts[:-1].T @ counts[1:]
    total = transitions.sum()
    return (transitions / total).ravel() if total else np.full(144, np.nan)


VECTOR_FEATURES = {
    "pitch_class_histogram": pitch_class_histogram,
    "ioi_histogram": ioi_histogram,
    "duration_histogram": duration_histogram,
    "pitch_class_transition_matrix": pitch_class_transition_matrix,
}
# vector features that join the scalars in the embedding used by Frechet distance, k-NN and Vendi
EMBEDDED_VECTORS = ("pitch_class_histogram", "ioi_histogram", "duration_histogram")


@dataclass
class FeatureTable:
    """Features of a set of pieces: `scalars` (pieces x scalar features), `vectors` name -> (pieces x d)."""

    scalar_names: list[str]
    scalars: np.ndarray
    vectors: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scalars)

    def column(self, name: str) -> np.ndarray:
        return self.scalars[:, self.scalar_names.index(name)]

    def take(self, indices) -> "FeatureTable":
        indices = np.asarray(indices, dtype=np.int64)
        return FeatureTable(list(self.scalar_names), self.scalars[indices], {k: v[indices] for k, v in self.vectors.items()})

    def embedding(self) -> np.ndarray:
        """Scalars and the embedded histograms side by side (NaN where undefined)."""
        return np.concatenate([self.scalars] + [self.vectors[name] for name in EMBEDDED_VECTORS], axis=1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"scalar_names": np.asarray(self.scalar_names), "scalars": self.scalars} | {
            f"vector/{k}": v for k, v in self.vectors.items()
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "FeatureTable":
        vectors = {k.removeprefix("vector/"): v for k, v in arrays.items() if k.startswith("vector/")}
        return cls([str(n) for n in arrays["scalar_names"]], arrays["scalars"], vectors)


def compute_table(pieces: list[PieceNotes], settings: FeatureSettings) -> FeatureTable:
    """Every registered scalar feature and every vector feature of each piece."""
    names = metrics_of(FAMILY)
    scalars, vectors = [], {name: [] for name in VECTOR_FEATURES}
    for piece in tqdm(pieces, desc="features", unit="piece", leave=False, mininterval=1.0):
        scalars.append([PIECE_METRICS[n].fn(piece, settings) for n in names])
        for name, fn in VECTOR_FEATURES.items():
            vectors[name].append(fn(piece))
    return FeatureTable(
        names,
        np.array(scalars, dtype=np.float64).reshape(len(pieces), len(names)),
        {name: np.array(rows, dtype=np.float64).reshape(len(pieces), -1) for name, rows in vectors.items()},
    )


def table_for(piece_set: PieceSet, settings: FeatureSettings, assets=None) -> FeatureTable:
    """The set's feature table: computed once per set, and read from / written to the asset store for dataset sets."""

    def compute() -> FeatureTable:
        if assets is not None and piece_set.key is not None:
            arrays = assets.arrays(
                f"features/{piece_set.label}",
                FEATURES_VERSION,
                {"pieces": piece_set.key, "settings": vars(settings)},
                lambda: compute_table(piece_set.pieces, settings).to_arrays(),
            )
            return FeatureTable.from_arrays(arrays)
        return compute_table(piece_set.pieces, settings)

    return piece_set.cached("features", compute)


@dataclass
class Standardizer:
    """z-scores embeddings with the reference's statistics (so scores from different runs share a scale).

    Columns the reference never defines are dropped; a constant column keeps its raw units; a value a
    piece does not define (NaN) becomes the reference mean.
    """

    keep: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, reference: np.ndarray) -> "Standardizer":
        keep = np.isfinite(reference).any(axis=0)
        columns = reference[:, keep]
        with np.errstate(invalid="ignore"):
            mean = np.array([nanmean(c) for c in columns.T])
            std = np.array([float(np.nanstd(c)) for c in columns.T])
        return cls(keep, mean, np.where(std > 1e-8, std, 1.0))

    def __call__(self, embedding: np.ndarray) -> np.ndarray:
        z = (embedding[:, self.keep] - self.mean) / self.scale
        return np.where(np.isfinite(z), z, 0.0)


def embeddings(inputs: EvalInputs) -> tuple[np.ndarray, np.ndarray]:
    """(generated, reference) embeddings z-scored by the reference statistics."""
    settings = inputs.feature_settings
    generated = table_for(inputs.generated, settings, inputs.assets).embedding()
    reference = table_for(inputs.reference, settings, inputs.assets).embedding()
    scale = Standardizer.fit(reference)
    return scale(generated), scale(reference)


@register_family
class Features(Family):
    """Mean of each per-piece feature over the set; the per-piece values; histograms for the report."""

    name = FAMILY

    def __init__(self, metrics: list[str] | None = None) -> None:
        self.metrics = check_metric_names(FAMILY, metrics, "eval.families.features.metrics")

    def compute(self, inputs: EvalInputs) -> FamilyResult:
        table = table_for(inputs.generated, inputs.feature_settings, inputs.assets)
        reference = table_for(inputs.reference, inputs.feature_settings, inputs.assets)
        result = FamilyResult()
        for name in self.metrics:
            column = table.column(name)
            result.set(name, nanmean(column), reason=f"no piece defines {name}")
            result.per_piece[name] = column
        result.artifacts = {"generated": table, "reference": reference}
        return result
