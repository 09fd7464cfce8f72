"""The `musicxml` format: sheet music through music21, one part per track, with the score's time signatures,
key (estimated when the score has none) and tempo marks; note onsets and ends snap to `quarter_length_divisors`."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from music21 import clef, instrument, key, meter, note, stream, tempo
from symusic import Score

from lyria.render.base import FORMATS, Renderer, check_length


@FORMATS.register("musicxml")
class MusicXmlRenderer(Renderer):
    suffix = ".musicxml"

    def __init__(self, quarter_length_divisors: Sequence[int] = (4, 3), max_seconds: float = 900.0) -> None:
        if not quarter_length_divisors or min(quarter_length_divisors) < 1:
            raise ValueError(f"render.musicxml.quarter_length_divisors={list(quarter_length_divisors)}: give positive divisors such as [4, 3]")
        self.divisors = tuple(int(d) for d in quarter_length_divisors)
        self.max_seconds = max_seconds

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> MusicXmlRenderer:
        return cls(settings["musicxml"]["quarter_length_divisors"], max_seconds=settings["max_seconds"])

    def to_music21(self, score: Score) -> stream.Score:
        """The score as music21 parts: simultaneous notes of a track become chords (tied where they overlap)."""
        ticks = score if score.ttype == "Tick" else score.to("tick")
        tpq = ticks.ticks_per_quarter
        parts = [self._part(track, index, tpq) for index, track in enumerate(ticks.tracks) if track.note_num()]
        if not parts:
            raise ValueError("the score has no notes to write as sheet music")
        keys = [
            (signature.time / tpq, key.KeySignature(int(signature.key)).asKey("minor" if signature.tonality else "major"))
            for signature in ticks.key_signatures
        ] or [(0.0, stream.Score(parts).analyze("key"))]  # no key in the score: the most likely one (Krumhansl)
        for part in parts:
            for offset, signature in _time_signatures(ticks):
                part.insert(offset, signature)
            for offset, estimated in keys:
                part.insert(offset, key.Key(estimated.tonic, estimated.mode))
        for change in ticks.tempos:
            parts[0].insert(change.time / tpq, tempo.MetronomeMark(number=round(change.qpm, 2)))
        return stream.Score(parts)

    def _part(self, track, index: int, tpq: int) -> stream.Part:
        part = stream.Part()
        voice = instrument.Percussion() if track.is_drum else instrument.instrumentFromMidiProgram(track.program)
        voice.partName = track.name or f"Track {index + 1}"
        part.partName = voice.partName
        notes = track.notes.numpy()
        onsets = self.snap(notes["time"] / tpq)
        ends = np.maximum(self.snap((notes["time"] + notes["duration"]) / tpq), onsets + 1 / max(self.divisors))
        for pitch, velocity, onset, end in zip(notes["pitch"], notes["velocity"], onsets, ends):
            played = note.Note(int(pitch), quarterLength=self._fraction(end) - self._fraction(onset))
            played.volume.velocity = int(velocity)
            part.insert(self._fraction(onset), played)
        # chordify: one voice of chords with ties reads far better than the many voices and rests overlaps make
        written = part.chordify()
        written.partName = voice.partName
        written.insert(0, voice)
        written.insert(0, clef.PercussionClef() if track.is_drum else clef.bestClef(written, recurse=True))
        return written

    def snap(self, quarters: np.ndarray) -> np.ndarray:
        """Each time to the nearest point of any grid 1/d (d in the divisors). Onsets and ends snap alike, so a
        note that ends where the next begins still does: no sliver notes between them."""
        grids = np.stack([np.round(quarters * d) / d for d in self.divisors])
        return grids[np.abs(grids - quarters).argmin(0), np.arange(len(quarters))]

    def _fraction(self, quarters: float) -> Fraction:
        return Fraction(float(quarters)).limit_denominator(math.lcm(*self.divisors))  # exact: it lies on a grid

    def write(self, score: Score, path: Path) -> None:
        check_length(score, self.max_seconds)
        self.to_music21(score).write("musicxml", fp=str(path))


def _time_signatures(ticks: Score) -> list[tuple[Fraction, meter.TimeSignature]]:
    """The score's time signatures as (offset in quarters, music21 TimeSignature); 4/4 when it has none."""
    tpq = ticks.ticks_per_quarter
    signatures = [(Fraction(ts.time, tpq), f"{ts.numerator}/{ts.denominator}") for ts in ticks.time_signatures] or [(Fraction(0), "4/4")]
    return [(offset, meter.TimeSignature(ratio)) for offset, ratio in signatures]
