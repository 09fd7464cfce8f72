"""Token times, bar indices and note counts read from token ids, so `bar_ids` exist for every tokenizer.

The same tracker serves encoding (bar ids stored in the dataset) and generation (bar ids of tokens
as they are sampled, and the musical time the grammar masks look at), so the two never disagree.
Times are in the ticks of MidiTok's decoder (`tokenizer.time_division` per quarter note) and follow
its decoding rules: a Position counts in steps of 1/`max_num_pos_per_beat` of the current beat, a
Rest starts from the end of the last note (except in MIDI-Like), a time signature changes the bar
length from the bar in which it appears.

Infilling sequences (prefix, FILL per missing bar, suffix, SEP, the missing bars, SEP) are followed
segment by segment: each FILL stands for one bar, so the suffix lands where it belongs, and the first
SEP takes time back to the first FILL's bar, where the missing bars begin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_TIME_SIGNATURE = (4, 4)

# Inside one compound step, the bar is set first, then its time signature, then the time within it.
_PRIORITY = {
    "fill": 0, "sep": 0, "bar": 0, "bar_number": 0, "timesig": 1, "position": 2, "shift": 2, "rest": 2, "note": 3,
    "note_off": 3, "duration": 4, "none": 5,
}
_NOTE_TYPES = ("Pitch", "NoteOn", "PitchDrum", "DrumOn", "PitchIntervalTime", "PitchIntervalChord")


@dataclass(frozen=True)
class TokenMeaning:
    """What one base token does to the running time.

    kind: "bar" (open the next bar), "bar_number" (go to bar `value`, Octuple), "position" (`value`
    steps into the bar), "shift" (advance by a time token), "rest" (advance after the last note
    ends), "duration" (a note lasting a time token), "note" (a note onset; MIDI-Like's NoteOn keeps
    its pitch in `value`), "note_off" (MIDI-Like's NoteOff of pitch `value`), "timesig", "fill" (a
    missing bar), "sep" (the missing bars follow), or "none".
    """

    kind: str = "none"
    value: int = 0
    time_signature: tuple[int, int] | None = None
    beats: tuple[int, int, int] | None = None  # a time token's (beats, positions, resolution)

    def ticks(self, ticks_per_beat: int) -> int:
        """A time token in ticks, as MidiTok's `_time_token_to_ticks` computes it."""
        beat, pos, res = self.beats
        return (beat * res + pos) * ticks_per_beat // res


def parse_token(token: str) -> TokenMeaning:
    """Reads a MidiTok token string ("Bar_None", "Bar_12", "Position_4", "TimeShift_1.0.8", "TimeSig_3/4")."""
    kind, _, value = token.partition("_")
    if kind == "Bar":
        return TokenMeaning("bar") if value == "None" else TokenMeaning("bar_number", int(value))
    if kind == "Position":
        return TokenMeaning("position", int(value))
    if kind in ("TimeShift", "Rest", "Duration"):
        beat, pos, res = (int(v) for v in value.split("."))
        return TokenMeaning({"TimeShift": "shift", "Rest": "rest", "Duration": "duration"}[kind], beats=(beat, pos, res))
    if kind in _NOTE_TYPES:
        return TokenMeaning("note", int(value) if kind in ("NoteOn", "DrumOn") else 0)
    if kind in ("NoteOff", "DrumOff"):
        return TokenMeaning("note_off", int(value))
    if kind == "TimeSig":
        num, den = value.split("/")
        return TokenMeaning("timesig", time_signature=(int(num), int(den)))
    if kind in ("FILL", "SEP"):
        return TokenMeaning(kind.lower())
    return TokenMeaning()


@dataclass(frozen=True)
class TimelineTables:
    """Per field, the meanings of every id (a tuple: a learned token stands for several base tokens).

    Built once per tokenizer (`LyriaTokenizer.timeline_tables`); trackers share it.
    """

    fields: list[list[tuple[TokenMeaning, ...]]]
    ticks_per_beat: dict[int, int]  # per time-signature denominator
    positions_per_beat: int
    rest_from_note_end: bool = True
    note_offs: bool = False  # NoteOn/NoteOff pairs (MIDI-Like): the tracker knows which pitches sound

    @property
    def compound(self) -> bool:
        return len(self.fields) > 1

    @property
    def ticks_per_quarter(self) -> int:
        den, ticks = next(iter(self.ticks_per_beat.items()))
        return ticks * den // 4

    @property
    def marks_bars(self) -> bool:
        """Whether tokens say where bars start (Bar tokens or bar numbers): what infilling needs."""
        return any(m.kind in ("bar", "bar_number") for table in self.fields for meanings in table for m in meanings)


