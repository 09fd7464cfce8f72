"""Mode collapse on a deliberately collapsed set; memorization of copies, transposed copies and partial copies."""

from __future__ import annotations

import numpy as np
import pytest
from evaluation_support import piece_of, random_piece, settings, varied_set

from lyria.evaluation.base import EvalInputs, PieceSet
from lyria.evaluation.memorization import Memorization, build_index, longest_shared_runs, note_ngrams, propose
from lyria.evaluation.mode_collapse import ModeCollapse, exact_duplicates, max_jaccard, prdc
from lyria.evaluation.tokens import TokenTable, tokens_for


def transposed(piece, semitones: int):
    notes = piece.notes.copy()
    notes["pitch"] += semitones
    return type(piece)(notes, piece.bar_starts_beats, piece.bar_starts, piece.time_signatures)


def shifted(piece, beats: float):
    notes = piece.notes.copy()
    for column in ("start_beats", "end_beats"):
        notes[column] += beats
    return piece_of([(n["start_beats"], n["end_beats"] - n["start_beats"], n["pitch"]) for n in notes])


def collapse_inputs(generated: PieceSet, reference: PieceSet, train: PieceSet | None = None) -> EvalInputs:
    return EvalInputs(generated, reference, train, 0, settings())


def test_collapse_score_rises_on_one_piece_repeated_and_stays_low_on_real_music():
    reference = varied_set("reference", 24, seed=1)
    varied = ModeCollapse().compute(collapse_inputs(varied_set("held_out", 16, seed=2), reference)).values
    one = random_piece(7)
    collapsed = PieceSet("collapsed", [f"c{i}" for i in range(16)], [one] * 16, [None] * 16)
    repeated = ModeCollapse().compute(collapse_inputs(collapsed, reference)).values
    assert repeated["exact_duplicate_rate"] == pytest.approx(15 / 16)
    assert repeated["near_duplicate_rate"] == 1.0
    assert varied["exact_duplicate_rate"] == varied["near_duplicate_rate"] == 0.0
    assert repeated["coverage"] < varied["coverage"]
    assert repeated["vendi_ratio"] < varied["vendi_ratio"]
    assert repeated["score"] > 0.8
    assert varied["score"] < 0.35
    assert repeated["score"] > varied["score"] + 0.5


def test_near_duplicates_by_token_ngram_jaccard():
    base = random_piece(1)
    edited = piece_of([(n["start_beats"], n["end_beats"] - n["start_beats"], n["pitch"]) for n in base.notes[:-2]])
    unrelated = random_piece(2)
    pieces = PieceSet("p", ["a", "b", "c"], [base, edited, unrelated], [None] * 3)
    similarity = max_jaccard(tokens_for(pieces), 8)
    assert similarity[0] > 0.8 and similarity[1] > 0.8 and similarity[2] < 0.2
    assert exact_duplicates([base, edited, base]).tolist() == [0, 0, 1]


def test_prdc_by_hand():
    real = np.array([[0.0], [1.0], [2.0], [10.0]])
    fake = np.array([[0.5], [1.5], [20.0]])
    scores = prdc(real, fake, k=1)
    # real radii (1st neighbour): 1, 1, 1, 8; fake radii: 1, 1, 18.5
    assert scores["precision"] == pytest.approx(2 / 3)  # 20 is outside every real ball
    assert scores["coverage"] == pytest.approx(3 / 4)  # the real point 10 has no fake within 8
    assert scores["recall"] == pytest.approx(1.0)  # the fake ball around 20 (radius 18.5) reaches every real point
    assert scores["density"] == pytest.approx((2 + 2 + 0) / 3)


def test_per_style_coverage_reports_each_reference_style():
    reference = varied_set("reference", 12, seed=1)
    reference.styles = ["jig"] * 6 + ["air"] * 6
    generated = varied_set("gen", 8, seed=3)
    values = ModeCollapse().compute(collapse_inputs(generated, reference)).values
    assert {"coverage.jig", "coverage.air"} <= set(values)
    generated.styles = ["jig"] * 8
    styled = ModeCollapse().compute(collapse_inputs(generated, reference))
    assert styled.values["coverage.air"] is None and "no generated piece has style 'air'" in styled.unavailable["coverage.air"]


def memorization_inputs(generated: list, train: list) -> EvalInputs:
    g = PieceSet("generated", [f"g{i}" for i in range(len(generated))], generated, [None] * len(generated))
    t = PieceSet("train", [f"t{i}" for i in range(len(train))], train, [None] * len(train))
    return EvalInputs(g, g, t, 0, settings())


