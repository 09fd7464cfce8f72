"""Chorale harmonization as a sequence-to-sequence task: the soprano line in, all four voices out.

Each four-part piece keeps its voices apart, one track and one General MIDI program per voice
(`VOICE_PROGRAMS`), so that the tokens (with `use_programs`) and the output have four real parts. The
soprano alone, tokenized by the same tokenizer, is the conditioning sequence (`memory`) that the
`cross_attention` scheme encodes; the decoder writes the whole four-part texture. A training crop's
memory is the soprano of the crop's bars, so crop and melody stay aligned.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from symusic import Score, Track
from torch.utils.data import Dataset

from lyria.data.datamodule import MusicDataModule, _Collate, collate

log = logging.getLogger(__name__)

VOICES = ("Soprano", "Alto", "Tenor", "Bass")
# violin, viola, cello, contrabass: four distinct programs, so the decoded piece has four parts
VOICE_PROGRAMS = (40, 41, 42, 43)
SOPRANO_PROGRAM = VOICE_PROGRAMS[0]


def voiced(score: Score) -> Score | None:
    """The four-part piece with one program per voice (parts in score order, soprano first), or None when
    the piece does not have exactly four pitched parts with notes."""
    parts = [t for t in score.tracks if not t.is_drum and t.note_num()]
    if len(parts) != len(VOICES):
        return None
    out = Score(score.ticks_per_quarter)
    out.time_signatures, out.tempos, out.key_signatures = score.time_signatures.copy(), score.tempos.copy(), score.key_signatures.copy()
    for name, program, part in zip(VOICES, VOICE_PROGRAMS, parts):
        track = Track(name, program, False)
        track.notes = part.notes.copy()
        out.tracks.append(track)
    return out


def melody_score(score: Score) -> Score:
    """The melody of a score as the soprano: its first pitched part with notes (the highest-pitched one when
    the parts are not in score order is not guessed), with the soprano's program."""
    parts = [t for t in score.tracks if not t.is_drum and t.note_num()]
    if not parts:
        raise ValueError("the melody file has no pitched notes")
    out = Score(score.ticks_per_quarter)
    out.time_signatures, out.tempos = score.time_signatures.copy(), score.tempos.copy()
    track = Track(VOICES[0], SOPRANO_PROGRAM, False)
    track.notes = parts[0].notes.copy()
    out.tracks.append(track)
    return out


def soprano_notes(score: Score, program: int = SOPRANO_PROGRAM) -> list[tuple[float, int]]:
    """(onset in quarters, pitch) of every note of the soprano's program, sorted."""
    notes = []
    for track in score.to("quarter").tracks:
        if track.program == program and not track.is_drum:
            notes += [(round(float(n.time), 4), int(n.pitch)) for n in track.notes]
    return sorted(notes)


def soprano_match(generated: Score, melody: Score) -> dict[str, Any]:
    """Whether the generated soprano equals the given melody (every onset and pitch), and the share of the
    melody's notes it holds."""
    want, got = soprano_notes(melody), soprano_notes(generated)
    remaining = list(got)
    hits = 0
    for note in want:
        if note in remaining:
            remaining.remove(note)
            hits += 1
    return {"soprano_equal": want == got, "soprano_note_match": round(hits / max(len(want), 1), 4)}


class HarmonizationSplits:
    """Prepared splits of four-part pieces: the voiced pieces' ids and their soprano's ids (`memory`)."""

    def __init__(self, prepared, tokenizer, max_memory_length: int) -> None:
        import datasets

        if not tokenizer.tok.config.use_programs:
            raise ValueError("harmonization needs tokenizer.config.use_programs=true, so that the four voices stay apart")
        self.report, self.report_path, self.cache_path = prepared.report, prepared.report_path, prepared.cache_path
        self.styles = prepared.styles
        self.splits, self.skipped = {}, {}
        for split in prepared.splits:
            rows = {"ids": [], "bar_ids": [], "memory": [], "memory_bars": [], "style_id": [], "n_tokens": [], "piece_id": []}
            skipped = 0
            for path, style_id, piece_id in zip(prepared.score_paths(split), prepared.splits[split]["style_id"], prepared.splits[split]["piece_id"]):
                piece = voiced(Score(str(path)))
                if piece is None:
                    skipped += 1
                    continue
                seq, melody = tokenizer.encode(piece), tokenizer.encode(melody_score(piece))
                if len(melody) > max_memory_length or len(seq) == 0:
                    skipped += 1
                    continue
                rows["ids"].append(seq.ids.tolist())
                rows["bar_ids"].append(seq.bar_ids.tolist())
                rows["memory"].append(melody.ids.tolist())
                rows["memory_bars"].append(melody.bar_ids.tolist())
                rows["style_id"].append(int(style_id))
                rows["n_tokens"].append(len(seq))
                rows["piece_id"].append(piece_id)
            self.splits[split] = datasets.Dataset.from_dict(rows)
            self.skipped[split] = skipped
        log.info("harmonization: %s four-part pieces; skipped (not four parts, or a melody over %d tokens): %s",
                 {s: len(d) for s, d in self.splits.items()}, max_memory_length, self.skipped)
        if len(self.splits.get("train", [])) == 0:
            raise ValueError("harmonization: no four-part piece in the training split (data=bach_chorales has them)")


class WithMemory(Dataset):
    """Adds to each example the melody tokens of the bars it covers (`memory`) and their bars (`memory_bars`)."""

    def __init__(self, base: Dataset, split) -> None:
        self.base = base
        self.memory, self.memory_bars = split["memory"], split["memory_bars"]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        example = self.base[key]
        index = key[0] if isinstance(key, tuple) else self.base.windows[key][0]
        first, last = example["bar_span"]
        ids, bars = np.asarray(self.memory[index]), np.asarray(self.memory_bars[index])
        inside = (bars >= first) & (bars <= last)
        example["memory"] = ids[inside]
        example["memory_bars"] = bars[inside] - first  # numbered as the crop's bar_ids (its first bar is 0)
        return example


class _MemoryCollate(_Collate):
    def __call__(self, examples):
        batch = collate(examples, self.pad_id)
        longest = max(1, max(len(e["memory"]) for e in examples))
        memory = torch.zeros(len(examples), longest, dtype=torch.long)
        memory_bars = torch.zeros(len(examples), longest, dtype=torch.long)
        for row, e in enumerate(examples):
            memory[row, : len(e["memory"])] = torch.as_tensor(e["memory"], dtype=torch.long)
            memory_bars[row, : len(e["memory"])] = torch.as_tensor(e["memory_bars"], dtype=torch.long)
        batch["memory"], batch["memory_bars"] = memory, memory_bars
        return batch


class HarmonizationDataModule(MusicDataModule):
    """The data module of the harmonization task: crops of the four-part pieces, each with its melody."""

    def __init__(self, prepared, tokenizer, max_memory_length: int = 1024, **kwargs: Any) -> None:
        if tuple(kwargs.get("transpose_range", (0, 0))) != (0, 0):
            raise ValueError("harmonization trains without transposition (data.transpose=[0, 0]): the melody would not follow")
        super().__init__(HarmonizationSplits(prepared, tokenizer, max_memory_length), tokenizer, **kwargs)

    def wrap(self, dataset: Dataset, split: str) -> Dataset:
        return WithMemory(dataset, self.prepared.splits[split])

    def _loader_options(self) -> dict[str, Any]:
        options = super()._loader_options()
        options["collate_fn"] = _MemoryCollate(self.tokenizer.pad_id)
        return options