@dataclass
class BarTracker:
    """Follows time, the bar index and the number of notes through one sequence, one step at a time.

    A token belongs to the bar in which its time falls: a Bar token to the bar it opens, a time
    shift to the bar where it lands, tokens before any time token (BOS, style) to bar 0. A learned
    (BPE) token belongs to the bar of its first base token; a compound step to the bar of its time.
    """

    tables: TimelineTables
    time: int = 0
    bar_opened: bool = False
    note_end: int = 0
    n_notes: int = 0
    time_signature: tuple[int, int] = DEFAULT_TIME_SIGNATURE
    sounding: dict[int, int] = field(default_factory=dict)  # pitch -> open NoteOns (MIDI-Like)
    gap_bar: int | None = None  # the bar of the first FILL, where an infilled span begins
    in_span: bool = False  # after the SEP that starts the missing bars
    # (tick, bar index, bar length in ticks) at each time-signature change, the first at tick 0.
    segments: list[tuple[int, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.segments:
            self.segments = [(0, 0, self.bar_length(self.time_signature))]

    # ------------------------------------------------------------------ grid
    def ticks_per_beat(self, time_signature: tuple[int, int] | None = None) -> int:
        den = (time_signature or self.time_signature)[1]
        tpb = self.tables.ticks_per_beat
        return tpb.get(den, tpb[max(tpb)])

    def bar_length(self, time_signature: tuple[int, int]) -> int:
        return time_signature[0] * self.ticks_per_beat(time_signature)

    def ticks_per_position(self) -> int:
        return max(self.ticks_per_beat() // self.tables.positions_per_beat, 1)

    @property
    def bar(self) -> int:
        """Index of the bar the current time falls in."""
        return self.bar_at(self.time)

    def bar_at(self, tick: int) -> int:
        start, bar0, length = self.segments[0]
        for seg in self.segments:
            if seg[0] <= tick:
                start, bar0, length = seg
        return bar0 + max(0, tick - start) // max(length, 1)

    def bar_start(self, bar: int) -> int:
        start, bar0, length = self.segments[0]
        for seg in self.segments:
            if seg[1] <= bar:
                start, bar0, length = seg
        return start + (bar - bar0) * length

    @property
    def quarters(self) -> float:
        """The current time in quarter notes."""
        return self.time / self.tables.ticks_per_quarter

    @property
    def position(self) -> int:
        """Positions (grid steps) from the start of the current bar to the current time."""
        return (self.time - self.bar_start(self.bar)) // self.ticks_per_position()

    # ------------------------------------------------------------------ stepping
    def _apply(self, meaning: TokenMeaning) -> None:
        kind = meaning.kind
        if kind == "fill":
            self._apply(TokenMeaning("bar"))
            self.gap_bar = self.bar if self.gap_bar is None else self.gap_bar
        elif kind == "sep" and self.gap_bar is not None and not self.in_span:
            # the missing bars follow: the next Bar token opens the first of them
            self.in_span, self.bar_opened = True, self.gap_bar > 0
            self.time = self.note_end = self.bar_start(self.gap_bar - 1) if self.bar_opened else 0
        elif kind == "bar":
            self.time = self.bar_start(self.bar + 1) if self.bar_opened else self.time
            self.bar_opened = True
        elif kind == "bar_number":
            self.time = self.bar_start(meaning.value)
            self.bar_opened = True
        elif kind == "position":
            self.time = self.bar_start(self.bar) + meaning.value * self.ticks_per_position()
            self.bar_opened = True
        elif kind == "shift":
            self.time += meaning.ticks(self.ticks_per_beat())
        elif kind == "rest":
            start = max(self.time, self.note_end) if self.tables.rest_from_note_end else self.time
            self.time = start + meaning.ticks(self.ticks_per_beat())
            self.bar_opened = True
        elif kind == "duration":
            self.note_end = max(self.note_end, self.time + meaning.ticks(self.ticks_per_beat()))
        elif kind == "note":
            self.n_notes += 1
            self.note_end = max(self.note_end, self.time)
            if self.tables.note_offs:
                self.sounding[meaning.value] = self.sounding.get(meaning.value, 0) + 1
        elif kind == "note_off" and self.sounding.get(meaning.value):
            self.sounding[meaning.value] -= 1
        elif kind == "timesig" and meaning.time_signature != self.time_signature:
            bar = self.bar
            start = self.bar_start(bar)
            self.time_signature = meaning.time_signature
            self.segments = [s for s in self.segments if s[0] < start] + [(start, bar, self.bar_length(meaning.time_signature))]

    def step(self, ids) -> int:
        """Consumes one model step (an id, or one id per field) and returns its bar index."""
        if self.tables.compound:
            meanings = sorted(
                (m for table, i in zip(self.tables.fields, np.asarray(ids).tolist()) for m in table[i]),
                key=lambda m: _PRIORITY[m.kind],
            )
            for meaning in meanings:
                self._apply(meaning)
            return self.bar
        meanings = self.tables.fields[0][int(ids)]
        if not meanings:
            return self.bar
        self._apply(meanings[0])
        bar = self.bar
        for meaning in meanings[1:]:
            self._apply(meaning)
        return bar

    def run(self, ids) -> np.ndarray:
        """Bar index of every step of a sequence ((T,) ids or (T, F))."""
        return np.fromiter((self.step(step) for step in ids), dtype=np.int32, count=len(ids))
