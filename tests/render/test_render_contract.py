"""The renderer contract: every registered format writes a file; names are checked; failures are per piece and format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
from omegaconf import OmegaConf
from render_support import score_of, skip_or_fail, track_of
from symusic import Score

from lyria.config import ConfigError, RenderSchema
from lyria.render import AUDIO_BACKENDS, FORMATS, Renderer, build_renderers, render, render_batch
from lyria.render.base import Registry


def settings(**overrides):
    base = OmegaConf.structured(RenderSchema)
    base.sample_rate = 16000
    return OmegaConf.merge(base, overrides)


@pytest.mark.parametrize("name", FORMATS.names())
def test_every_registered_format_writes_a_readable_file(name, duet, tmp_path):
    renderers = build_renderers(settings(formats=[name]))
    result = render(duet, tmp_path / "piece", renderers)
    assert result.failures == {}
    path = result.files[name]
    assert path == tmp_path / f"piece{renderers[name].suffix}" and path.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


@pytest.mark.parametrize("backend", AUDIO_BACKENDS.names())
def test_every_audio_backend_writes_a_normalised_wav(backend, duet, tmp_path):
    try:
        renderers = build_renderers(settings(formats=["wav"], backend=backend))
    except ConfigError as err:  # a system backend that is not installed says so, naming what to install
        assert "install_system_deps.sh" in str(err)
        skip_or_fail(str(err))
    path = render(duet, tmp_path / "piece", renderers).files["wav"]
    wave, rate = soundfile.read(str(path))
    assert rate == 16000 and np.abs(wave).max() == pytest.approx(10 ** (-1 / 20), abs=1e-3)
    seconds = 12 * 60 / 66 + 4 * 60 / 50  # twelve beats at 66 bpm, four at 50
    assert seconds < len(wave) / rate < seconds + 3  # the last notes' release and the reverb or FluidSynth's tail


def test_a_piece_longer_than_max_seconds_gets_no_audio_or_sheet_music(tmp_path):
    stray = score_of(track_of([(0, 1, 60), (4 * 3600, 1, 62)]))  # a note two hours in, at 120 bpm
    result = render(stray, tmp_path / "stray", build_renderers(settings(max_seconds=600)))
    assert sorted(result.files) == ["midi", "png"]
    for name in ("musicxml", "wav"):
        assert result.failures[name] == "ValueError: the piece lasts 7200 s, longer than render.max_seconds=600"


def test_unknown_and_repeated_formats_are_named():
    with pytest.raises(ConfigError, match=r"render.formats\[1\]: unknown choice 'wave'; did you mean 'wav'\?"):
        build_renderers(settings(formats=["midi", "wave"]))
    with pytest.raises(ConfigError, match="render.backend: unknown choice 'fluid'"):
        build_renderers(settings(formats=["wav"], backend="fluid"))
    with pytest.raises(ConfigError, match="lists a format twice"):
        build_renderers(settings(formats=["png", "png"]))


class Fussy(Renderer):
    """Writes a text file, but refuses scores with more than one track."""

    suffix = ".txt"
    batches = 0

    def write(self, score: Score, path: Path) -> None:
        if len(score.tracks) > 1:
            raise ValueError("more than one track")
        path.write_text("ok")

    def write_batch(self, scores, paths) -> None:
        type(self).batches += 1
        super().write_batch(scores, paths)


def test_a_failure_costs_only_its_piece_and_format(duet, tmp_path):
    solo = Score(duet.ticks_per_quarter)
    solo.tracks.append(duet.tracks[0].copy())
    renderers = {"midi": build_renderers(settings(formats=["midi"]))["midi"], "fussy": Fussy()}
    results = render_batch([solo, duet, solo], [tmp_path / "a", tmp_path / "b", tmp_path / "c"], renderers)
    assert [sorted(r.files) for r in results] == [["fussy", "midi"], ["midi"], ["fussy", "midi"]]
    assert results[1].failures == {"fussy": "ValueError: more than one track"}
    assert Fussy.batches == 1  # one batch call, then piece by piece to find the culprit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mid", "a.txt", "b.mid", "c.mid", "c.txt"]


def test_a_registry_refuses_a_name_twice():
    registry = Registry("things")
    registry.register("one")(Fussy)
    with pytest.raises(ValueError, match="'one' is registered twice"):
        registry.register("one")(Fussy)
