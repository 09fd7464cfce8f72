"""Grammar masks: any walk through the allowed ids decodes to notes, with no type error by MidiTok's own count."""

from __future__ import annotations

import miditok
import numpy as np
import pytest
import torch
from tokenizer_support import SINGLE_STREAM, TOKENIZER_NAMES, build_tokenizer

from lyria.generation.pieces import decode_or_repair
from lyria.generation.processors import GrammarMask, StepContext, Temperature, TopP

WALKS, STEPS = 8, 160


def random_walk(tokenizer, rng: np.random.Generator, steps: int = STEPS) -> np.ndarray:
    """Uniform choices among the ids the grammar allows, field by field; EOS only at the end."""
    grammar, tracker, previous, walk = tokenizer.grammar, tokenizer.new_bar_tracker(), None, []
    for _ in range(steps):
        values = []
        for field in range(len(tokenizer.vocab_sizes)):
            allowed = grammar.allowed(field, tracker, previous, values)
            if field == 0:
                allowed[tokenizer.eos_id] = False
            assert allowed.any(), (tokenizer.name, field, values)
            values.append(int(rng.choice(np.flatnonzero(allowed))))
        step = np.array(values) if tokenizer.is_compound else values[0]
        tracker.step(step)
        walk.append(step)
        previous = step
    return np.array(walk)


def unopened_note_offs(tokenizer, ids: np.ndarray) -> int:
    """NoteOffs of pitches not sounding: MIDI-Like's one grammar error beyond types (open notes may stay open)."""
    sounding: dict[int, int] = {}
    errors = 0
    for token in (t for i in ids for t in tokenizer.tokens_of(i)):
        kind, _, value = token.partition("_")
        if kind == "NoteOn":
            sounding[int(value)] = sounding.get(int(value), 0) + 1
        elif kind == "NoteOff":
            errors += not sounding.get(int(value))
            sounding[int(value)] = max(sounding.get(int(value), 0) - 1, 0)
    return errors


def check_walks(tokenizer) -> None:
    rng = np.random.default_rng(0)
    for _ in range(WALKS):
        ids = random_walk(tokenizer, rng)
        assert tokenizer.decode(ids).note_num() > 0
        if isinstance(tokenizer.tok, miditok.MIDILike):
            assert unopened_note_offs(tokenizer, ids) == 0
        else:
            seq = miditok.TokSequence(ids=ids.tolist(), are_ids_encoded=tokenizer.is_trained)
            assert tokenizer.tok.tokens_errors(seq) == 0
        assert tokenizer.grammar.repair(ids)[1] == 0  # a legal walk needs no repair


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_grammar_walks_decode_without_errors(name):
    check_walks(build_tokenizer(name))


@pytest.mark.parametrize("name", SINGLE_STREAM)
def test_grammar_walks_through_learned_vocabularies(name, bpe_tokenizers):
    check_walks(bpe_tokenizers[name])


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_encoded_music_is_legal(name, test_split_pieces):
    """The grammar never forbids what MidiTok itself produces."""
    tokenizer = build_tokenizer(name)
    for pieces in test_split_pieces.values():
        _, score = pieces[0]
        ids = tokenizer.encode(score).ids
        assert tokenizer.grammar.repair(ids)[1] == 0


def test_eos_waits_for_a_complete_note():
    tokenizer = build_tokenizer("tsd")
    vocab, grammar, tracker = tokenizer.tok.vocab, tokenizer.grammar, tokenizer.new_bar_tracker()
    previous = None
    for token in ("TimeShift_1.0.8", "Pitch_60", "Velocity_63", "Duration_1.0.8"):
        assert not grammar.allowed(0, tracker, previous, [])[tokenizer.eos_id], token
        previous = vocab[token]
        tracker.step(previous)
    assert grammar.allowed(0, tracker, previous, [])[tokenizer.eos_id]


def test_remi_positions_only_move_forward_within_the_bar():
    tokenizer = build_tokenizer("remi")
    vocab, tracker = tokenizer.tok.vocab, tokenizer.new_bar_tracker()
    for token in ("Bar_None", "TimeSig_3/4", "Position_8", "Pitch_60", "Velocity_63", "Duration_1.0.8"):
        tracker.step(vocab[token])
    allowed = tokenizer.grammar.allowed(0, tracker, np.int64(vocab["Duration_1.0.8"]), [])
    legal = {int(t.split("_")[1]) for t, i in vocab.items() if t.startswith("Position_") and allowed[i]}
    assert legal == set(range(9, 24))  # after position 8 and inside a 3/4 bar of 24 positions


