"""Which ids may come next, so that sampled sequences decode: one grammar per tokenizer family.

Single-stream tokenizers (REMI, TSD, MIDI-Like, Structured, with or without BPE) follow MidiTok's own
token-type graph (`tokens_types_graph`): a learned token is legal when its first base token may follow
the last base token so far. Compound tokenizers constrain each field given the fields already drawn
for the step: CPWord's family decides which fields carry values and which carry Ignore, as MidiTok's
encoder lays them out; every Octuple field is a value. On top of types, time only moves forward: a
REMI/CPWord Position may not go back within its bar or leave it, Octuple's (bar, position) never
decreases, and a MIDI-Like NoteOff closes only a sounding pitch. EOS is legal once a note is complete
(and, in MIDI-Like, every note closed), so no sample is empty.
"""

from __future__ import annotations

from typing import Sequence

import miditok
import numpy as np
import torch

from lyria.tokenizers.timeline import BarTracker

START = "START"  # the state before any musical token (after BOS, style or task tokens)


class _MaskTable:
    """Distinct masks of one field, computed once each, stacked for gathering rows by slot."""

    def __init__(self) -> None:
        self.slots: dict[tuple, int] = {}
        self.masks: list[torch.Tensor] = []
        self.stacked: torch.Tensor | None = None

    def add(self, key: tuple, mask: np.ndarray) -> int:
        self.slots[key] = len(self.masks)
        self.masks.append(torch.from_numpy(mask if mask.any() else np.ones_like(mask)))
        self.stacked = None
        return self.slots[key]

    def gather(self, slots: list[int]) -> torch.Tensor:
        if self.stacked is None:
            self.stacked = torch.stack(self.masks)
        if len(slots) == 1:  # batch 1: a view (indexing with a list builds an index tensor and copies)
            return self.stacked.narrow(0, slots[0], 1)
        return self.stacked[slots]


