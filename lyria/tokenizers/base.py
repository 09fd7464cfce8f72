"""The project's tokenizer: a MidiTok tokenizer with reserved special tokens, bar ids and a save format.

Special tokens are laid out once, before any musical token, and never move: PAD, BOS, EOS, MASK, the
task tokens FILL and SEP, then `num_style_slots` style tokens. A style keeps its slot (the data cache
persists the style-to-slot map, and tokenizer.json stores it); a new style takes the lowest free slot;
the last slot is reserved for "no style" (condition dropout, unconditional guidance). Adding a style
or a task later renumbers nothing. A learned vocabulary (BPE) keeps every base id and adds
merged tokens after them.
"""

from __future__ import annotations

import inspect
import json
import logging
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import miditok
import numpy as np
from symusic import Note, Score, Track

from lyria.config import ConfigError, resolve_class, to_plain
from lyria.tokenizers.timeline import BarTracker, TimelineTables, TokenMeaning, parse_token

log = logging.getLogger(__name__)

TASK_TOKENS = ("PAD", "BOS", "EOS", "MASK", "FILL", "SEP")
STYLE_TOKEN = "Style"
TOKENIZER_FILE = "tokenizer.json"
LYRIA_KEY = "lyria"
NOTE_TOKEN_TYPES = ("Pitch", "NoteOn", "PitchDrum", "DrumOn")
# Why notes of a score do not come out of the tokens as they went in (LyriaTokenizer.note_losses).
NOTE_LOSS_REASONS = (
    "drums_dropped",  # drum tracks without tokenizer.config.use_programs
    "programs_collapsed",  # pitched notes whose program is lost (one merged track, program 0) without use_programs
    "pitch_out_of_range",  # pitches outside tokenizer.config.pitch_range: dropped
    "duration_clipped",  # durations longer than the longest Duration token: shortened to it
    "tempo_changes_dropped",  # tempo changes after the first without use_tempos (events, not notes)
)

_CONFIG_FIELDS = set(inspect.signature(miditok.TokenizerConfig.__init__).parameters) - {"self", "kwargs"}
# Options MidiTok reads from TokenizerConfig.additional_params, per tokenizer class.
_ADDITIONAL_PARAMS = {
    "REMI": {"max_bar_embedding", "use_bar_end_tokens", "add_trailing_bars"},
    "Octuple": {"max_bar_embedding"},
    "MIDILike": {"max_duration"},
}


class TokenizerConfigError(ValueError):
    """A tokenizer setting that MidiTok does not know, or a combination it cannot build."""


class PieceTooLongError(ValueError):
    """A piece the tokenizer would silently cut (Octuple beyond `max_bar_embedding` bars)."""


@dataclass
class TokSequence:
    """One encoded piece: ids are (T,) for single-stream tokenizers, (T, F) for compound ones."""

    ids: np.ndarray
    bar_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _beat_res_from_yaml(beat_res: dict) -> dict[tuple[int, int], int]:
    """YAML cannot key by tuples: beat ranges are written "0_4" (MidiTok's own file format)."""
    out = {}
    for key, res in beat_res.items():
        lo, hi = (int(v) for v in str(key).split("_"))
        out[(lo, hi)] = int(res)
    return out