def test_repair_drops_illegal_steps_so_the_sample_decodes():
    tokenizer = build_tokenizer("cpword")
    vocab = tokenizer.tok.vocab
    ignore = [v["Ignore_None"] for v in vocab[1:]]
    bar_without_meter = [vocab[0]["Family_Metric"], vocab[1]["Bar_None"], *ignore[1:]]  # MidiTok crashes on it
    position = [vocab[0]["Family_Metric"], vocab[1]["Position_0"], *ignore[1:]]
    note = [vocab[0]["Family_Note"], ignore[0], vocab[2]["Pitch_60"], vocab[3]["Velocity_63"], vocab[4]["Duration_1.0.8"], ignore[-1]]
    ids = np.array([tokenizer.step_ids(tokenizer.bos_id), bar_without_meter, position, note])
    with pytest.raises(ValueError):
        tokenizer.decode(ids)
    score, repaired = decode_or_repair(tokenizer, ids)
    assert score.note_num() == 1 and "dropping 1 illegal steps" in repaired


def context(tokenizer, field: int) -> StepContext:
    return StepContext(history=torch.zeros(2, 1, len(tokenizer.vocab_sizes), dtype=torch.long), field=field, tokenizer=tokenizer, step=0)


def test_per_field_temperature_and_top_p():
    tokenizer = build_tokenizer("octuple")
    temperature, top_p = Temperature(1.0, fields={"Duration": 0.5}), TopP(None, fields={"Pitch": 0.5})
    temperature.bind(tokenizer)
    top_p.bind(tokenizer)
    duration, pitch = tokenizer.field_index("Duration"), tokenizer.field_index("Pitch")
    logits = torch.randn(2, 40)
    assert torch.equal(temperature(logits, context(tokenizer, duration)), logits / 0.5)
    assert torch.equal(temperature(logits, context(tokenizer, pitch)), logits)
    kept = torch.isfinite(top_p(logits, context(tokenizer, pitch))).sum(-1)
    assert (kept < 40).all() and torch.equal(top_p(logits, context(tokenizer, duration)), logits)


def test_per_field_settings_are_checked_against_the_tokenizer():
    with pytest.raises(ValueError, match="compound tokenizer"):
        Temperature(1.0, fields={"Pitch": 0.9}).bind(build_tokenizer("remi"))
    with pytest.raises(ValueError, match=r"field_top_p.*Pitch.*Velocity"):
        TopP(0.9, fields={"Pich": 0.9}).bind(build_tokenizer("cpword"))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        Temperature(1.0, fields={"Pitch": 0.0})


def test_grammar_mask_needs_trackers():
    with pytest.raises(ValueError, match="trackers"):
        GrammarMask()(torch.zeros(2, 10), context(build_tokenizer("octuple"), 0))


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_memoised_masks_equal_the_grammar_at_every_step(name):
    """`masks` serves each row from a table keyed by the state `allowed` reads: the key must miss nothing."""
    tokenizer = build_tokenizer(name)
    grammar, fields = tokenizer.grammar, len(tokenizer.vocab_sizes)
    walks = [random_walk(tokenizer, np.random.default_rng(seed), steps=120) for seed in range(3)]
    trackers = [tokenizer.new_bar_tracker() for _ in walks]
    previous = None
    for t in range(120):
        steps = np.stack([walk[t] for walk in walks])
        for field in range(fields):
            partial = steps[:, :field] if tokenizer.is_compound else None
            served = grammar.masks(field, trackers, previous, partial).numpy()
            for row, tracker in enumerate(trackers):
                direct = grammar.allowed(field, tracker, None if previous is None else previous[row], [] if partial is None else partial[row].tolist())
                np.testing.assert_array_equal(served[row], direct if direct.any() else np.ones_like(direct), err_msg=f"step {t} field {field}")
        for tracker, step in zip(trackers, steps):
            tracker.step(step)
        previous = steps
