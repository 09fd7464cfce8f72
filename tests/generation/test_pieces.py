"""Library entry points: same MIDI bytes whatever the batch size; continuations keep the prompt's tempo map,
meter, tracks and notes; infilling keeps every note outside the span."""

from __future__ import annotations

import pytest
import torch
from symusic import Note, Score, Tempo, TimeSignature, Track

from lyria.generation.pieces import continue_piece, infill_piece, new_pieces, parse_bars, tempo_seconds
from lyria.generation.processors import GrammarMask, SpecialTokenMask, TopP
from lyria.generation.sampler import STOP_MAX_BARS, STOP_MAX_TOKENS, STOP_SEP, Limits, Sampler
from lyria.models.lm import LyriaLM
from lyria.render.midi import write_midi
from lyria.tokenizers import LyriaTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
ROPE = {"_target_": "lyria.models.mixers.AttentionMixer", "position": {"_target_": "lyria.models.positions.RotaryPosition"}}


@pytest.fixture(scope="module")
def sampler():
    tokenizer = LyriaTokenizer()
    torch.manual_seed(0)
    model = LyriaLM(tokenizer.vocab_sizes, ROPE, d_model=32, n_layers=2, n_heads=2, d_ff=64, dropout=0.0, max_seq_len=96)
    bias = torch.zeros(tokenizer.vocab_size)
    bias[tokenizer.eos_id] = -100.0  # pieces run to their limits
    bias[tokenizer.tok.vocab["Bar_None"]] = 3.0  # and reach bar limits soon
    model.heads[0].register_forward_hook(lambda mod, inp, out: out + bias)
    return Sampler(model, tokenizer, [SpecialTokenMask(), GrammarMask(), TopP(0.95)])


def _notes(track: Track) -> list[tuple[int, int, int, int]]:
    return sorted((n.time, n.duration, n.pitch, n.velocity) for n in track.notes)


def _two_tracks(bars: int, numerator: int, tpq: int = 480) -> Score:
    """A violin and a cello, one note per beat each, `bars` bars of numerator/4."""
    score = Score(tpq)
    for name, program, base in (("Violin", 40, 72), ("Cello", 42, 43)):
        track = Track(name, program, False)
        for beat in range(bars * numerator):
            track.notes.append(Note(beat * tpq, tpq, base + (beat * 5) % 12, 70 + beat % 20))
        score.tracks.append(track)
    score.time_signatures.append(TimeSignature(0, numerator, 4))
    return score


def test_same_midi_bytes_whatever_the_batch_size(sampler, tmp_path):
    limits = Limits(max_new_tokens=60)
    files = {}
    for batch_size in (1, 3, 4):
        pieces = new_pieces(sampler, n=4, seed=11, limits=limits, batch_size=batch_size)
        files[batch_size] = []
        for piece in pieces:
            path = tmp_path / f"b{batch_size}_{piece.index}.mid"
            write_midi(piece.score, path)
            files[batch_size].append(path.read_bytes())
    assert files[1] == files[3] == files[4]
    assert len(set(files[1])) == 4