def build_miditok_config(config: dict, num_style_slots: int, miditok_class: str = "miditok.REMI") -> miditok.TokenizerConfig:
    config = dict(to_plain(config) or {})
    class_name = miditok_class.rsplit(".", 1)[-1]
    extra = _ADDITIONAL_PARAMS.get(class_name, set())
    unknown = sorted(set(config) - _CONFIG_FIELDS - extra)
    if unknown:
        raise TokenizerConfigError(
            f"unknown tokenizer.config key(s) {unknown} for {class_name}; MidiTok's TokenizerConfig accepts: "
            f"{sorted(_CONFIG_FIELDS)}" + (f", and {class_name} also {sorted(extra)}" if extra else "")
        )
    if "special_tokens" in config:
        raise TokenizerConfigError(
            "tokenizer.config.special_tokens is fixed by lyria (PAD, BOS, EOS, MASK, FILL, SEP, styles); "
            "set tokenizer.num_style_slots instead"
        )
    if "beat_res" in config:
        config["beat_res"] = _beat_res_from_yaml(config["beat_res"])
    if "beat_res_rest" in config:
        config["beat_res_rest"] = _beat_res_from_yaml(config["beat_res_rest"])
    for key in ("pitch_range", "drums_pitch_range", "tempo_range", "pitch_bend_range", "chord_unknown"):
        if config.get(key) is not None:
            config[key] = tuple(config[key])
    if "time_signature_range" in config:
        config["time_signature_range"] = {int(k): list(v) for k, v in config["time_signature_range"].items()}
    specials = list(TASK_TOKENS) + [f"{STYLE_TOKEN}_{i}" for i in range(num_style_slots)]
    return miditok.TokenizerConfig(special_tokens=specials, **config)


