"""Per-piece features on pieces small enough to work out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from evaluation_support import melody, piece_of, settings

from lyria.config import ConfigError
from lyria.evaluation import features as F
from lyria.evaluation.base import PIECE_METRICS, metrics_of

C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


def test_c_major_scale():
    piece = melody(C_MAJOR)
    s = settings()
    assert F.scale_consistency(piece, s) == 1.0
    assert F.pitch_range(piece, s) == 12
    assert F.n_pitches_used(piece, s) == 8
    assert F.n_pitch_classes_used(piece, s) == 7
    assert F.pitch_entropy(piece, s) == pytest.approx(3.0)  # 8 equally likely pitches
    assert F.pitch_class_entropy(piece, s) == pytest.approx(-(6 * (1 / 8) * math.log2(1 / 8) + (2 / 8) * math.log2(2 / 8)))
    assert F.note_density(piece, s) == 1.0
    assert F.mean_ioi(piece, s) == 1.0
    assert F.mean_duration(piece, s) == 1.0


def test_chromatic_scale_is_seven_twelfths_in_scale_and_has_maximal_pitch_class_entropy():
    piece = melody(list(range(60, 72)))
    assert F.scale_consistency(piece, settings()) == pytest.approx(7 / 12)
    assert F.pitch_class_entropy(piece, settings()) == pytest.approx(math.log2(12))


def test_polyphony_counts_sounding_pitches_over_active_steps():
    # a dyad for two beats, then one note for two beats; then a triad alone
    dyad_then_note = piece_of([(0, 2, 60), (0, 2, 64), (2, 2, 62)])
    assert F.polyphony(dyad_then_note, settings()) == pytest.approx(1.5)
    assert F.polyphony_rate(dyad_then_note, settings()) == 0.0  # MusPy: more than 2 pitches
    triad_then_note = piece_of([(0, 2, 60), (0, 2, 64), (0, 2, 67), (2, 2, 62)])
    assert F.polyphony_rate(triad_then_note, settings()) == pytest.approx(0.5)


def test_empty_beat_rate_follows_muspys_beat_convention():
    # notes on beats 0 and 3 (one beat each); the piece ends at beat 4, so MusPy counts 4 // 1 + 1 = 5 beats,
    # and a note covers the beats from start // 1 to end // 1 inclusive: beats 0, 1, 3, 4 are covered
    piece = piece_of([(0, 1, 60), (3, 1, 62)])
    assert F.empty_beat_rate(piece, settings()) == pytest.approx(1 - 4 / 5)


def test_groove_consistency_of_repeated_bars():
    bar = [(0, 1, 60), (1, 0.5, 62), (1.5, 0.5, 64), (2, 2, 65)]
    piece = piece_of(bar + [(4 + t, d, p) for t, d, p in bar])
    # two identical bars and MusPy's trailing (empty) bar: only the last pair differs, by 4 onsets of 96 steps
    assert F.groove_consistency(piece, settings()) == pytest.approx(1 - 4 / (96 * 2))
    waltz_bar = [(0, 1, 60), (1, 1, 64), (2, 1, 67)]
    three_four = piece_of(waltz_bar + [(3 + t, d, p) for t, d, p in waltz_bar], numerator=3)
    assert F.groove_consistency(three_four, settings()) == pytest.approx(1 - 3 / (72 * 2))
    # ending inside its second bar, the piece has no trailing bar: two identical bars agree fully
    assert F.groove_consistency(piece_of(waltz_bar + [(3, 1, 60)], numerator=3), settings()) == pytest.approx(1 - 2 / 72)


def test_drums_are_left_out_of_pitch_features_and_scored_on_their_own():
    tune = [(0, 1, 60), (1, 1, 67)]
    sixteenths = [(i / 4, 0.25, 42) for i in range(8)]
    with_drums = piece_of(tune, drums=sixteenths)
    s = settings()
    assert F.pitch_range(with_drums, s) == 7
    assert F.n_pitches_used(with_drums, s) == 2
    assert F.drum_pattern_consistency(with_drums, s) == 1.0
    assert math.isnan(F.drum_pattern_consistency(piece_of(tune), s))
    off_grid = piece_of(tune, drums=[(0, 0.1, 36), (0.1, 0.1, 36)])
    assert F.drum_pattern_consistency(off_grid, s) == 0.5
    # rhythm features count drum onsets: the drums fill beat 1 where the tune would not
    assert F.note_density(with_drums, s) == pytest.approx(10 / 2)


def test_histograms_and_transition_matrix():
    piece = melody([60, 62, 64], beats_per_note=0.5)
    transitions = F.pitch_class_transition_matrix(piece).reshape(12, 12)
    expected = np.zeros((12, 12))
    expected[0, 2] = expected[2, 4] = 0.5
    np.testing.assert_allclose(transitions, expected)
    assert F.ioi_histogram(piece)[F.TIME_BIN_LABELS.index("1/2")] == 1.0
    assert F.duration_histogram(piece)[F.TIME_BIN_LABELS.index("1/2")] == 1.0
    assert F.pitch_class_histogram(piece)[[0, 2, 4]] == pytest.approx([1 / 3] * 3)


def test_chords_move_to_every_note_of_the_next_onset():
    piece = piece_of([(0, 1, 60), (0, 1, 64), (1, 1, 67)])
    transitions = F.pitch_class_transition_matrix(piece).reshape(12, 12)
    assert transitions[0, 7] == transitions[4, 7] == 0.5


def test_table_has_every_registered_feature_and_standardizer_uses_the_reference_scale():
    pieces = [melody(C_MAJOR), melody(list(range(60, 72))), melody([60, 64, 67] * 4, 0.5)]
    table = F.compute_table(pieces, settings())
    assert table.scalar_names == metrics_of("features")
    assert table.embedding().shape == (3, len(table.scalar_names) + 12 + 8 + 8)
    scale = F.Standardizer.fit(table.embedding())
    z = scale(table.embedding())
    assert np.isfinite(z).all()
    assert not scale.keep[table.scalar_names.index("drum_pattern_consistency")]  # never defined without drums
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_array_equal(table.take([2, 0]).scalars, table.scalars[[2, 0]])


def test_every_feature_is_documented_and_a_typo_names_the_choices():
    for name in metrics_of("features"):
        assert PIECE_METRICS[name].fn.__doc__, name
    with pytest.raises(ConfigError, match="did you mean 'pitch_range'"):
        F.Features(metrics=["pich_range"])