def test_a_continuation_keeps_the_prompts_tempo_map_meter_tracks_and_notes(sampler):
    prompt = _two_tracks(bars=8, numerator=5)
    prompt.tempos.append(Tempo(0, qpm=66))
    prompt.tempos.append(Tempo(10 * 480, qpm=80))  # a change inside the kept bars
    prompt.tempos.append(Tempo(30 * 480, qpm=140))  # and one after them, which the continuation does not inherit
    boundary = 4 * 5 * 480  # prompt_bars=4 of 5/4
    for piece in continue_piece(sampler, prompt, n=2, seed=1, limits=Limits(max_new_tokens=200, max_bars=7), prompt_bars=4):
        out = piece.score
        assert out is not None, piece.error
        assert piece.result.stop_reason in (STOP_MAX_BARS, STOP_MAX_TOKENS)
        assert out.ticks_per_quarter == 480
        assert [(t.time, round(t.qpm)) for t in out.tempos] == [(0, 66), (4800, 80)]
        # the prompt's meter; later changes only where the tokens hold them (this untrained model writes some)
        assert [(t.time, t.numerator, t.denominator) for t in out.time_signatures if t.time < boundary] == [(0, 5, 4)]
        assert [(t.name, t.program) for t in out.tracks] == [("Violin", 40), ("Cello", 42)]
        generated = 0
        for kept, original in zip(out.tracks, prompt.tracks):
            before = [n for n in _notes(kept) if n[0] < boundary]
            assert before == [n for n in _notes(original) if n[0] < boundary]
            generated += sum(n[0] >= boundary for n in _notes(kept))
        assert generated > 0
        assert max(n.time for t in out.tracks for n in t.notes) < 7 * 5 * 480


def test_tempo_map_to_seconds():
    score = Score(480)
    score.tempos.append(Tempo(0, qpm=60))
    score.tempos.append(Tempo(4 * 480, qpm=120))
    seconds = tempo_seconds(score)
    assert seconds(4.0) == pytest.approx(4.0) and seconds(8.0) == pytest.approx(6.0)


def test_infilling_keeps_every_note_outside_the_span(sampler):
    original = _two_tracks(bars=12, numerator=4)
    span = (4 * 4 * 480, 8 * 4 * 480)  # bars 5-8
    pieces = infill_piece(sampler, original, "5-8", n=3, seed=2, limits=Limits(max_new_tokens=300))
    for piece in pieces:
        out = piece.score
        assert out is not None, piece.error
        assert piece.result.stop_reason in (STOP_SEP, STOP_MAX_BARS, STOP_MAX_TOKENS)
        assert [(t.name, t.program) for t in out.tracks] == [("Violin", 40), ("Cello", 42)]
        inside = 0
        for filled, before in zip(out.tracks, original.tracks):
            outside = [n for n in _notes(filled) if not span[0] <= n[0] < span[1]]
            assert outside == [n for n in _notes(before) if not span[0] <= n[0] < span[1]]
            new = [n for n in _notes(filled) if span[0] <= n[0] < span[1]]
            assert all(t + d <= span[1] for t, d, _, _ in new), "a new note must not sound into untouched bars"
            inside += len(new)
        assert inside > 0
    assert len({tuple(_notes(p.score.tracks[0])) for p in pieces}) > 1


@pytest.mark.parametrize("bars,span", [("5-8", (4, 8)), ("3", (2, 3)), ((2, 4), (1, 4))])
def test_bars_are_one_based_and_inclusive(bars, span):
    assert parse_bars(bars) == span


@pytest.mark.parametrize("bars", ["0-2", "5-3", "x", "4-"])
def test_bad_bars_are_named(bars):
    with pytest.raises(ValueError, match="bars="):
        parse_bars(bars) if bars != "4-" else parse_bars("4-a")


def test_infilling_refuses_tokenizers_without_bars():
    tokenizer = LyriaTokenizer(miditok_class="miditok.TSD")
    model = LyriaLM(tokenizer.vocab_sizes, ROPE, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_seq_len=32)
    with pytest.raises(ValueError, match="mark bars"):
        infill_piece(Sampler(model, tokenizer, []), _two_tracks(4, 4), "2-3", n=1)


def test_infilling_bars_beyond_the_piece_are_named(sampler):
    with pytest.raises(ValueError, match="the piece has 4 bars"):
        infill_piece(sampler, _two_tracks(4, 4), "3-6", n=1)


def test_max_bars_must_leave_room_after_the_prompt(sampler):
    with pytest.raises(ValueError, match="max_bars=3"):
        continue_piece(sampler, _two_tracks(8, 4), n=1, limits=Limits(max_bars=3), prompt_bars=4)
