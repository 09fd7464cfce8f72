"""Rendering: Score -> MIDI, MusicXML, WAV (built-in synthesizer or FluidSynth) and piano-roll PNG files.

Importing the package registers every format and audio backend; `build_renderers` picks them by name.
"""

from lyria.render import fluidsynth, midi, musicxml, pianoroll, synth  # noqa: F401  (each registers itself)
from lyria.render.audio import AUDIO_BACKENDS
from lyria.render.base import FORMATS, Rendered, Renderer, build_renderers, render, render_batch

__all__ = ["AUDIO_BACKENDS", "FORMATS", "Rendered", "Renderer", "build_renderers", "render", "render_batch"]
