"""Chorale harmonization: four voices kept apart, the soprano as the encoder's input, cached cross-attention
over it at generation, and the soprano match reported."""

from __future__ import annotations

import pytest

from symusic import Note, Score, Track

from lyria.checkpoint import load_model
from lyria.data.harmonization import SOPRANO_PROGRAM, VOICE_PROGRAMS, melody_score, soprano_match, voiced
from lyria.generation.generate import generate
from lyria.generation.pieces import harmonize
from lyria.generation.sampler import Limits, Sampler
from lyria.training.train import train


def _chorale(bars: int = 4) -> Score:
    score = Score(480)
    for index, base in enumerate((72, 67, 60, 48)):
        track = Track(f"part{index}", 0, False)
        for beat in range(4 * bars):
            track.notes.append(Note(beat * 480, 480, base + (beat * (index + 2)) % 5, 64))
        score.tracks.append(track)
    return score


def test_voices_get_their_own_programs_and_the_melody_is_the_soprano():
    piece = voiced(_chorale())
    assert [t.program for t in piece.tracks] == list(VOICE_PROGRAMS)
    assert voiced(Score(480)) is None
    melody = melody_score(piece)
    assert [t.program for t in melody.tracks] == [SOPRANO_PROGRAM]
    assert soprano_match(piece, melody) == {"soprano_equal": True, "soprano_note_match": 1.0}
    shifted = piece.copy()
    shifted.tracks[0].notes[0].pitch += 1
    result = soprano_match(shifted, melody)
    assert not result["soprano_equal"] and result["soprano_note_match"] == pytest.approx(15 / 16)


@pytest.mark.slow
def test_harmonization_trains_and_generates_from_a_melody(compose_train, tmp_path):
    cfg = compose_train(
        "experiment=chorale_harmonization", "data.max_pieces_per_style=8", "model.max_seq_len=128", "trainer.max_steps=6",
        "trainer.val_check_interval=3", "data.batch_size=4", "model.conditioning.align_bars=true",
        "callbacks.sample_monitor.every_n_steps=3",  # the monitor passes over a model that writes from a melody
    )
    metrics, objects = train(cfg)
    assert metrics["global_step"] == cfg.trainer.max_steps
    batch = next(iter(objects["datamodule"].train_dataloader()))
    assert batch["memory"].shape[0] == batch["tokens"].shape[0] and (batch["memory"] > 0).any()
    # the melody's bars are numbered as the crop's (its first bar is 0), not from the piece's start
    assert batch["memory_bars"].shape == batch["memory"].shape
    for row in range(batch["memory"].shape[0]):
        bars = batch["memory_bars"][row][batch["memory"][row] > 0]
        assert bars.min() == 0 and bars.max() <= batch["bar_ids"][row].max() + 1
    checkpoint = objects["paths"]["best_checkpoint"]
    model, tokenizer, _ = load_model(checkpoint)
    melody_file = tmp_path / "melody.mid"
    melody_score(voiced(_chorale())).dump_midi(str(melody_file))

    # the melody's keys and values are computed once and reused by every step and re-read
    sampler = Sampler(model, tokenizer, [])
    calls = []
    original = model.conditioner.encode
    model.conditioner.encode = lambda *a, **k: calls.append(1) or original(*a, **k)
    pieces = harmonize(sampler, Score(str(melody_file)), n=2, seed=0, limits=Limits(max_new_tokens=40), batch_size=2)
    model.conditioner.encode = original
    assert len(calls) == 1 and len(pieces) == 2

    out = tmp_path / "samples"
    gen = compose_train(f"ckpt={checkpoint}", f"melody={melody_file}", "n=2", "max_new_tokens=40", "render.formats=[midi]",
                        f"output_dir={out}", config_name="generate")
    index = generate(gen)
    assert index["mode"] == "harmonize"
    assert 0.0 <= index["soprano_note_match_mean"] <= 1.0 and "soprano_equal_rate" in index
    assert all("soprano_equal" in entry for entry in index["samples"])


def test_a_model_without_an_input_sequence_refuses_a_melody():
    from lyria.models.lm import LyriaLM
    from lyria.tokenizers import LyriaTokenizer

    tokenizer = LyriaTokenizer(num_style_slots=2)
    model = LyriaLM(tokenizer.vocab_sizes, {"_target_": "lyria.models.mixers.AttentionMixer"}, d_model=16, n_layers=1,
                    n_heads=2, d_ff=32, max_seq_len=16, num_styles=2)
    with pytest.raises(ValueError, match="chorale_harmonization"):
        harmonize(Sampler(model, tokenizer, []), _chorale(), n=1)



