"""Piano rolls: a colour per track, bar lines where the score's meters put them, pitch names up the side."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.image import imread
from render_support import score_of, track_of

from lyria.render.pianoroll import PianoRollRenderer, pitch_name


def test_a_colour_per_track_and_a_legend_naming_them(duet):
    axes = PianoRollRenderer().figure(duet).axes[0]
    rolls = [c for c in axes.collections if isinstance(c, PolyCollection)]
    assert [len(c.get_paths()) for c in rolls] == [len(t.notes) for t in duet.tracks]
    colours = [tuple(np.round(c.get_facecolors()[0][:3], 3)) for c in rolls]
    assert len(set(colours)) == 2
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["Melody (program 0)", "Bass (program 32)"]


def test_bar_lines_follow_the_time_signatures(duet):
    axes = PianoRollRenderer().figure(duet).axes[0]
    lines = next(c for c in axes.collections if isinstance(c, LineCollection))
    positions = sorted(segment[0][0] for segment in lines.get_segments())
    assert positions == [0, 3, 6, 9, 12, 14]  # four bars of 3/4, then 2/4
    assert [label.get_text() for label in axes.get_xticklabels()] == ["1", "2", "3", "4", "5", "6"]
    assert axes.get_xlabel() == "bar"


def test_pitch_axis_is_labelled_with_note_names(duet):
    axes = PianoRollRenderer().figure(duet).axes[0]
    assert axes.get_ylabel() == "pitch"
    labels = {tick.get_text() for tick in axes.get_yticklabels()}
    assert {"C3", "C4", "C5"} <= labels and all(label[-1].isdigit() for label in labels)
    assert (pitch_name(60), pitch_name(69), pitch_name(21)) == ("C4", "A4", "A0")


def test_png_has_the_asked_size_and_shows_both_colours(duet, tmp_path):
    path = tmp_path / "roll.png"
    renderer = PianoRollRenderer(dpi=50, height_inches=3.0)
    renderer.write(duet, path)
    image = imread(str(path))
    assert image.shape[0] == 150 and image.shape[1] == 300  # six bars at 0.6 inch are under the 6 inch minimum
    pixels = image[..., :3].reshape(-1, 3)
    rolls = [c for c in renderer.figure(duet).axes[0].collections if isinstance(c, PolyCollection)]
    for roll in rolls:  # each track's colour is on the page, drawn translucent over white
        *colour, alpha = roll.get_facecolors()[0]
        on_white = alpha * np.array(colour) + (1 - alpha)
        assert (np.abs(pixels - on_white).max(1) < 0.02).sum() > 100


def test_an_empty_score_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="no notes to draw"):
        PianoRollRenderer().figure(score_of(track_of([])))
