"""Encode -> decode keeps the music: note F1 >= 0.99 against the original on the tokenizer's grid, every style.

Runs on a few test-split pieces per style; `benchmarks/tokenizer_zoo.py` reports the same numbers on more.
"""

from __future__ import annotations

import numpy as np
import pytest
from symusic import Note, Score, Tempo, TimeSignature, Track
from tokenizer_support import SINGLE_STREAM, STYLES, TOKENIZER_NAMES, build_tokenizer

from lyria.tokenizers.fidelity import RoundTrip, compare, round_trip

MIN_F1 = 0.99


def per_style(tokenizer, test_split_pieces) -> dict[str, RoundTrip]:
    return {style: sum((round_trip(tokenizer, score) for _, score in test_split_pieces[style]), RoundTrip()) for style in STYLES}


def table(results: dict[str, RoundTrip]) -> str:
    return "\n".join(
        f"{style:22s} F1 {r.f1:.4f} ({r.matched}/{r.n_ref} ref, {r.n_est} decoded; unisons {r.unisons_ref}, lost {r.unisons_lost})"
        for style, r in results.items()
    )


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_round_trip_keeps_the_notes_of_every_style(name, test_split_pieces):
    tokenizer = build_tokenizer(name)
    results = per_style(tokenizer, test_split_pieces)
    assert all(r.f1 >= MIN_F1 for r in results.values()), f"{tokenizer.name}\n{table(results)}"
    assert sum(r.unisons_ref for r in results.values()) > 0  # the chorales double voices: the count is exercised


@pytest.mark.parametrize("name", SINGLE_STREAM)
def test_round_trip_through_a_learned_vocabulary(name, bpe_tokenizers, test_split_pieces):
    results = per_style(bpe_tokenizers[name], test_split_pieces)
    assert all(r.f1 >= MIN_F1 for r in results.values()), f"{bpe_tokenizers[name].name}\n{table(results)}"


def test_reference_is_the_original_on_the_grid_not_midiToks_copy():
    """Off-grid triplets: the reference rounds once to the nearest grid point; a dropped note is a miss."""
    score = Score(480)
    score.tempos.append(Tempo(0, qpm=120))
    score.time_signatures.append(TimeSignature(0, 4, 4))
    track = Track("t", 0, False)
    for k, tick in enumerate([0, 160, 320, 1280, 1440, 1600]):  # triplet eighths at 0 and 2 2/3 beats
        track.notes.append(Note(tick, 160, 60 + k, 80))
    score.tracks.append(track)
    tokenizer = build_tokenizer("remi")
    assert round_trip(tokenizer, score).f1 == 1.0
    decoded = tokenizer.decode(tokenizer.encode(score).ids)
    onsets = sorted(n.time / decoded.ticks_per_quarter for n in decoded.tracks[0].notes)
    np.testing.assert_allclose(onsets, [0, 0.375, 0.625, 2.625, 3.0, 3.375])  # nearest 1/8-beat points
    decoded.tracks[0].notes = decoded.tracks[0].notes[1:]
    result = compare(tokenizer, score, decoded)
    assert (result.matched, result.n_ref, result.n_est) == (5, 6, 5)


def test_unisons_are_counted_apart_from_the_f1():
    score = Score(480)
    score.tempos.append(Tempo(0, qpm=120))
    for voice in range(2):
        track = Track(f"v{voice}", 0, False)
        for k in range(4):
            track.notes.append(Note(480 * k, 480, 60 + (k if voice == 0 else k % 2), 80))  # two unisons
        score.tracks.append(track)
    tokenizer = build_tokenizer("tsd", **{"config.remove_duplicated_notes": True})
    result = round_trip(tokenizer, score)
    assert (result.unisons_ref, result.unisons_lost, result.f1) == (2, 2, 1.0)
