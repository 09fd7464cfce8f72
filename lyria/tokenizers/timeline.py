"""Token times and bar indices read from a token stream, so `bar_ids` exist for every tokenizer.

The same tracker serves encoding (bar ids stored in the dataset) and generation (bar ids of tokens
as they are sampled), so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_TIME_SIGNATURE = (4, 4)


@dataclass(frozen=True)
class TokenMeaning:
    """What one base-vocabulary token does to the running time.

    kind: "bar" (start the next bar), "position" (set ticks within the bar), "shift" (advance time),
    "timesig" (change the bar length from here on), or "none".
    """

    kind: str = "none"
    value: int = 0
    time_signature: tuple[int, int] | None = None
    duration_token: str | None = None


def parse_token(token: str) -> TokenMeaning:
    """Reads a MidiTok token string ("Bar_None", "Position_4", "TimeShift_1.0.8", "TimeSig_3/4")."""
    kind, _, value = token.partition("_")
    if kind == "Bar":
        return TokenMeaning("bar")
    if kind == "Position":
        return TokenMeaning("position", int(value))
    if kind in ("TimeShift", "Rest"):
        return TokenMeaning("shift", duration_token=value)
    if kind == "TimeSig":
        num, den = value.split("/")
        return TokenMeaning("timesig", time_signature=(int(num), int(den)))
    return TokenMeaning()


@dataclass
class BarTracker:
    """Follows time (in the tokenizer's ticks) and the bar index through a single token stream.

    A token belongs to the bar in which its time falls; a Bar token belongs to the bar it opens;
    tokens before the first bar (BOS, style) belong to bar 0.
    """

    meanings: list[TokenMeaning]
    ticks_per_beat: dict[int, int]
    duration_ticks: dict[int, dict[str, int]]
    time: int = 0
    bars_opened: int = 0
    time_signature: tuple[int, int] = DEFAULT_TIME_SIGNATURE
    # (tick, bar index, bar length in ticks) at each time-signature change, the first at tick 0.
    segments: list[tuple[int, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.segments:
            self.segments = [(0, 0, self._bar_length(self.time_signature))]

    def _bar_length(self, time_signature: tuple[int, int]) -> int:
        num, den = time_signature
        return num * self.ticks_per_beat.get(den, self.ticks_per_beat[max(self.ticks_per_beat)])

    def _bar_at(self, tick: int) -> int:
        start, bar0, length = self.segments[-1]
        for seg in reversed(self.segments):
            if seg[0] <= tick:
                start, bar0, length = seg
                break
        return bar0 + max(0, tick - start) // max(length, 1)

    def _bar_start(self, bar: int) -> int:
        start, bar0, length = self.segments[0]
        for seg in self.segments:
            if seg[1] <= bar:
                start, bar0, length = seg
        return start + (bar - bar0) * length

    def step(self, token_id: int) -> int:
        """Consumes one base token id and returns its bar index."""
        meaning = self.meanings[token_id]
        if meaning.kind == "bar":
            self.time = 0 if self.bars_opened == 0 else self._bar_start(self._bar_at(self.time) + 1)
            self.bars_opened += 1
        elif meaning.kind == "position":
            self.time = self._bar_start(self._bar_at(self.time)) + meaning.value
        elif meaning.kind == "shift":
            tpb = self.ticks_per_beat.get(self.time_signature[1], max(self.ticks_per_beat.values()))
            self.time += self.duration_ticks[tpb][meaning.duration_token]
        elif meaning.kind == "timesig" and meaning.time_signature != self.time_signature:
            bar = self._bar_at(self.time)
            start = self._bar_start(bar)
            self.time_signature = meaning.time_signature
            self.segments = [s for s in self.segments if s[0] < start] + [
                (start, bar, self._bar_length(meaning.time_signature))
            ]
        return self._bar_at(self.time)

    def run(self, token_ids) -> np.ndarray:
        return np.fromiter((self.step(int(t)) for t in token_ids), dtype=np.int32, count=len(token_ids))
