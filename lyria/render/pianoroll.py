"""The `png` format: a piano roll drawn with matplotlib's Agg canvas: a colour per track, bar lines from the
score's time signatures, pitch names up the side."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from symusic import Score

from lyria.data.notes import notes_from_score
from lyria.render.base import FORMATS, Renderer

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MAX_BAR_LABELS = 40


def pitch_name(pitch: int) -> str:
    """Scientific pitch notation, MIDI 60 = C4."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def track_colours(count: int) -> list[tuple[float, ...]]:
    """Distinct colours for `count` tracks (tab10, then tab20 for more)."""
    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


@FORMATS.register("png")
class PianoRollRenderer(Renderer):
    suffix = ".png"

    def __init__(self, dpi: int = 100, inches_per_bar: float = 0.6, max_width_inches: float = 40.0, height_inches: float = 4.0) -> None:
        if min(dpi, inches_per_bar, max_width_inches, height_inches) <= 0:
            raise ValueError(
                f"render.png: dpi={dpi}, inches_per_bar={inches_per_bar}, max_width_inches={max_width_inches} "
                f"and height_inches={height_inches} must all be > 0"
            )
        self.dpi, self.inches_per_bar = dpi, inches_per_bar
        self.max_width_inches, self.height_inches = max_width_inches, height_inches

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> PianoRollRenderer:
        return cls(**settings["png"])

    def figure(self, score: Score) -> Figure:
        """The piano roll; x is in beats (quarter notes) with ticks at bars, y is MIDI pitch."""
        piece = notes_from_score(score)
        notes = piece.notes
        if not len(notes):
            raise ValueError("the score has no notes to draw")
        end = max(float(notes["end_beats"].max()), float(piece.bar_starts_beats[-1]) if len(piece.bar_starts_beats) else 0.0)
        bars = max(len(piece.bar_starts_beats), 1)
        width = min(max(6.0, bars * self.inches_per_bar), self.max_width_inches)
        figure = Figure(figsize=(width, self.height_inches), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()

        tracks = np.unique(notes["track"])
        legend = []
        for track, colour in zip(tracks, track_colours(len(tracks))):
            played = notes[notes["track"] == track]
            left, right, pitch = played["start_beats"], played["end_beats"], played["pitch"].astype(float)
            corners = np.stack([left, pitch - 0.4, left, pitch + 0.4, right, pitch + 0.4, right, pitch - 0.4], axis=1).reshape(-1, 4, 2)
            alpha = 0.35 + 0.65 * played["velocity"] / 127.0  # louder notes are drawn stronger
            axes.add_collection(PolyCollection(corners, facecolors=[(*colour[:3], a) for a in alpha], edgecolors="none", label=f"track {track}"))
            legend.append(Patch(color=colour, label=_track_label(score, int(track), bool(played["is_drum"][0]), int(played["program"][0]))))

        axes.vlines(piece.bar_starts_beats, 0, 128, colors="0.6", linewidths=0.6, zorder=0)
        step = -(-len(piece.bar_starts_beats) // MAX_BAR_LABELS) or 1
        axes.set_xticks(piece.bar_starts_beats[::step], [str(i + 1) for i in range(0, len(piece.bar_starts_beats), step)])
        low, high = int(notes["pitch"].min()) - 2, int(notes["pitch"].max()) + 2
        labelled = [p for p in range(low, high + 1) if high - low < 16 or p % 12 == 0]
        axes.set_yticks(labelled, [pitch_name(p) for p in labelled])
        axes.set_xlim(0, end)
        axes.set_ylim(low - 0.5, high + 0.5)
        axes.set_xlabel("bar")
        axes.set_ylabel("pitch")
        axes.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")  # outside: never over notes
        return figure

    def write(self, score: Score, path: Path) -> None:
        self.figure(score).savefig(str(path), dpi=self.dpi, format="png")


def _track_label(score: Score, track: int, is_drum: bool, program: int) -> str:
    name = score.tracks[track].name
    instrument = "drums" if is_drum else f"program {program}"
    return f"{name} ({instrument})" if name else instrument
