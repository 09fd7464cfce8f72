"""Writes the synthetic MIDI fixtures of this folder and reference_values.json: MusPy's metric values on every
fixture, and NLTK's BLEU on a few token sequences, for tests/evaluation/test_reference_values.py.

Run it in a throw-away environment (lyria does not depend on MusPy or NLTK):
    python3.11 -m venv /tmp/muspy && /tmp/muspy/bin/pip install muspy nltk
    /tmp/muspy/bin/python tests/evaluation/data/make_reference_values.py
bach_bwv110_7.mid and irish_tune.mid are two pieces of lyria's Score cache (music21 corpus), copied here.
"""

from __future__ import annotations

import json
from pathlib import Path

import mido
import muspy
from nltk.translate.bleu_score import sentence_bleu

HERE = Path(__file__).resolve().parent
TPQ = 480


def write_midi(path: Path, numerator: int, denominator: int, tracks: list[tuple[int, list[tuple[int, int, int]]]]) -> None:
    """tracks: (channel, [(start tick, end tick, pitch)]); channel 9 is drums."""
    midi = mido.MidiFile(ticks_per_beat=TPQ)
    meta = mido.MidiTrack([mido.MetaMessage("time_signature", numerator=numerator, denominator=denominator, time=0)])
    meta.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    midi.tracks.append(meta)
    for channel, notes in tracks:
        events = sorted([(s, 1, p) for s, _, p in notes] + [(e, 0, p) for _, e, p in notes])
        track, now = mido.MidiTrack(), 0
        for tick, on, pitch in events:
            kind = "note_on" if on else "note_off"
            track.append(mido.Message(kind, note=pitch, velocity=80 if on else 0, channel=channel, time=tick - now))
            now = tick
        midi.tracks.append(track)
    midi.save(path)


def synthetic_fixtures() -> None:
    scale = [(i * TPQ, (i + 1) * TPQ, p) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])]
    write_midi(HERE / "c_major_scale.mid", 4, 4, [(0, scale)])
    # a waltz: triads on beat one, melody on beats two and three, a bar of rest, overlapping notes
    waltz = []
    for bar, root in enumerate([57, 62, 64, None, 57, 65]):
        start = bar * 3 * TPQ
        if root is None:
            continue
        waltz += [(start, start + 3 * TPQ, root + k) for k in (0, 4, 7)]
        waltz += [(start + TPQ, start + 2 * TPQ + TPQ // 2, root + 12), (start + 2 * TPQ, start + 3 * TPQ, root + 14)]
    write_midi(HERE / "waltz_chords.mid", 3, 4, [(0, waltz)])
    # bass line plus drums: kicks on beats, hi-hat sixteenths, a triplet fill, one off-grid hit
    bass = [(i * TPQ, i * TPQ + TPQ // 2, p) for i, p in enumerate([40, 40, 43, 45, 40, 38, 40, 47])]
    drums = [(i * TPQ, i * TPQ + 60, 36) for i in range(8)]
    drums += [(i * TPQ // 4, i * TPQ // 4 + 30, 42) for i in range(16)]
    drums += [(6 * TPQ + i * TPQ // 3, 6 * TPQ + i * TPQ // 3 + 40, 38) for i in range(3)]
    drums += [(7 * TPQ + 50, 7 * TPQ + 90, 49)]
    write_midi(HERE / "bass_and_drums.mid", 4, 4, [(0, bass), (9, drums)])


def finite_or_none(value: float) -> float | None:
    return None if value != value else value  # MusPy returns NaN where a metric is undefined; JSON has null


def muspy_values(path: Path) -> dict:
    music = muspy.read_midi(path)
    signature = music.time_signatures[0] if music.time_signatures else None
    bar_beats = signature.numerator * 4 / signature.denominator if signature else 4
    measure = int(round(bar_beats * music.resolution))
    values = {
        "pitch_range": muspy.pitch_range(music),
        "n_pitches_used": muspy.n_pitches_used(music),
        "n_pitch_classes_used": muspy.n_pitch_classes_used(music),
        "pitch_entropy": muspy.pitch_entropy(music),
        "pitch_class_entropy": muspy.pitch_class_entropy(music),
        "scale_consistency": muspy.scale_consistency(music),
        "polyphony": muspy.polyphony(music),
        "polyphony_rate": muspy.polyphony_rate(music),
        "empty_beat_rate": muspy.empty_beat_rate(music),
        "groove_consistency": muspy.groove_consistency(music, measure),
        "drum_pattern_consistency": muspy.drum_pattern_consistency(music),
    }
    return {"resolution": music.resolution} | {name: finite_or_none(value) for name, value in values.items()}


# token sequences for self-BLEU: each against the others as references
BLEU_SEQUENCES = [
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    [1, 2, 3, 4, 5, 6, 9, 9, 10, 11, 12],
    [4, 5, 6, 7, 8, 1, 2, 3],
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
]


def main() -> None:
    synthetic_fixtures()
    values = {path.name: muspy_values(path) for path in sorted(HERE.glob("*.mid"))}
    bleu = [
        sentence_bleu([s for j, s in enumerate(BLEU_SEQUENCES) if j != i], hypothesis)
        for i, hypothesis in enumerate(BLEU_SEQUENCES)
    ]
    out = {
        "generated_by": "tests/evaluation/data/make_reference_values.py",
        "muspy_version": muspy.__version__,
        "muspy": values,
        "bleu_sequences": BLEU_SEQUENCES,
        "nltk_self_bleu": bleu,
    }
    (HERE / "reference_values.json").write_text(json.dumps(out, indent=2, allow_nan=False) + "\n")
    print(f"wrote {HERE / 'reference_values.json'}")


if __name__ == "__main__":
    main()