class LyriaTokenizer:
    """Wraps one MidiTok tokenizer; the only place the rest of lyria touches MidiTok."""

    def __init__(
        self,
        miditok_class: str = "miditok.REMI",
        config: dict | None = None,
        num_style_slots: int = 32,
        learned_vocab_size: int | None = None,
        styles: list[str] | dict[str, int] | None = None,
        merge_tracks: bool = True,
        _miditok: miditok.MusicTokenizer | None = None,
    ) -> None:
        self.miditok_class = miditok_class
        self.num_style_slots = int(num_style_slots)
        self.learned_vocab_size = int(learned_vocab_size) if learned_vocab_size is not None else None
        self.merge_tracks = bool(merge_tracks)
        self.style_slots: dict[str, int] = {}
        if _miditok is not None:
            self.tok = _miditok
        else:
            try:
                cls = resolve_class(miditok_class, "tokenizer.miditok_class", base=miditok.MusicTokenizer)
            except ConfigError as err:
                raise TokenizerConfigError(str(err)) from None
            try:
                self.tok = cls(build_miditok_config(config or {}, self.num_style_slots, miditok_class))
            except (TypeError, ValueError, KeyError) as err:
                if isinstance(err, TokenizerConfigError):
                    raise
                raise TokenizerConfigError(f"{miditok_class} cannot be built from tokenizer.config: {err}") from err
            # MidiTok switches off what a tokenization cannot represent without a word; say so at start-up
            asked = to_plain(config) or {}
            dropped = sorted(k for k, v in asked.items() if k.startswith("use_") and v is True and not getattr(self.tok.config, k))
            if dropped:
                raise TokenizerConfigError(
                    f"{self.name} does not support tokenizer.config {dropped} (MidiTok would silently disable them); "
                    "set them to false"
                )
        config_used = self.tok.config
        if isinstance(self.tok, miditok.CPWord) and config_used.use_rests and config_used.use_time_signatures:
            # CPWord carries time signatures on Bar steps, which a rest skips: the decoded meter, and every
            # onset after it, then drift (MidiTok only warns)
            raise TokenizerConfigError(
                "CPWord cannot combine tokenizer.config.use_rests and use_time_signatures: a rest skips the Bar step "
                "that carries a time-signature change and MidiTok decodes later onsets in the wrong meter; turn one off"
            )
        if self.learned_vocab_size is not None:
            if self.is_compound:
                raise TokenizerConfigError(
                    f"tokenizer.learned_vocab_size={learned_vocab_size}: MidiTok cannot learn a vocabulary for the "
                    f"multi-vocabulary tokenizer {type(self.tok).__name__}; use a single-stream tokenizer "
                    "(remi, tsd, midilike, structured) or set tokenizer.learned_vocab_size=null"
                )
            base = len(self.tok.vocab)
            if self.learned_vocab_size <= base:
                raise TokenizerConfigError(
                    f"tokenizer.learned_vocab_size={learned_vocab_size} must be larger than the base vocabulary of "
                    f"{self.name} ({base} tokens), e.g. {base * 2}"
                )
        if isinstance(styles, dict):
            for style, slot in sorted(styles.items(), key=lambda item: item[1]):
                self.add_style(style, slot)
        else:
            for style in styles or []:
                self.add_style(style)

    def __getstate__(self) -> dict:
        # cached tables are rebuilt on demand, so pickles (dataset workers) stay small
        return {k: v for k, v in self.__dict__.items() if k not in ("timeline_tables", "grammar", "_learned_tokens")}

    # ----------------------------------------------------------------- vocabulary
    @property
    def name(self) -> str:
        return type(self.tok).__name__ + ("+BPE" if self.is_trained else "")

    @property
    def is_compound(self) -> bool:
        return bool(self.tok.is_multi_voc)

    @property
    def is_trained(self) -> bool:
        """Whether a learned vocabulary (BPE) is in use."""
        return bool(self.tok.is_trained)

    @property
    def vocab_sizes(self) -> list[int]:
        """One size per field; a single-stream tokenizer has one field (learned tokens included)."""
        if self.is_compound:
            return [len(v) for v in self.tok.vocab]
        return [len(self.tok)]

    @property
    def vocab_size(self) -> int:
        return sum(self.vocab_sizes)

    @property
    def field_names(self) -> list[str]:
        """What each field of a compound step holds (MidiTok's first token type of that field), e.g. Pitch."""
        if not self.is_compound:
            return ["token"]
        names: dict[int, str] = {}
        for token_type, index in self.tok.vocab_types_idx.items():
            names.setdefault(index, token_type)
        return [names.get(i, f"field{i}") for i in range(len(self.tok.vocab))]

    def field_index(self, name: str) -> int:
        """Field holding token type `name` (CPWord's Bar and Position share one)."""
        if not self.is_compound:
            raise TokenizerConfigError(f"{self.name} has one token stream; per-field settings need cpword or octuple")
        if name not in self.tok.vocab_types_idx:
            raise TokenizerConfigError(f"{self.name} has no field {name!r}; its fields are {self.field_names}")
        return self.tok.vocab_types_idx[name]

    def special_id(self, name: str) -> int:
        vocab = self.tok.vocab[0] if self.is_compound else self.tok.vocab
        return vocab[f"{name}_None"]

    @property
    def pad_id(self) -> int:
        return self.special_id("PAD")

    @property
    def bos_id(self) -> int:
        return self.special_id("BOS")

    @property
    def eos_id(self) -> int:
        return self.special_id("EOS")

    @property
    def mask_id(self) -> int:
        return self.special_id("MASK")

    @property
    def fill_id(self) -> int:
        return self.special_id("FILL")

    @property
    def sep_id(self) -> int:
        return self.special_id("SEP")

    @property
    def num_special(self) -> int:
        return len(TASK_TOKENS) + self.num_style_slots

    @property
    def styles(self) -> list[str]:
        """The styles in slot order."""
        return sorted(self.style_slots, key=self.style_slots.__getitem__)

    @property
    def null_style_slot(self) -> int | None:
        """The slot reserved for "no style" (the last one), or None with no slots at all."""
        return self.num_style_slots - 1 if self.num_style_slots > 0 else None

    def style_slot(self, style: str) -> int:
        """The slot of a known style; a KeyError naming the known ones otherwise."""
        if style not in self.style_slots:
            raise KeyError(f"unknown style {style!r}; this tokenizer knows {self.styles}")
        return self.style_slots[style]

    def add_style(self, style: str, slot: int | None = None) -> int:
        """Gives `style` a slot (idempotent) and returns it: `slot` when given (a persisted assignment), else
        the lowest free one. The reserved "no style" slot is never given."""
        style = str(style)
        if style in self.style_slots:
            if slot is not None and slot != self.style_slots[style]:
                raise TokenizerConfigError(f"style {style!r} has slot {self.style_slots[style]}, not {slot}")
            return self.style_slots[style]
        taken = {s: name for name, s in self.style_slots.items()}
        usable = self.num_style_slots - 1  # the last slot means "no style"
        if slot is None:
            slot = next((s for s in range(usable) if s not in taken), None)
            if slot is None:
                raise TokenizerConfigError(
                    f"style {style!r} needs a slot but all tokenizer.num_style_slots={self.num_style_slots} are "
                    f"taken by {self.styles} (the last one is reserved for no style); raise num_style_slots for a new tokenizer"
                )
        elif not 0 <= slot < usable or slot in taken:
            raise TokenizerConfigError(
                f"style {style!r} cannot take slot {slot}: "
                + (f"it belongs to {taken[slot]!r}" if slot in taken else f"usable slots are 0..{usable - 1} (num_style_slots={self.num_style_slots})")
            )
        self.style_slots[style] = int(slot)
        return int(slot)

    def style_token_id(self, style: str | int) -> int:
        slot = style if isinstance(style, int) else self.style_slot(style)
        vocab = self.tok.vocab[0] if self.is_compound else self.tok.vocab
        return vocab[f"{STYLE_TOKEN}_{slot}"]

    def step_ids(self, token_id: int) -> np.ndarray:
        """A special token as one model step: a scalar for single-stream, one id per field for compound."""
        if self.is_compound:
            return np.full(len(self.vocab_sizes), token_id, dtype=np.int64)
        return np.asarray(token_id, dtype=np.int64)

    def tokens_of(self, token_id: int, field: int = 0) -> list[str]:
        """The base token strings an id stands for (several for a learned token)."""
        if self.is_compound:
            return [self.tok[field, int(token_id)]]
        if self.is_trained:
            return self._learned_tokens[int(token_id)]
        return [self.tok[int(token_id)]]

    @cached_property
    def _learned_tokens(self) -> list[list[str]]:
        model = self.tok._model
        return [self.tok._vocab_learned_bytes_to_tokens[model.id_to_token(i)] for i in range(len(self.tok))]

    # ----------------------------------------------------------------- encode / decode
    def prepare_score(self, score: Score) -> Score:
        """The score as lyria hands it to MidiTok: onsets on the tokenizer's grid, pitched tracks merged when configured."""
        score = self.quantize_onsets(score)
        if not self.merge_tracks or len(score.tracks) <= 1 or self.tok.config.use_programs:
            return score
        merged = Track("merged", 0, False)
        for track in score.tracks:
            if not track.is_drum:
                merged.notes.extend(track.notes)
        merged.notes.sort()
        score.tracks = [merged]  # drum tracks need use_programs=true to be kept
        return score

    def onset_grid(self, score: Score) -> tuple[np.ndarray, np.ndarray]:
        """(start tick, grid step in ticks) of each time-signature section of `score`, in its own ticks.

        The grid is 1/`max_num_pos_per_beat` of the section's beat (its time signature's denominator);
        time signatures the tokenizer does not support leave the previous section going, as in MidiTok.
        """
        tpq = score.ticks_per_quarter
        positions = self.tok.config.max_num_pos_per_beat
        supported = set(map(tuple, self.tok.time_signatures)) if self.tok.config.use_time_signatures else set()
        starts, steps = [0.0], [tpq / positions]
        for ts in sorted(score.time_signatures, key=lambda t: t.time):
            if (ts.numerator, ts.denominator) not in supported:
                continue
            step = tpq * 4 / (ts.denominator * positions)
            if ts.time == starts[-1]:
                steps[-1] = step
            else:
                starts.append(float(ts.time))
                steps.append(step)
        return np.asarray(starts), np.asarray(steps)

    def quantize_times(self, score: Score, ticks: np.ndarray) -> np.ndarray:
        """Ticks of `score` moved to the nearest point of the tokenizer's grid (float ticks)."""
        starts, steps = self.onset_grid(score)
        section = np.clip(np.searchsorted(starts, ticks, side="right") - 1, 0, None)
        return starts[section] + np.round((ticks - starts[section]) / steps[section]) * steps[section]

    def quantize_onsets(self, score: Score) -> Score:
        """A copy of `score` whose onsets sit on the tokenizer's grid, rounded once.

        MidiTok rounds twice (to its finest resolution, then to each section's grid), which can put a
        triplet a whole grid step away from its nearest grid point (e.g. 2 2/3 beats -> 2 3/4, not 2 5/8).
        """
        out = score.copy()
        for track in out.tracks:
            notes = track.notes.numpy()
            if len(notes["time"]) == 0:
                continue
            notes["time"] = np.round(self.quantize_times(score, notes["time"].astype(np.float64))).astype(notes["time"].dtype)
            track.notes = Note.from_numpy(**notes, ttype="tick")
        return out

    def _encode_events(self, score: Score, encode_ids: bool = True):
        """MidiTok's TokSequence of one piece (one stream); a clipped piece is an error, not a silent loss."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            seqs = self.tok.encode(self.prepare_score(score), encode_ids=encode_ids)
        for warning in caught:
            if "cannot tokenize entirely" in str(warning.message):
                raise PieceTooLongError(
                    f"{self.name}: {str(warning.message).split('. It is')[0].removeprefix('miditok: ')}; raise "
                    "tokenizer.config.max_bar_embedding to keep the whole piece"
                )
        if isinstance(seqs, list):
            if len(seqs) != 1:
                raise TokenizerConfigError(
                    f"{self.name} produced one token stream per track ({len(seqs)}); set tokenizer.merge_tracks=true "
                    "or tokenizer.config.use_programs=true so that a piece is one sequence"
                )
            seqs = seqs[0]
        return seqs

    def encode(self, score: Score) -> TokSequence:
        ids = self.encode_ids(score)
        return TokSequence(ids=ids, bar_ids=self.bar_ids(ids))

    def encode_ids(self, score: Score) -> np.ndarray:
        """The ids alone, without bar ids (several times faster: evaluation encodes whole sets)."""
        return np.asarray(self._encode_events(score).ids, dtype=np.int64)

    def decode(self, ids) -> Score:
        """Token ids (specials allowed, they are dropped) -> Score. Raises ValueError if nothing decodes."""
        ids = np.asarray(ids, dtype=np.int64)
        ids = ids[self._content_mask(ids)]
        if len(ids) == 0:
            raise ValueError("no musical tokens to decode")
        if isinstance(self.tok, miditok.MIDILike):
            ids = self._close_open_notes(ids)
        seq = ids.tolist()
        if not self.tok.one_token_stream:
            seq = [seq]
        return self.tok.decode(seq)

    def _close_open_notes(self, ids: np.ndarray) -> np.ndarray:
        """MIDI-Like notes no NoteOff closes (a sample cut by max_new_tokens) end after `max_duration`.

        MidiTok means to do this itself but drops a track whose notes are all still open; closing them
        with the longest TimeShift and their NoteOffs gives every note what MidiTok would have given it.
        """
        tracker = self.new_bar_tracker()
        tracker.run(ids)
        open_pitches = [p for p, count in tracker.sounding.items() for _ in range(count)]
        if not open_pitches:
            return ids
        vocab = self.tok.vocab
        longest = max((t for t in vocab if t.startswith("TimeShift_")), key=lambda t: parse_token(t).ticks(self.tok.time_division))
        closing = [vocab[longest]] + [vocab[f"NoteOff_{p}"] for p in open_pitches]
        return np.concatenate([ids, np.asarray(closing, dtype=ids.dtype)])

    def _content_mask(self, ids: np.ndarray) -> np.ndarray:
        first = ids[:, 0] if ids.ndim == 2 else ids
        return first >= self.num_special

    # ----------------------------------------------------------------- learned vocabulary (BPE)
    def learn_vocabulary(self, score_paths: Sequence[str | Path]) -> None:
        """Trains MidiTok's BPE to `learned_vocab_size` tokens on these scores (the training split only)."""
        if self.learned_vocab_size is None:
            raise TokenizerConfigError("learn_vocabulary needs tokenizer.learned_vocab_size")
        if not score_paths:
            raise ValueError("no training pieces to learn a vocabulary from")
        split = self.tok.config.encode_ids_split
        chunks = []
        for path in score_paths:
            try:
                seq = self._encode_events(Score(str(path)), encode_ids=False)
            except ValueError:  # the tokenizing stage skips and reports this piece too
                continue
            parts = seq.split_per_bars() if split == "bar" else seq.split_per_beats() if split == "beat" else [seq]
            words = [self.tok._ids_to_bytes(part.ids, as_one_str=True) for part in parts if len(part) > 0]
            if words:
                chunks.append(words)
        self.tok.train(vocab_size=self.learned_vocab_size, model="BPE", iterator=chunks)
        self._forget_tables()
        if len(self.tok) < self.learned_vocab_size:
            log.warning(
                "%s: BPE stopped at %d tokens, short of tokenizer.learned_vocab_size=%d: the %d training pieces hold no "
                "more pairs to merge", self.name, len(self.tok), self.learned_vocab_size, len(chunks),
            )

    def use_learned_vocabulary(self, other: "LyriaTokenizer") -> None:
        """Adopts the learned vocabulary of a loaded tokenizer with the same base settings."""
        if other.settings()["config"] != self.settings()["config"] or other.learned_vocab_size != self.learned_vocab_size:
            raise ValueError("the stored learned vocabulary was made for other tokenizer settings")
        self.tok = other.tok
        self._forget_tables()

    def _forget_tables(self) -> None:
        for key in ("timeline_tables", "grammar", "_learned_tokens"):
            self.__dict__.pop(key, None)

    # ----------------------------------------------------------------- bar ids
    @cached_property
    def timeline_tables(self) -> TimelineTables:
        if self.is_compound:
            # a special step repeats its id in every field: its meaning (FILL, SEP) counts once, in field 0
            fields = [
                [(parse_token(self.tok[f, i]) if f == 0 or i >= self.num_special else TokenMeaning(),) for i in range(len(v))]
                for f, v in enumerate(self.tok.vocab)
            ]
        else:
            fields = [[tuple(parse_token(t) for t in self.tokens_of(i)) for i in range(len(self.tok))]]
        return TimelineTables(
            fields=fields,
            ticks_per_beat=dict(self.tok._tpb_per_ts),
            positions_per_beat=self.tok.config.max_num_pos_per_beat,
            rest_from_note_end=not isinstance(self.tok, miditok.MIDILike),
            note_offs=isinstance(self.tok, miditok.MIDILike),
        )

    @property
    def supports_infilling(self) -> bool:
        """Infilling needs tokens that mark bars (REMI, CPWord, Octuple): time shifts alone cannot say where a gap ends."""
        return self.timeline_tables.marks_bars

    def new_bar_tracker(self) -> BarTracker:
        """A fresh tracker for generation: feed it every sampled step with `step`."""
        return BarTracker(self.timeline_tables)

    def bar_ids(self, ids: np.ndarray) -> np.ndarray:
        return self.new_bar_tracker().run(np.asarray(ids))

    # ----------------------------------------------------------------- grammar and note counts
    @cached_property
    def grammar(self):
        """The token grammar the sampler's GrammarMask enforces (see lyria.tokenizers.grammar)."""
        from lyria.tokenizers.grammar import build_grammar

        return build_grammar(self)

    def note_counts(self) -> np.ndarray:
        """Note onsets each id of the note field carries (a learned token may hold several): for NLL per note."""
        field = self.note_field
        size = self.vocab_sizes[field]
        return np.array(
            [sum(t.split("_")[0] in NOTE_TOKEN_TYPES for t in self.tokens_of(i, field)) for i in range(size)], dtype=np.int64
        )

    def note_losses(self, score: Score) -> dict[str, int]:
        """What `encode` drops or changes of `score`, by reason (`NOTE_LOSS_REASONS`), from the score and the settings.

        Counts are notes, except `tempo_changes_dropped` (tempo events). A note dropped for one reason is not
        counted again for another.
        """
        config = self.tok.config
        losses = dict.fromkeys(NOTE_LOSS_REASONS, 0)
        score = score if score.ttype == "Tick" else score.to("tick")
        pitches, starts, durations = [], [], []
        for track in score.tracks:
            notes = track.notes.numpy()
            if len(notes["pitch"]) == 0:
                continue
            if track.is_drum and not config.use_programs:
                losses["drums_dropped"] += len(notes["pitch"])
                continue
            pitch = notes["pitch"].astype(np.int64)
            in_range = (pitch >= config.pitch_range[0]) & (pitch <= config.pitch_range[1])
            if not config.use_programs and track.program != 0:
                losses["programs_collapsed"] += int(in_range.sum())
            pitches.append(pitch)
            starts.append(notes["time"].astype(np.float64))
            durations.append(notes["duration"].astype(np.float64))
        if pitches:
            pitch, start, duration = (np.concatenate(v) for v in (pitches, starts, durations))
            in_range = (pitch >= config.pitch_range[0]) & (pitch <= config.pitch_range[1])
            losses["pitch_out_of_range"] = int((~in_range).sum())
            longest_beats = max(end for _, end in config.beat_res) if config.beat_res else None
            if longest_beats is not None and any(str(t).startswith("Duration_") for t in self._base_vocab_tokens()):
                # a beat is the time signature's denominator (MidiTok): the grid step times the positions per beat
                grid_starts, grid_steps = self.onset_grid(score)
                section = np.clip(np.searchsorted(grid_starts, start, side="right") - 1, 0, None)
                beat_ticks = grid_steps[section] * config.max_num_pos_per_beat
                clipped = duration > longest_beats * beat_ticks + grid_steps[section] / 2
                losses["duration_clipped"] = int((clipped & in_range).sum())
        if not config.use_tempos:
            qpm = [t.qpm for t in sorted(score.tempos, key=lambda t: t.time)]
            losses["tempo_changes_dropped"] = sum(1 for a, b in zip(qpm, qpm[1:]) if abs(a - b) > 1e-6)
        return losses

    def notes_in_ids(self, ids: np.ndarray, counts: np.ndarray | None = None) -> int:
        """Note onsets a token sequence holds (`counts`: `note_counts()`, passed in when called often)."""
        counts = self.note_counts() if counts is None else counts
        ids = np.asarray(ids, dtype=np.int64)
        column = ids[:, self.note_field] if ids.ndim == 2 else ids
        return int(counts[column].sum())

    def _base_vocab_tokens(self) -> list[str]:
        vocab = self.tok.vocab
        return [t for field in vocab for t in field] if isinstance(vocab, list) else list(vocab)

    @property
    def note_field(self) -> int:
        return self._pitch_field() if self.is_compound else 0

    # ----------------------------------------------------------------- augmentation
    def transposition_table(self, semitones: int) -> np.ndarray | None:
        """Maps every id of the pitch-carrying vocabulary to its transposed id (-1 where none exists).

        A learned token maps to the learned token of its transposed base tokens, or -1 when BPE never
        merged that transposed sequence (the training crop then stays untransposed).
        """
        if self.is_trained:
            return self._learned_transposition_table(semitones)
        vocab = self.tok.vocab[self._pitch_field()] if self.is_compound else self.tok.vocab
        table = np.arange(len(vocab), dtype=np.int64)
        for token, idx in vocab.items():
            transposed = _transpose_token(token, semitones)
            if transposed != token:
                table[idx] = vocab.get(transposed, -1)
        return table

    def _learned_transposition_table(self, semitones: int) -> np.ndarray:
        if not getattr(self, "_warned_transposition", False):
            self._warned_transposition = True
            log.warning(
                "%s: with a learned vocabulary a crop transposes only if every learned token has a transposed twin, "
                "which is rare (see benchmarks/results/tokenizers.md, 'transposable windows'): data.transpose adds "
                "almost no augmentation; set data.transpose=[0,0] to make that explicit",
                self.name,
            )
        learned = self.tok._model.get_vocab()
        vocab, to_byte = self.tok.vocab, self.tok._vocab_base_id_to_byte

        def spelled(tokens: list[str]) -> str:
            return "".join(to_byte[vocab[t]] for t in tokens)

        table = np.arange(len(learned), dtype=np.int64)
        for key, idx in learned.items():
            tokens = self._learned_tokens[idx]
            moved = [_transpose_token(t, semitones) for t in tokens]
            if moved == tokens:
                continue
            if not all(t in vocab for t in moved):
                table[idx] = -1
                continue
            prefix = key[: len(key) - len(spelled(tokens))]  # Metaspace's word-start marker, if any
            table[idx] = learned.get(prefix + spelled(moved), -1)
        return table

    def _pitch_field(self) -> int:
        for i, v in enumerate(self.tok.vocab):
            if any(t.startswith("Pitch_") for t in v):
                return i
        raise TokenizerConfigError(f"{self.name} has no Pitch field")

    @property
    def pitch_field(self) -> int | None:
        return self._pitch_field() if self.is_compound else None

    # ----------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tok.save(
            directory,
            additional_attributes={
                LYRIA_KEY: {
                    "miditok_class": self.miditok_class,
                    "num_style_slots": self.num_style_slots,
                    "learned_vocab_size": self.learned_vocab_size,
                    "styles": list(self.styles),
                    "style_slots": dict(self.style_slots),
                    "merge_tracks": self.merge_tracks,
                }
            },
            filename=TOKENIZER_FILE,
        )
        return directory / TOKENIZER_FILE

    @classmethod
    def load(cls, path: str | Path) -> "LyriaTokenizer":
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}")
        try:
            params = json.loads(path.read_text())
            meta = params[LYRIA_KEY]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a lyria tokenizer file ({err})") from err
        miditok_cls = resolve_class(meta.get("miditok_class"), f"{path}: {LYRIA_KEY}.miditok_class", base=miditok.MusicTokenizer)
        # MidiTok sets every other top-level key as an attribute: none may shadow a method
        shadowing = sorted(k for k in params if callable(getattr(miditok_cls, k, None)))
        if shadowing:
            raise ValueError(f"{path}: keys {shadowing} would replace methods of {miditok_cls.__name__}; not a tokenizer file lyria wrote")
        tok = miditok_cls(params=path)
        return cls(
            miditok_class=meta["miditok_class"],
            num_style_slots=meta["num_style_slots"],
            learned_vocab_size=meta.get("learned_vocab_size"),
            styles=meta.get("style_slots") or meta.get("styles", []),
            merge_tracks=meta.get("merge_tracks", True),
            _miditok=tok,
        )

    def settings(self) -> dict:
        """Everything that changes the ids a score encodes to: part of the dataset cache key.

        The learned vocabulary itself is a function of these settings and the training split, which
        the dataset key covers as well.
        """
        # through JSON, so a tokenizer built from YAML and one loaded from its file agree (tuples vs lists)
        config = json.loads(json.dumps(self.tok.config.to_dict(serialize=True), default=str))
        return {
            "class": self.miditok_class,
            "config": config,
            "num_style_slots": self.num_style_slots,
            "learned_vocab_size": self.learned_vocab_size,
            "merge_tracks": self.merge_tracks,
        }


def _transpose_token(token: str, semitones: int) -> str:
    kind, _, value = token.partition("_")
    if kind in ("Pitch", "NoteOn", "NoteOff"):
        return f"{kind}_{int(value) + semitones}"
    return token
