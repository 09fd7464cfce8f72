"""The project's tokenizer: a MidiTok tokenizer with reserved special tokens, bar ids and a save format.

Special tokens are laid out once, before any musical token, and never move: PAD, BOS, EOS, MASK, the
task tokens FILL and SEP, then `num_style_slots` style tokens. Styles fill slots in order; adding a
style or a task later renumbers nothing.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import miditok
import numpy as np
from hydra.utils import get_class
from symusic import Score, Track

from lyria.tokenizers.timeline import BarTracker, parse_token

TASK_TOKENS = ("PAD", "BOS", "EOS", "MASK", "FILL", "SEP")
STYLE_TOKEN = "Style"
TOKENIZER_FILE = "tokenizer.json"
LYRIA_KEY = "lyria"

_CONFIG_FIELDS = set(inspect.signature(miditok.TokenizerConfig.__init__).parameters) - {"self", "kwargs"}


class TokenizerConfigError(ValueError):
    """A tokenizer setting that MidiTok does not know, or a combination it cannot build."""


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


def _to_plain(value: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    return value


def build_miditok_config(config: dict, num_style_slots: int) -> miditok.TokenizerConfig:
    config = dict(_to_plain(config) or {})
    unknown = sorted(set(config) - _CONFIG_FIELDS)
    if unknown:
        raise TokenizerConfigError(
            f"unknown tokenizer.config key(s) {unknown}; MidiTok's TokenizerConfig accepts: "
            f"{sorted(_CONFIG_FIELDS)}"
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
    for key in ("pitch_range", "drums_pitch_range", "tempo_range", "pitch_bend_range"):
        if key in config:
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
        styles: list[str] | None = None,
        merge_tracks: bool = True,
        _miditok: miditok.MusicTokenizer | None = None,
    ) -> None:
        self.miditok_class = miditok_class
        self.num_style_slots = int(num_style_slots)
        self.learned_vocab_size = learned_vocab_size
        self.merge_tracks = bool(merge_tracks)
        self.styles: list[str] = []
        if _miditok is not None:
            self.tok = _miditok
        else:
            cls = get_class(miditok_class)
            if not (isinstance(cls, type) and issubclass(cls, miditok.MusicTokenizer)):
                raise TokenizerConfigError(f"tokenizer.miditok_class={miditok_class!r} is not a MidiTok tokenizer class")
            try:
                self.tok = cls(build_miditok_config(config or {}, self.num_style_slots))
            except (TypeError, ValueError) as err:
                if isinstance(err, TokenizerConfigError):
                    raise
                raise TokenizerConfigError(f"{miditok_class} cannot be built from tokenizer.config: {err}") from err
        if learned_vocab_size is not None and self.is_compound:
            raise TokenizerConfigError(
                f"tokenizer.learned_vocab_size={learned_vocab_size}: MidiTok cannot learn a vocabulary for the "
                f"multi-vocabulary tokenizer {type(self.tok).__name__}; use a single-stream tokenizer "
                "(remi, tsd, midilike, structured) or set tokenizer.learned_vocab_size=null"
            )
        for style in styles or []:
            self.add_style(style)
        self._tracker_tables = None

    # ----------------------------------------------------------------- vocabulary
    @property
    def name(self) -> str:
        return type(self.tok).__name__

    @property
    def is_compound(self) -> bool:
        return bool(self.tok.is_multi_voc)

    @property
    def vocab_sizes(self) -> list[int]:
        """One size per field; a single-stream tokenizer has one field."""
        if self.is_compound:
            return [len(v) for v in self.tok.vocab]
        return [len(self.tok)]

    @property
    def vocab_size(self) -> int:
        return sum(self.vocab_sizes)

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

    def add_style(self, style: str) -> int:
        """Gives `style` the next free style slot (idempotent) and returns its slot."""
        if style in self.styles:
            return self.styles.index(style)
        if len(self.styles) >= self.num_style_slots:
            raise TokenizerConfigError(
                f"style {style!r} needs a slot but all tokenizer.num_style_slots={self.num_style_slots} are "
                f"taken by {self.styles}; raise num_style_slots for a new tokenizer"
            )
        self.styles.append(style)
        return len(self.styles) - 1

    def style_token_id(self, style: str | int) -> int:
        slot = style if isinstance(style, int) else self.styles.index(style)
        vocab = self.tok.vocab[0] if self.is_compound else self.tok.vocab
        return vocab[f"{STYLE_TOKEN}_{slot}"]

    def step_ids(self, token_id: int) -> np.ndarray:
        """A special token as one model step: a scalar for single-stream, one id per field for compound."""
        if self.is_compound:
            return np.full(len(self.vocab_sizes), token_id, dtype=np.int64)
        return np.asarray(token_id, dtype=np.int64)

    # ----------------------------------------------------------------- encode / decode
    def prepare_score(self, score: Score) -> Score:
        """Merges pitched tracks into one when configured (single-program music such as choirs or tunes)."""
        if not self.merge_tracks or len(score.tracks) <= 1 or self.tok.config.use_programs:
            return score
        merged = Track("merged", 0, False)
        for track in score.tracks:
            if not track.is_drum:
                merged.notes.extend(track.notes)
        merged.notes.sort()
        out = score.copy()
        out.tracks = [merged]  # drum tracks need use_programs=true to be kept
        return out

    def encode(self, score: Score) -> TokSequence:
        seqs = self.tok.encode(self.prepare_score(score))
        if isinstance(seqs, list):
            if len(seqs) != 1:
                raise TokenizerConfigError(
                    f"{self.name} produced one token stream per track ({len(seqs)}); set tokenizer.merge_tracks=true "
                    "or tokenizer.config.use_programs=true so that a piece is one sequence"
                )
            seqs = seqs[0]
        ids = np.asarray(seqs.ids, dtype=np.int64)
        return TokSequence(ids=ids, bar_ids=self.bar_ids(ids))

    def decode(self, ids) -> Score:
        """Token ids (specials allowed, they are dropped) -> Score. Raises ValueError if nothing decodes."""
        ids = np.asarray(ids, dtype=np.int64)
        keep = self._content_mask(ids)
        ids = ids[keep]
        if len(ids) == 0:
            raise ValueError("no musical tokens to decode")
        seq = ids.tolist()
        if not self.tok.one_token_stream:
            seq = [seq]
        return self.tok.decode(seq)

    def _content_mask(self, ids: np.ndarray) -> np.ndarray:
        first = ids[:, 0] if ids.ndim == 2 else ids
        return first >= self.num_special

    # ----------------------------------------------------------------- bar ids
    def _tracker(self) -> BarTracker:
        if self._tracker_tables is None:
            vocab = self.tok.vocab[0] if self.is_compound else self.tok.vocab
            id_to_token = {i: t for t, i in vocab.items()}
            meanings = [parse_token(id_to_token.get(i, "")) for i in range(len(id_to_token))]
            self._tracker_tables = (meanings, dict(self.tok._tpb_per_ts), self.tok._tpb_tokens_to_ticks)
        meanings, tpb, ticks = self._tracker_tables
        if self.tok.config.use_rests:
            ticks = {k: {**v, **self.tok._tpb_rests_to_ticks.get(k, {})} for k, v in ticks.items()}
        return BarTracker(meanings=meanings, ticks_per_beat=tpb, duration_ticks=ticks)

    def new_bar_tracker(self) -> BarTracker:
        """A fresh tracker for generation: feed it every sampled id with `step`."""
        return self._tracker()

    def bar_ids(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        stream = ids[:, 0] if ids.ndim == 2 else ids
        return self._tracker().run(stream)

    # ----------------------------------------------------------------- augmentation
    def transposition_table(self, semitones: int) -> np.ndarray | None:
        """Maps every id of the pitch-carrying vocabulary to its transposed id (-1 where out of range)."""
        vocab = self.tok.vocab[self._pitch_field()] if self.is_compound else self.tok.vocab
        table = np.arange(len(vocab), dtype=np.int64)
        for token, idx in vocab.items():
            kind, _, value = token.partition("_")
            if kind in ("Pitch", "NoteOn", "NoteOff"):
                table[idx] = vocab.get(f"{kind}_{int(value) + semitones}", -1)
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
            meta = json.loads(path.read_text())[LYRIA_KEY]
        except (json.JSONDecodeError, KeyError) as err:
            raise ValueError(f"{path} is not a lyria tokenizer file ({err})") from err
        tok = get_class(meta["miditok_class"])(params=path)
        return cls(
            miditok_class=meta["miditok_class"],
            num_style_slots=meta["num_style_slots"],
            learned_vocab_size=meta.get("learned_vocab_size"),
            styles=meta.get("styles", []),
            merge_tracks=meta.get("merge_tracks", True),
            _miditok=tok,
        )

    def settings(self) -> dict:
        """Everything that changes the ids a score encodes to: part of the dataset cache key."""
        return {
            "class": self.miditok_class,
            "config": self.tok.config.to_dict(serialize=True),
            "num_style_slots": self.num_style_slots,
            "learned_vocab_size": self.learned_vocab_size,
            "merge_tracks": self.merge_tracks,
        }