class Grammar:
    """`allowed(field, tracker, previous, partial)` -> bool mask over the field's vocabulary.

    `key(...)` names everything `allowed` reads (token types, position floor, bar length, ...), so that
    `masks` computes each distinct mask once and serves a batch with one gather.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.tok = tokenizer.tok
        self.num_special = tokenizer.num_special
        self.eos = tokenizer.eos_id
        self.positions_per_beat = self.tok.config.max_num_pos_per_beat
        self._memo: dict[int, _MaskTable] = {}

    def allowed(self, field: int, tracker: BarTracker, previous: np.ndarray, partial: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def key(self, field: int, tracker: BarTracker, previous, partial: Sequence[int]) -> tuple:
        """The state `allowed` depends on, hashable; equal keys must give equal masks."""
        raise NotImplementedError

    def masks(self, field: int, trackers: Sequence[BarTracker], previous: np.ndarray | None, partial: np.ndarray | None) -> torch.Tensor:
        """(B, V) bool masks for a batch: row i from trackers[i], previous[i] (None: nothing yet), partial[i].

        A row with no legal id gets an all-true mask (the sampler then leaves it to the decoder's repair).
        """
        table = self._memo.get(field)
        if table is None:
            table = self._memo[field] = _MaskTable()
        rows = []
        for row, tracker in enumerate(trackers):
            prev = None if previous is None else previous[row]
            part = [] if partial is None else partial[row].tolist()
            key = self.key(field, tracker, prev, part)
            slot = table.slots.get(key)
            if slot is None:
                slot = table.add(key, self.allowed(field, tracker, prev, part))
            rows.append(slot)
        return table.gather(rows)

    def _positions_per_bar(self, tracker: BarTracker, time_signature: tuple[int, int] | None = None) -> int:
        return tracker.bar_length(time_signature or tracker.time_signature) // tracker.ticks_per_position()

    def repair(self, ids: np.ndarray) -> tuple[np.ndarray, int]:
        """Drops every step the grammar forbids where it stands (specials kept); returns (ids, steps dropped)."""
        ids = np.asarray(ids)
        tracker = self.tokenizer.new_bar_tracker()
        kept, previous = [], None
        for step in ids:
            first = int(step[0]) if ids.ndim == 2 else int(step)
            values = step.tolist() if ids.ndim == 2 else [int(step)]
            legal = first < self.num_special or all(
                self.allowed(f, tracker, previous, values[:f])[v] for f, v in enumerate(values)
            )
            if legal:
                kept.append(step)
                tracker.step(step)
                previous = step
        return (np.stack(kept) if kept else ids[:0]), len(ids) - len(kept)


def _token_type(token: str) -> str:
    return token.split("_")[0]


def _position_floor(previous_type: str, tracker: BarTracker) -> int:
    """Positions up to this one are behind the current time: right after a Bar any position is ahead,
    after a Rest the position it landed on is still free (MidiTok's `_tokens_errors` rules)."""
    if previous_type in ("Bar", "TimeSig", START):
        return -1
    return tracker.position - 1 if previous_type == "Rest" else tracker.position


class TypeGraphGrammar(Grammar):
    """MidiTok's token-type graph over a single stream; learned tokens by their first and last base token."""

    def __init__(self, tokenizer) -> None:
        super().__init__(tokenizer)
        graph = {k: set(v) for k, v in self.tok.tokens_types_graph.items()}
        size = tokenizer.vocab_sizes[0]
        pieces = [tokenizer.tokens_of(i) for i in range(size)]
        self.first_type = [_token_type(p[0]) if p else None for p in pieces]
        self.last_type = [_token_type(p[-1]) if p else None for p in pieces]
        # the Position a learned token moves to before any Bar in it: it must not go back in time
        self.leading_position = np.full(size, -1, dtype=np.int64)
        for i, tokens in enumerate(pieces):
            for token in tokens:
                kind, _, value = token.partition("_")
                if kind in ("Bar", "TimeSig"):
                    break
                if kind == "Position":
                    self.leading_position[i] = int(value)
                    break
        # MIDI-Like: the pitches a token closes without opening them itself must be sounding
        self.closes: list[tuple[int, tuple[int, ...]]] = []
        for i, tokens in enumerate(pieces):
            opened, closed = set(), []
            for token in tokens:
                kind, _, value = token.partition("_")
                if kind in ("NoteOn", "DrumOn"):
                    opened.add(int(value))
                elif kind in ("NoteOff", "DrumOff") and int(value) not in opened:
                    closed.append(int(value))
            if closed:
                self.closes.append((i, tuple(closed)))
        carries = np.array([t is not None for t in self.first_type])
        special = np.arange(size) < self.num_special
        self.after: dict[str, np.ndarray] = {}
        for state in set(graph) | {START}:
            follows = graph.get(state, set())
            mask = np.array([t is not None and (state == START or t in follows) for t in self.first_type]) & carries
            self.after[state] = mask & ~special
        self.position_types = self.leading_position >= 0
        self.has_positions = bool(self.position_types.any())  # read at every step: a numpy reduction once

    def _state(self, previous) -> str:
        if previous is None:
            return START
        last = self.last_type[int(previous)]
        if last is None or int(previous) < self.num_special:
            return START
        return last

    def key(self, field: int, tracker: BarTracker, previous, partial) -> tuple:
        state = self._state(previous)
        positions = (_position_floor(state, tracker), self._positions_per_bar(tracker)) if self.has_positions else None
        sounding = tuple(sorted((p, c) for p, c in tracker.sounding.items() if c))
        return state, positions, tracker.n_notes > 0, sounding

    def allowed(self, field: int, tracker: BarTracker, previous, partial) -> np.ndarray:
        state = self._state(previous)
        mask = self.after.get(state, self.after[START]).copy()
        if self.has_positions:
            # within the bar and not backwards; right after Bar/TimeSig the bar's first position is free
            positions = self.leading_position
            floor = _position_floor(state, tracker)
            limit = self._positions_per_bar(tracker)
            bad = self.position_types & ((positions <= floor) | (positions >= limit))
            mask &= ~bad
        for token_id, pitches in self.closes:
            if mask[token_id] and any(tracker.sounding.get(p, 0) < pitches.count(p) for p in pitches):
                mask[token_id] = False
        mask[self.eos] = self._may_end(state, tracker)
        return mask

    def _may_end(self, state: str, tracker: BarTracker) -> bool:
        """After a note, where a new note could start (so no note is cut short), with no NoteOn left open."""
        follows = self.tok.tokens_types_graph.get(state, set())
        completes = state != START and bool(follows & {"Pitch", "NoteOn", "PitchDrum", "DrumOn"})
        return tracker.n_notes > 0 and completes and not any(tracker.sounding.values())


class CompoundGrammar(Grammar):
    """Field-by-field rules for CPWord and Octuple steps."""

    def __init__(self, tokenizer) -> None:
        super().__init__(tokenizer)
        self.types = [[_token_type(t) for t in sorted(v, key=v.get)] for v in self.tok.vocab]
        self.values = [[t.partition("_")[2] for t in sorted(v, key=v.get)] for v in self.tok.vocab]
        self.index = dict(self.tok.vocab_types_idx)

    def of_types(self, field: int, *types: str) -> np.ndarray:
        return np.array([t in types for t in self.types[field]])

    def only(self, field: int, token_id: int) -> np.ndarray:
        mask = np.zeros(len(self.types[field]), dtype=bool)
        mask[token_id] = True
        return mask

    def allowed(self, field: int, tracker: BarTracker, previous, partial) -> np.ndarray:
        if field > 0 and partial[0] < self.num_special:  # a special step repeats its id in every field
            return self.only(field, partial[0])
        return self._allowed(field, tracker, previous, list(partial))


class CPWordGrammar(CompoundGrammar):
    def __init__(self, tokenizer) -> None:
        super().__init__(tokenizer)
        self.graph = {k: set(v) for k, v in self.tok.tokens_types_graph.items()}
        self.family = self.values[0]
        self.rest_field = self.index.get("Rest")
        self.position_number = np.array([int(v) if t == "Position" else -1 for t, v in zip(self.types[1], self.values[1])])

    def _previous_type(self, previous) -> str:
        """MidiTok's type of a CPWord step (`_tokens_errors`): Pitch for notes, Bar/Position/Rest for metric steps."""
        if previous is None or int(previous[0]) < self.num_special:
            return START
        if self.family[int(previous[0])] == "Note":
            return "Pitch"
        bar_pos = self.types[1][int(previous[1])]
        if bar_pos in ("Bar", "Position"):
            return bar_pos
        return "Rest"

    def key(self, field, tracker, previous, partial) -> tuple:
        prev = self._previous_type(previous)
        return field, prev, tuple(partial[:2]), _position_floor(prev, tracker), self._positions_per_bar(tracker), tracker.n_notes > 0

    def _allowed(self, field, tracker, previous, partial) -> np.ndarray:
        prev = self._previous_type(previous)
        follows = self.graph.get(prev, set()) if prev != START else {"Bar", "Position", "Pitch", "Rest"}
        if field == 0:
            metric_kinds = {"Bar", "Position"} | ({"Rest"} if self.rest_field is not None else set())
            mask = np.array(
                [(f == "Note" and "Pitch" in follows) or (f == "Metric" and bool(follows & metric_kinds)) for f in self.family]
            )
            mask[self.eos] = tracker.n_notes > 0
            return mask
        metric = self.family[partial[0]] == "Metric"
        if field == 1:
            if not metric:
                return self.of_types(1, "Ignore")
            mask = self.of_types(1, *(follows & {"Bar", "Position"}))
            if self.rest_field is not None and "Rest" in follows:
                mask |= self.of_types(1, "Ignore")
            floor, limit = _position_floor(prev, tracker), self._positions_per_bar(tracker)
            is_position = self.position_number >= 0
            return mask & ~(is_position & ((self.position_number <= floor) | (self.position_number >= limit)))
        kind = self.types[1][partial[1]] if metric else None
        name = next((t for t, i in self.index.items() if i == field), None)
        if name in ("Pitch", "Velocity", "Duration", "Program"):
            return self.of_types(field, "Pitch", "PitchDrum") if (not metric and name == "Pitch") else (
                self.of_types(field, name) if not metric else self.of_types(field, "Ignore")
            )
        if name == "TimeSig":
            return self.of_types(field, "TimeSig") if kind == "Bar" else self.of_types(field, "Ignore")
        if name == "Tempo":
            return self.of_types(field, "Tempo") if kind == "Position" else self.of_types(field, "Ignore")
        if name == "Chord":
            return self.of_types(field, "Chord", "Ignore") if kind == "Position" else self.of_types(field, "Ignore")
        if name == "Rest":
            return self.of_types(field, "Rest") if metric and kind == "Ignore" else self.of_types(field, "Ignore")
        return ~self.of_types(field, *[_token_type(t) for t in self.tok.config.special_tokens])


class OctupleGrammar(CompoundGrammar):
    def __init__(self, tokenizer) -> None:
        super().__init__(tokenizer)
        specials = {_token_type(t) for t in self.tok.config.special_tokens}
        self.content = [np.array([t not in specials for t in types]) for types in self.types]
        self.position_field, self.bar_field = self.index["Position"], self.index["Bar"]
        self.timesig_field = self.index.get("TimeSig")
        self.number = {f: np.array([int(v) if v.isdigit() else -1 for v in self.values[f]]) for f in (self.position_field, self.bar_field)}
        if self.timesig_field is not None:
            self.signatures = [tuple(int(x) for x in v.split("/")) if "/" in v else (0, 0) for v in self.values[self.timesig_field]]
        longest = max(num for num, _ in self.tok.time_signatures) if self.timesig_field is not None else 4
        self.max_positions = longest * self.positions_per_beat

    def key(self, field, tracker, previous, partial) -> tuple:
        started = previous is not None and int(previous[0]) >= self.num_special
        return field, started, tracker.bar, tracker.position, tracker.time_signature, tracker.n_notes > 0, tuple(partial)

    def _allowed(self, field, tracker, previous, partial) -> np.ndarray:
        mask = self.content[field].copy()
        started = previous is not None and int(previous[0]) >= self.num_special
        bar_now, pos_now = (tracker.bar, tracker.position) if started else (0, 0)
        if field == 0:
            mask[self.eos] = tracker.n_notes > 0
        elif field == self.position_field:
            mask &= self.number[field] < self.max_positions  # a later bar may change the meter
            if bar_now == self.number[self.bar_field].max():  # no later bar to move to
                mask &= (self.number[field] >= pos_now) & (self.number[field] < self._positions_per_bar(tracker))
        elif field == self.bar_field:
            position = self.number[self.position_field][partial[self.position_field]]
            fits = not started or position < self._positions_per_bar(tracker)
            bars = self.number[field]
            mask &= (bars > bar_now) | ((bars == bar_now) & fits & (position >= pos_now))
        elif field == self.timesig_field:
            bar = self.number[self.bar_field][partial[self.bar_field]]
            position = self.number[self.position_field][partial[self.position_field]]
            new_bar = bar > bar_now or not started  # the meter changes only at a new bar
            mask &= np.array(
                [(sig == tracker.time_signature or new_bar) and position < sig[0] * self.positions_per_beat for sig in self.signatures]
            )
        return mask


def build_grammar(tokenizer) -> Grammar:
    if isinstance(tokenizer.tok, miditok.CPWord):
        return CPWordGrammar(tokenizer)
    if isinstance(tokenizer.tok, miditok.Octuple):
        return OctupleGrammar(tokenizer)
    if tokenizer.is_compound:
        raise NotImplementedError(f"no grammar for the compound tokenizer {tokenizer.name}")
    return TypeGraphGrammar(tokenizer)
