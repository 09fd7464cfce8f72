"""The `midi` format: writes Scores as MIDI files and checks that each file reads back with notes."""

from __future__ import annotations

import os
from pathlib import Path

from symusic import Score

from lyria.render.base import FORMATS, Renderer


def write_midi(score: Score, path: str | Path) -> int:
    """Writes `score` atomically and returns the note count read back from the file; raises if it has none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # symusic picks the format by suffix
    score.dump_midi(str(tmp))
    notes = Score(str(tmp)).note_num()
    if notes == 0:
        tmp.unlink()
        raise ValueError(f"{path.name}: the decoded score has no notes")
    os.replace(tmp, path)
    return notes


@FORMATS.register("midi")
class MidiRenderer(Renderer):
    suffix = ".mid"

    def write(self, score: Score, path: Path) -> None:
        write_midi(score, path)