def test_a_piece_against_its_transposition_is_a_copy_only_under_the_transposition_invariant_option():
    train = [random_piece(seed) for seed in range(20)]
    copy = transposed(train[4], 5)
    invariant = Memorization().compute(memorization_inputs([copy, random_piece(99)], train))
    assert invariant.per_piece["best_f1"][0] == pytest.approx(1.0)
    assert invariant.artifacts["matched"][0] == "t4"
    assert invariant.per_piece["is_copy"].tolist() == [1.0, 0.0]
    assert invariant.values["copy_rate"] == 0.5
    strict = Memorization(transposition_invariant=False).compute(memorization_inputs([copy], train))
    assert strict.per_piece["best_f1"][0] < 0.6
    exact = Memorization(transposition_invariant=False).compute(memorization_inputs([train[4]], train))
    assert exact.per_piece["best_f1"][0] == pytest.approx(1.0)


def test_an_eight_bar_quote_inside_a_longer_piece_is_found_at_its_offset():
    train = [random_piece(seed, n_notes=120) for seed in range(15)]
    source = train[9]
    quote = source.notes[(source.notes["start_beats"] >= 16) & (source.notes["start_beats"] < 48)]
    filler = random_piece(500, n_notes=30)
    pieces = [(n["start_beats"], n["end_beats"] - n["start_beats"], n["pitch"]) for n in filler.notes]
    offset = filler.duration_beats - 16  # the quote starts after the filler, shifted in time and transposed
    pieces += [(n["start_beats"] + offset, n["end_beats"] - n["start_beats"], n["pitch"] - 3) for n in quote]
    generated = piece_of(pieces)
    index = build_index(train, 6)
    best = propose(index, generated, 6, 3, max_df=10, same_key=False)[0]
    assert best.train_index == 9 and best.shift == 3 and best.offset_beats == pytest.approx(-offset)
    result = Memorization(window_beats=32).compute(memorization_inputs([generated], train))
    assert result.per_piece["best_f1"][0] > 0.9


def test_note_ngrams_are_transposition_invariant():
    piece = random_piece(3)
    codes, _, pitches = note_ngrams(piece, 6)
    moved_codes, _, moved_pitches = note_ngrams(transposed(piece, -7), 6)
    np.testing.assert_array_equal(codes, moved_codes)
    np.testing.assert_array_equal(pitches - 7, moved_pitches)


def brute_force_longest(generated: list[int], train: list[list[int]]) -> int:
    best = 0
    for reference in train:
        for i in range(len(generated)):
            for j in range(len(reference)):
                k = 0
                while i + k < len(generated) and j + k < len(reference) and generated[i + k] == reference[j + k]:
                    k += 1
                best = max(best, k)
    return best


def test_longest_shared_ngram_is_exact():
    rng = np.random.default_rng(0)
    train = [list(rng.integers(0, 3, size=int(rng.integers(20, 60)))) for _ in range(6)]
    generated = [list(rng.integers(0, 3, size=40)) for _ in range(5)]
    generated.append(train[2][5:35] + [9, 9])  # a 30-token quote
    got = longest_shared_runs(
        TokenTable.from_sequences([np.array(s) for s in generated]), TokenTable.from_sequences([np.array(s) for s in train])
    )
    assert got.tolist() == [brute_force_longest(s, train) for s in generated]
    assert got[-1] >= 30
    capped = longest_shared_runs(
        TokenTable.from_sequences([np.array(train[0])]), TokenTable.from_sequences([np.array(train[0])]), cap=16
    )
    assert capped.tolist() == [16]


def test_memorization_without_a_training_set_says_why():
    result = Memorization().compute(EvalInputs(varied_set("g", 3, 1), varied_set("r", 3, 2), None, 0, settings()))
    assert "training set" in result.unavailable["*"]


@pytest.mark.slow
def test_collapse_score_on_the_music21_corpus(compose_train):
    """Real music (one half of 36 corpus pieces against the other) scores low; one of its pieces repeated, high."""
    from lyria.evaluation.evaluate import prepare
    from lyria.evaluation.sets import load_split

    cfg = compose_train("data.max_pieces_per_style=6")
    _, prepared = prepare(cfg.data, cfg.tokenizer)
    pieces = load_split(prepared, "train")
    half = len(pieces) // 2
    reference, held_out = pieces.subset(range(half), "reference"), pieces.subset(range(half, 2 * half), "held_out")
    real = ModeCollapse().compute(collapse_inputs(held_out, reference)).values
    repeated = PieceSet("repeated", [f"r{i}" for i in range(half)], [held_out.pieces[0]] * half, [None] * half)
    collapsed = ModeCollapse().compute(collapse_inputs(repeated, reference)).values
    # with ~15 reference pieces each k-NN ball is wide, so even one piece covers a few of them
    assert real["score"] < 0.3 and collapsed["score"] > 0.6
    assert collapsed["near_duplicate_rate"] == 1.0 and collapsed["vendi_ratio"] < real["vendi_ratio"]
