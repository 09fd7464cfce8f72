"""Parsers that turn one source item into a symusic Score; they run inside isolated worker processes.

music21 scores are converted note by note instead of through `score.write('midi')`, which fails on
some chorales with badly formed repeats and is slower.
"""

from __future__ import annotations

from pathlib import Path

from symusic import Note, Score, Tempo, TimeSignature, Track

TICKS_PER_QUARTER = 480
DEFAULT_VELOCITY = 64


class EmptyPieceError(ValueError):
    """The source parsed but holds no notes."""


def score_from_music21(stream) -> Score:
    """A music21 Score/Part -> symusic Score: one track per part, ties merged, pickups aligned to the bar."""
    from music21 import meter, stream as m21stream, tempo

    stream = stream.stripTies(inPlace=False) if hasattr(stream, "stripTies") else stream
    parts = list(stream.parts) if isinstance(stream, m21stream.Score) and stream.parts else [stream]
    pickup = _pickup_shift(parts[0])
    score = Score(TICKS_PER_QUARTER)

    def to_ticks(quarters) -> int:
        return int(round((float(quarters) + pickup) * TICKS_PER_QUARTER))

    for index, part in enumerate(parts):
        instrument = part.getInstrument(returnDefault=True)
        program = instrument.midiProgram if instrument is not None and instrument.midiProgram is not None else 0
        track = Track(part.partName or f"part{index}", int(program), False)
        flat = part.flatten()
        for element in flat.notes:
            duration = to_ticks(element.offset + element.duration.quarterLength) - to_ticks(element.offset)
            if duration <= 0:  # grace notes carry no duration
                continue
            velocity = element.volume.velocity if element.volume.velocity is not None else DEFAULT_VELOCITY
            for pitch in element.pitches:
                track.notes.append(Note(to_ticks(element.offset), duration, int(pitch.midi), int(velocity)))
        track.notes.sort()
        score.tracks.append(track)

    flat0 = parts[0].flatten()
    seen = set()
    for ts in flat0.getElementsByClass(meter.TimeSignature):
        tick = 0 if ts.offset == 0 else to_ticks(ts.offset)
        if tick not in seen:
            seen.add(tick)
            score.time_signatures.append(TimeSignature(tick, int(ts.numerator), int(ts.denominator)))
    marks = list(flat0.getElementsByClass(tempo.MetronomeMark))
    qpm = marks[0].getQuarterBPM() if marks and marks[0].getQuarterBPM() else 120.0
    score.tempos.append(Tempo(0, qpm=float(qpm)))
    if score.note_num() == 0:
        raise EmptyPieceError("no notes")
    return score


def _pickup_shift(part) -> float:
    """Quarter lengths to shift an anacrusis so that the first full bar starts on a downbeat."""
    measures = part.getElementsByClass("Measure")
    if not measures:
        return 0.0
    first = measures[0]
    return float(first.paddingLeft or 0.0)


def parse_music21_file(path: str) -> Score:
    """A corpus or local file music21 can read (MusicXML, kern, ABC with one tune)."""
    from music21 import converter

    return score_from_music21(converter.parse(path))


def parse_abc_tune(text: str) -> Score:
    """One tune of an ABC collection (its text already split off, the file header prepended)."""
    from music21 import converter

    return score_from_music21(converter.parse(text, format="abc"))


def input_bytes(parse, args: tuple) -> int | None:
    """The size of what `parse(*args)` is about to read, when the parser says what its first argument is
    (`parse.reads`: "path", "text" or "value", a file path, the text itself, or bytes / a path / HF's
    {"bytes", "path"} struct); None when unknown. Lets a size bound refuse a file before any parser opens it."""
    kind, value = getattr(parse, "reads", None), args[0] if args else None
    if kind == "text" and isinstance(value, str):
        return len(value.encode())
    if kind == "value" and isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if kind in ("path", "value") and isinstance(value, str):
        try:
            return Path(value).stat().st_size
        except OSError:
            return None  # the parser names the missing file
    if kind == "value" and isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    return None


VALID_DENOMINATORS = (1, 2, 4, 8, 16, 32, 64)


def drop_impossible_events(score: Score) -> Score:
    """Removes, in place, the global events no music has and every later stage would divide by: time signatures
    with a zero numerator or a denominator that is not a power of two up to 64 (a MIDI file can say 4/2**255),
    and tempos of zero microseconds per quarter note (an infinite tempo). Returns the score."""
    kept = [ts for ts in score.time_signatures if ts.numerator >= 1 and ts.denominator in VALID_DENOMINATORS]
    if len(kept) != len(score.time_signatures):
        score.time_signatures.clear()
        score.time_signatures.extend(kept)
    tempos = [t for t in score.tempos if t.mspq > 0]
    if len(tempos) != len(score.tempos):
        score.tempos.clear()
        score.tempos.extend(tempos)
    return score


def read_midi_file(path: str) -> Score:
    """A MIDI file through symusic, without impossible meters and tempos; an empty or note-less file is an error."""
    if Path(path).stat().st_size == 0:
        raise EmptyPieceError("empty file (0 bytes)")
    score = drop_impossible_events(Score(path))
    if score.note_num() == 0:
        raise EmptyPieceError("no notes")
    return score


parse_music21_file.reads = "path"
parse_abc_tune.reads = "text"
read_midi_file.reads = "path"


def read_midi_bytes(data: bytes) -> Score:
    """MIDI bytes (e.g. a dataset column) through symusic, as `read_midi_file`."""
    if not data:
        raise EmptyPieceError("empty MIDI bytes")
    score = drop_impossible_events(Score.from_midi(data))
    if score.note_num() == 0:
        raise EmptyPieceError("no notes")
    return score
