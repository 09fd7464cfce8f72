"""Bar tracking against MidiTok's own event times and downbeats, for every tokenizer and learned vocabulary."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from symusic import Note, Score, Tempo, TimeSignature, Track
from tokenizer_support import SINGLE_STREAM, TOKENIZER_NAMES, build_tokenizer

TIME_MOVES = {"TimeShift", "Rest"}


def miditok_reference(tokenizer, score: Score):
    """Per base token: its type, its time in quarters, its bar (from the preprocessed score's downbeats)."""
    events = tokenizer._encode_events(score, encode_ids=False)
    pre = tokenizer.tok.preprocess_score(tokenizer.prepare_score(score))
    downbeats = list(np.asarray(pre.get_downbeats()))
    last = pre.time_signatures[-1] if len(pre.time_signatures) else TimeSignature(0, 4, 4)
    bar = last.numerator * pre.ticks_per_quarter * 4 // last.denominator
    while downbeats[-1] <= pre.end() + bar:  # MidiTok lists downbeats up to the last note; tokens can end later
        downbeats.append(downbeats[-1] + bar)
    first = [e[0] if isinstance(e, list) else e for e in events.events]
    kinds = ["/".join(ev.type_ for ev in e) if tokenizer.is_compound else e.type_ for e in events.events]
    quarters = np.array([e.time for e in first], dtype=np.float64) / pre.ticks_per_quarter
    bars = np.searchsorted(np.asarray(downbeats) / pre.ticks_per_quarter, quarters, side="right") - 1
    return np.asarray(events.ids), kinds, quarters, np.maximum(bars, 0)


def check_against_miditok(tokenizer, score: Score) -> None:
    ids, kinds, ref_quarters, ref_bars = miditok_reference(tokenizer, score)
    tracker = tokenizer.new_bar_tracker()
    bars, quarters = [], []
    for step in ids:
        bars.append(tracker.step(step))
        quarters.append(tracker.time / tokenizer.tok.time_division)
    moves = [bool(set(kind.split("/")) & TIME_MOVES) for kind in kinds]
    for i, kind in enumerate(kinds):
        if moves[i]:
            # MidiTok times a shift where it starts (TSD) or lands (Structured); we check where it lands
            if i + 1 < len(kinds) and not moves[i + 1]:
                assert quarters[i] == pytest.approx(ref_quarters[i + 1]), (i, kind)
            continue
        if kind.startswith("Family/Bar") and i + 1 < len(kinds):
            # MidiTok 3.1 gives a CPWord Bar step after a time-signature change a stale time; the bar it
            # opens is the bar of the step that follows it
            assert bars[i] == ref_bars[i + 1], (i, kind)
            continue
        assert quarters[i] == pytest.approx(ref_quarters[i]), (i, kind, quarters[i - 3 : i + 2], ref_quarters[i - 3 : i + 2])
        assert bars[i] == ref_bars[i], (i, kind)


def meter_changes_with_rests() -> Score:
    """4/4, 3/4 then 6/8 bars, a two-bar silence, off-beat notes and chords: every bar rule at work."""
    tpq = 480
    score = Score(tpq)
    score.tempos.append(Tempo(0, qpm=100))
    for tick, num, den in ((0, 4, 4), (2 * 4 * tpq, 3, 4), (2 * 4 * tpq + 2 * 3 * tpq, 6, 8)):
        score.time_signatures.append(TimeSignature(tick, num, den))
    track = Track("melody", 0, False)
    onsets = [0, 240, 960, 1440, 2400, 3840, 4080, 4800, 5760, 6480, 6720, 7080, 7200]
    onsets += [7200 + 3 * tpq * 3 + k * 240 for k in range(6)]  # after two silent 6/8 bars
    for i, tick in enumerate(onsets):
        track.notes.append(Note(tick, 240, 60 + (i * 5) % 17, 90))
        if i % 4 == 0:
            track.notes.append(Note(tick, 480, 48 + (i * 7) % 12, 70))
    track.notes.sort()
    score.tracks.append(track)
    return score


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_tracker_follows_miditok_on_corpus_pieces(name, test_split_pieces):
    tokenizer = build_tokenizer(name)
    for pieces in test_split_pieces.values():
        for _, score in pieces:
            check_against_miditok(tokenizer, score)


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_tracker_follows_miditok_through_meter_changes_and_rests(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CPWord warns that rests and time signatures can disagree
        plain = build_tokenizer(name)
        tokenizers = [plain]
        if name not in ("structured", "octuple"):  # they have no rests
            # CPWord cannot carry meter changes across rests (a start-up error), so it tries rests in one meter
            rests = {"config.use_rests": True} | ({"config.use_time_signatures": False} if name == "cpword" else {})
            tokenizers.append(build_tokenizer(name, **rests))
    score = meter_changes_with_rests()
    for tokenizer in tokenizers:
        check_against_miditok(tokenizer, score)
        assert tokenizer.bar_ids(tokenizer.encode(score).ids).max() >= (6 if tokenizer.tok.config.use_time_signatures else 4)


@pytest.mark.parametrize("name", SINGLE_STREAM)
def test_learned_token_takes_the_bar_of_its_first_base_token(name, bpe_tokenizers, test_split_pieces):
    learned = bpe_tokenizers[name]
    base = build_tokenizer(name)
    reduced = 0
    for pieces in test_split_pieces.values():
        for _, score in pieces:
            merged, plain = learned.encode(score), base.encode(score)
            lengths = np.array([len(learned.tokens_of(i)) for i in merged.ids])
            assert lengths.sum() == len(plain.ids)
            first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            carries = lengths > 0  # Metaspace's word-start marker alone stands for no base token
            np.testing.assert_array_equal(merged.bar_ids[carries], plain.bar_ids[first[carries]])
            reduced += len(plain.ids) - len(merged.ids)
    assert reduced > 0


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_generation_tracker_counts_notes_and_bars_like_encoding(name, test_split_pieces):
    tokenizer = build_tokenizer(name)
    _, score = test_split_pieces["bach_chorale"][0]
    seq = tokenizer.encode(score)
    tracker = tokenizer.new_bar_tracker()
    stepped = [tracker.step(step) for step in seq.ids]
    np.testing.assert_array_equal(stepped, seq.bar_ids)
    assert tracker.n_notes == tokenizer.decode(seq.ids).note_num()
    assert np.all(np.diff(seq.bar_ids) >= 0)
