"""Sheet music: the MusicXML file music21 reads back keeps parts, meters, key, tempo and the (quantised) notes."""

from __future__ import annotations

from fractions import Fraction

import pytest
from music21 import converter, instrument, key, meter, tempo
from omegaconf import OmegaConf
from render_support import score_of, track_of
from symusic import Score

from lyria.config import RenderSchema
from lyria.render import build_renderers, render
from lyria.render.musicxml import MusicXmlRenderer


def written_onsets(part) -> list[tuple[Fraction, int]]:
    """(offset in quarters, MIDI pitch) of every struck note; tied continuations are not onsets."""
    struck = []
    for element in part.flatten().notes:
        offset = Fraction(element.getOffsetInHierarchy(part)).limit_denominator(96)
        for single in getattr(element, "notes", None) or [element]:
            if single.tie is None or single.tie.type == "start":
                struck.append((offset, single.pitch.midi))
    return sorted(set(struck))


def read_back(score: Score, tmp_path, renderer: MusicXmlRenderer | None = None):
    path = tmp_path / "piece.musicxml"
    (renderer or MusicXmlRenderer()).write(score, path)
    return converter.parse(str(path))


def test_parts_meters_key_and_tempo_survive(duet, tmp_path):
    sheet = read_back(duet, tmp_path)
    assert [part.partName for part in sheet.parts] == ["Melody", "Bass"]
    assert isinstance(sheet.parts[1].recurse().getElementsByClass(instrument.Instrument).first(), instrument.AcousticBass)
    for part in sheet.parts:  # every part carries the meter change and the key, not only the first
        meters = [(m.getOffsetInHierarchy(part), m.ratioString) for m in part.recurse().getElementsByClass(meter.TimeSignature)]
        assert meters == [(0.0, "3/4"), (12.0, "2/4")]
        keys = part.recurse().getElementsByClass(key.KeySignature)
        assert [k.sharps for k in keys] == [2]
        measures = part.getElementsByClass("Measure")
        assert [m.barDuration.quarterLength for m in measures] == [3.0] * 4 + [2.0] * 2
    marks = [(m.getOffsetInHierarchy(sheet.parts[0]), m.number) for m in sheet.parts[0].recurse().getElementsByClass(tempo.MetronomeMark)]
    assert marks == [(0.0, 66), (12.0, 50)]


def test_notes_come_back_where_they_were(duet, tmp_path):
    sheet = read_back(duet, tmp_path)
    for part, track in zip(sheet.parts, duet.tracks):
        expected = sorted({(Fraction(n.time, duet.ticks_per_quarter), n.pitch) for n in track.notes})
        assert written_onsets(part) == expected


def test_off_grid_notes_snap_to_sixteenths_or_triplets_and_chords_are_kept(tmp_path):
    chord = [(0.02, 0.97, 60), (0.0, 1.0, 64)]
    triplets = [(1.0, 0.33, 67), (1.34, 0.33, 65), (1.66, 0.34, 64)]
    sixteenths = [(2.02, 0.24, 62), (2.26, 0.25, 60), (2.49, 0.5, 59)]
    sheet = read_back(score_of(track_of(chord + triplets + sixteenths)), tmp_path)
    third, quarter = Fraction(1, 3), Fraction(1, 4)
    assert written_onsets(sheet.parts[0]) == [
        (0, 60), (0, 64), (1, 67), (1 + third, 65), (1 + 2 * third, 64), (2, 62), (2 + quarter, 60), (2 + 2 * quarter, 59)
    ]
    notes = list(sheet.parts[0].flatten().notes)
    assert sorted(p.midi for p in notes[0].pitches) == [60, 64]  # struck together: one chord
    assert not any(n.tie for n in notes)  # each note ends where the next begins once both are snapped
    assert [n.quarterLength for n in notes] == [1, third, third, third, quarter, quarter, 2 * quarter]


def test_a_score_without_a_key_gets_the_most_likely_one(tmp_path):
    scale = track_of([(i, 1, p) for i, p in enumerate([57, 59, 60, 62, 64, 65, 68, 69, 64, 57])])  # A harmonic minor
    sheet = read_back(score_of(scale), tmp_path)
    found = sheet.parts[0].recurse().getElementsByClass(key.Key).first()
    assert (found.tonic.name, found.mode) == ("A", "minor")


def test_drum_tracks_become_percussion_parts(tmp_path):
    drums = track_of([(i / 2, 0.5, 36 if i % 2 == 0 else 38) for i in range(8)], is_drum=True, name="Kit")
    sheet = read_back(score_of(track_of([(0, 4, 60)]), drums), tmp_path)
    assert isinstance(sheet.parts[1].recurse().getElementsByClass(instrument.Instrument).first(), instrument.Percussion)


def test_a_score_that_cannot_be_written_is_a_reported_failure(tmp_path):
    renderers = build_renderers(OmegaConf.merge(OmegaConf.structured(RenderSchema), {"formats": ["midi", "musicxml"]}))
    empty = score_of(track_of([]))
    result = render(empty, tmp_path / "empty", renderers)
    assert set(result.failures) == {"midi", "musicxml"}
    assert "no notes" in result.failures["musicxml"]
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_bad_divisors_are_named():
    with pytest.raises(ValueError, match="render.musicxml.quarter_length_divisors"):
        MusicXmlRenderer([0])
