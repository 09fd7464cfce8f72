"""Rendering: Score -> MIDI files (later MusicXML, WAV, piano-roll)."""