def _aligned_model(align_bars: bool):
    import torch

    from lyria.models.lm import LyriaLM

    torch.manual_seed(0)
    conditioning = {"_target_": "lyria.models.conditioning.CrossAttentionConditioner", "memory_tokens": True,
                    "max_memory_length": 32, "encoder_layers": 1, "align_bars": align_bars}
    model = LyriaLM([40], {"_target_": "lyria.models.mixers.AttentionMixer"}, d_model=16, n_layers=2, n_heads=2, d_ff=32,
                    max_seq_len=32, num_styles=2, conditioning=conditioning).eval()
    for layer in model.conditioner.layers:  # the output projections start at zero: give the memory a say
        torch.nn.init.normal_(layer.out.weight, std=0.2)
    return model


@pytest.mark.parametrize("align_bars", [True, False])
def test_bar_aligned_cross_attention_reads_the_melody_of_the_tokens_bar(align_bars):
    import torch

    model = _aligned_model(align_bars)
    tokens = torch.tensor([[1, 5, 6, 7, 5, 8, 9, 5, 6]])
    bars = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 2, 2]])
    memory = torch.tensor([[5, 11, 12, 5, 13, 5, 14, 15]])
    memory_bars = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2]])
    with torch.no_grad():
        out = model(tokens, bar_ids=bars, cond={"memory": memory, "memory_bars": memory_bars})[0]
        # numbered from another origin, the same alignment gives the same logits
        shifted = model(tokens, bar_ids=bars + 3, cond={"memory": memory, "memory_bars": memory_bars + 3})[0]
        # the melody one bar later than the setting: another alignment
        moved = model(tokens, bar_ids=bars, cond={"memory": memory, "memory_bars": memory_bars + 1})[0]
    torch.testing.assert_close(shifted, out)
    assert not torch.allclose(moved, out, atol=1e-4) if align_bars else torch.equal(moved, out)
    if align_bars:
        with pytest.raises(ValueError, match="memory_bars"):
            model(tokens, bar_ids=bars, cond={"memory": memory})
        with pytest.raises(ValueError, match="bar_ids"):
            model(tokens, cond={"memory": memory, "memory_bars": memory_bars})


def test_bar_aligned_cached_generation_equals_the_full_forward():
    import torch

    from lyria.models.lm import Cache

    model = _aligned_model(True)
    tokens = torch.tensor([[1, 5, 6, 7, 5, 8], [1, 5, 9, 5, 10, 11]])
    bars = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]])
    cond = {"memory": torch.tensor([[5, 11, 5, 13, 0], [5, 12, 14, 5, 15]]), "memory_bars": torch.tensor([[0, 0, 1, 1, 0], [0, 0, 0, 1, 1]])}
    with torch.no_grad():
        full = model(tokens, bar_ids=bars, cond=cond)[0]
        cache = model.new_cache()
        steps = []
        for t in range(tokens.shape[1]):
            logits, cache = model(tokens[:, t : t + 1], bar_ids=bars[:, t : t + 1], cond=cond, cache=cache)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
    assert isinstance(cache, Cache)


def test_the_sample_monitor_passes_over_a_model_that_writes_from_a_melody(caplog):
    """Free sampling says nothing about a harmonization model, and its splits hold no free pieces: the monitor
    must neither sample nor read the reference split (which crashed such a run at its first check)."""
    import logging
    from types import SimpleNamespace

    from lyria.training.callbacks import SampleMonitor

    class NoData:
        def __getattr__(self, name):
            raise AssertionError(f"the monitor read the datamodule's {name}")

    monitor = SampleMonitor(every_n_steps=5, n_samples=2)
    module = SimpleNamespace(model=_aligned_model(True), training=True)
    trainer = SimpleNamespace(global_step=5, datamodule=NoData(), is_global_zero=True, global_rank=0)
    with caplog.at_level(logging.INFO, logger="lyria.training.callbacks"):
        monitor.on_train_batch_end(trainer, module, None, None, 0)
        monitor.on_train_batch_end(SimpleNamespace(**{**vars(trainer), "global_step": 10}), module, None, None, 0)
    assert monitor.history == []
    assert sum("sample monitor off" in r.getMessage() for r in caplog.records) == 1
