"""A seeded generator of malformed and hostile MIDI files, for the fuzz test and benchmarks/fuzz_inputs.py.

Every kind is a function `(rng, seeds) -> bytes`: raw bytes written by hand (broken headers, lying chunk
lengths, endless delta times, running status abuse, meta and sysex events whose lengths run past the file)
or mutations of the real small MIDI files under tests/evaluation/data. `write_corpus` writes `per_kind` files
of every kind into one sub-folder per kind, so a `data=midi_folder` run reports its counts by kind (style).
The same seed gives the same bytes.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Callable

SEED_DIR = Path(__file__).resolve().parent / "evaluation" / "data"


def vlq(value: int) -> bytes:
    """A MIDI variable-length quantity (values up to 2**28 - 1 are legal; larger ones are written anyway)."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def chunk(kind: bytes, data: bytes, length: int | None = None) -> bytes:
    return kind + struct.pack(">I", len(data) if length is None else length & 0xFFFFFFFF) + data


def header(fmt: int = 1, tracks: int = 1, division: int = 480, length: int = 6) -> bytes:
    return chunk(b"MThd", struct.pack(">HHH", fmt & 0xFFFF, tracks & 0xFFFF, division & 0xFFFF), length)


def note(delta: int, pitch: int, length: int, channel: int = 0, velocity: int = 80) -> bytes:
    return vlq(delta) + bytes([0x90 | channel, pitch & 0x7F, velocity & 0x7F]) + vlq(length) + bytes([0x80 | channel, pitch & 0x7F, 0])


END = b"\x00\xff\x2f\x00"


def tempo(delta: int, micros: int) -> bytes:
    return vlq(delta) + b"\xff\x51\x03" + (micros & 0xFFFFFF).to_bytes(3, "big")


def time_signature(delta: int, numerator: int, denominator_power: int) -> bytes:
    return vlq(delta) + b"\xff\x58\x04" + bytes([numerator & 0xFF, denominator_power & 0xFF, 24, 8])


def melody(rng: random.Random, n: int, step: int = 240) -> bytes:
    return b"".join(note(0 if i == 0 else rng.choice([0, step]), rng.randrange(36, 96), step) for i in range(n))


def midi(*tracks: bytes, fmt: int = 1, division: int = 480) -> bytes:
    return header(fmt, len(tracks), division) + b"".join(chunk(b"MTrk", t) for t in tracks)


def _seed(rng: random.Random, seeds: list[bytes]) -> bytes:
    return rng.choice(seeds)


# --- kinds ---------------------------------------------------------------------------------------------------


def empty(rng, seeds):
    return rng.choice([b"", b"MThd", b"MThd\x00\x00\x00\x06", header(tracks=0), header(tracks=1)])


def random_bytes(rng, seeds):
    data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 4096)))
    return rng.choice([b"", b"MThd", b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk"]) + data


def wrong_header(rng, seeds):
    body = chunk(b"MTrk", melody(rng, 8) + END)
    return rng.choice(
        [
            b"RIFF" + body,
            header(length=rng.choice([0, 2, 5, 7, 0xFFFFFFFF])) + body,
            header(fmt=rng.choice([3, 7, 0xFFFF])) + body,
            header(tracks=rng.choice([0, 2, 0xFFFF])) + body,
            header(division=rng.choice([0, 0x8000, 0xE728, 0xFFFF, 1])) + body,
            b"mthd" + header()[4:] + body,
        ]
    )


def truncated(rng, seeds):
    data = _seed(rng, seeds)
    return data[: rng.randrange(0, len(data))]


def absurd_tempo(rng, seeds):
    micros = rng.choice([0, 1, 2, 0xFFFFFF, 0x7FFFFF])
    changes = b"".join(tempo(rng.choice([0, 1, 480]), rng.choice([0, 1, 0xFFFFFF])) for _ in range(rng.randrange(0, 200)))
    return midi(tempo(0, micros) + changes + melody(rng, 16) + END)


def absurd_time_signature(rng, seeds):
    events = b"".join(
        time_signature(rng.choice([0, 1, 7]), rng.choice([0, 1, 255, 13]), rng.choice([0, 1, 7, 31, 64, 255]))
        for _ in range(rng.randrange(1, 50))
    )
    return midi(events + melody(rng, 16) + END)


def zero_length_notes(rng, seeds):
    body = b"".join(note(rng.choice([0, 0, 120]), rng.randrange(128), 0) for _ in range(rng.randrange(1, 500)))
    return midi(body + END)


def orphan_note_offs(rng, seeds):
    offs = b"".join(vlq(rng.choice([0, 60])) + bytes([0x80 | rng.randrange(16), rng.randrange(128), 0]) for _ in range(200))
    ons = b"".join(vlq(10) + bytes([0x90, rng.randrange(128), 64]) for _ in range(rng.randrange(0, 50)))  # never released
    return midi(offs + ons + END)


def many_tracks(rng, seeds):
    count = rng.randrange(1000, 5000)
    tracks = [note(rng.randrange(0, 100), rng.randrange(40, 90), rng.choice([0, 60]), channel=i % 16) + END for i in range(count)]
    return midi(*tracks)


def huge_delta_times(rng, seeds):
    body = b"".join(note(rng.choice([0x0FFFFFFF, 0x0FFFFFF0, 2**20]), rng.randrange(40, 90), rng.choice([1, 0x0FFFFFFF])) for _ in range(rng.randrange(2, 40)))
    if rng.random() < 0.3:  # a variable-length quantity that never ends
        body += b"\xff" * rng.randrange(5, 64)
    return midi(body + END)


def running_status_abuse(rng, seeds):
    parts = [vlq(0) + bytes([rng.randrange(128), rng.randrange(128)])]  # data bytes before any status
    parts += [vlq(rng.randrange(4)) + bytes([rng.randrange(128), rng.randrange(128)]) for _ in range(rng.randrange(10, 300))]
    parts.insert(rng.randrange(len(parts)), b"\x00\x90\x3c\x40")
    parts.insert(rng.randrange(len(parts)), b"\x00\xff\x01\x03abc")  # running status across a meta event
    parts.insert(rng.randrange(len(parts)), b"\x00\xf0\x02\x7e\xf7")  # and across a sysex
    return midi(b"".join(parts) + END)


def huge_meta_lengths(rng, seeds):
    meta_type = rng.choice([0x01, 0x03, 0x51, 0x58, 0x59, 0x7F, 0x2F, 0x05])
    bad = b"\x00\xff" + bytes([meta_type]) + vlq(rng.choice([0x0FFFFFFF, 2**21, 70000])) + b"x" * rng.randrange(0, 64)
    return midi(melody(rng, 4) + bad + melody(rng, 4) + END)


def sysex_abuse(rng, seeds):
    body = melody(rng, 4) + b"\x00\xf0" + vlq(rng.choice([0x0FFFFFFF, 5, 0])) + b"\x7e\x7f" + rng.choice([b"", b"\xf7"])
    body += b"\x00\xf7" + vlq(rng.randrange(0, 5000)) + melody(rng, 4)
    return midi(body + END)


def lying_chunk_lengths(rng, seeds):
    track = melody(rng, 20) + END
    length = rng.choice([0, 1, len(track) // 2, len(track) + 1, len(track) * 100, 0xFFFFFFFF])
    extra = chunk(b"MTrk", melody(rng, 3) + END) if rng.random() < 0.5 else b""
    return header(tracks=2) + chunk(b"MTrk", track, length) + extra


def unknown_chunks(rng, seeds):
    junk = chunk(rng.choice([b"XFIH", b"\x00\x00\x00\x00", b"MTr\x00", b"RIFF"]), bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300))))
    track = chunk(b"MTrk", melody(rng, 12) + END)
    return header(tracks=1) + rng.choice([junk + track, track + junk, junk + junk + track])


def no_end_of_track(rng, seeds):
    return midi(melody(rng, rng.randrange(1, 50)) + bytes([0x90, 60, 64]) * rng.randrange(0, 3))


def stacked_notes(rng, seeds):
    """Thousands of notes on one tick, the same pitch on and on again: a small file, a heavy piece."""
    pitch = rng.randrange(128)
    body = b"".join(vlq(0) + bytes([0x90 | rng.randrange(16), pitch if rng.random() < 0.5 else rng.randrange(128), 100]) for _ in range(rng.randrange(1000, 8000)))
    return midi(body + vlq(rng.choice([1, 0x0FFFFFFF])) + bytes([0xB0, 123, 0]) + END)


def bad_channel_data(rng, seeds):
    """Status bytes where data bytes belong, and every channel message type with random bytes."""
    events = b"".join(vlq(rng.randrange(10)) + bytes([rng.randrange(0x80, 0xF0), rng.getrandbits(8), rng.getrandbits(8)]) for _ in range(rng.randrange(10, 400)))
    return midi(events + END)


def smpte_division(rng, seeds):
    return midi(melody(rng, 16) + END, division=rng.choice([0xE728, 0xE250, 0xE719, 0x8000, 0xFF01]))


def format_abuse(rng, seeds):
    tracks = [melody(rng, 8) + END for _ in range(rng.randrange(2, 6))]
    return header(fmt=0, tracks=len(tracks)) + b"".join(chunk(b"MTrk", t) for t in tracks)


def bit_flips(rng, seeds):
    data = bytearray(_seed(rng, seeds))
    for _ in range(rng.randrange(1, 40)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def byte_edits(rng, seeds):
    data = bytearray(_seed(rng, seeds))
    for _ in range(rng.randrange(1, 20)):
        at = rng.randrange(len(data) + 1)
        action = rng.randrange(3)
        if action == 0:
            data[at:at] = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 16)))
        elif action == 1:
            del data[at : at + rng.randrange(1, 16)]
        else:
            data[at : at + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\x00\xff\x51\x03", b"\xf0\xff\xff\xff", b"\x00\x00\x00\x00"])
    return bytes(data)


def chunk_shuffle(rng, seeds):
    """Chunks of a real file duplicated, dropped, reordered; the header's track count left as it was."""
    data = _seed(rng, seeds)
    chunks, at = [], 14
    while at + 8 <= len(data):
        length = struct.unpack(">I", data[at + 4 : at + 8])[0]
        chunks.append(data[at : at + 8 + length])
        at += 8 + length
    picked = [rng.choice(chunks) for _ in range(rng.randrange(0, 3 * len(chunks) + 1))]
    return data[:14] + b"".join(picked)


def valid(rng, seeds):
    """Well-formed pieces (melodies with tempo and meter): every run keeps these."""
    return midi(tempo(0, 500000) + time_signature(0, 4, 2) + melody(rng, rng.randrange(16, 64)) + END)


KINDS: dict[str, Callable[[random.Random, list[bytes]], bytes]] = {
    f.__name__: f
    for f in (
        empty, random_bytes, wrong_header, truncated, absurd_tempo, absurd_time_signature, zero_length_notes,
        orphan_note_offs, many_tracks, huge_delta_times, running_status_abuse, huge_meta_lengths, sysex_abuse,
        lying_chunk_lengths, unknown_chunks, no_end_of_track, stacked_notes, bad_channel_data, smpte_division,
        format_abuse, bit_flips, byte_edits, chunk_shuffle, valid,
    )
}


def seed_files() -> list[bytes]:
    """The real small MIDI files the mutations start from."""
    return [path.read_bytes() for path in sorted(SEED_DIR.glob("*.mid"))]


def write_corpus(root: Path, per_kind: int = 45, seed: int = 0) -> dict[str, list[Path]]:
    """`per_kind` files of every kind under root/<kind>/; returns the paths by kind."""
    seeds = seed_files()
    written: dict[str, list[Path]] = {}
    for kind, make in KINDS.items():
        folder = Path(root) / kind
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"{seed}:{kind}")
        paths = []
        for i in range(per_kind):
            path = folder / f"{kind}_{i:03d}.mid"
            path.write_bytes(make(rng, seeds))
            paths.append(path)
        written[kind] = paths
    return written


# --- the fuzz run: preparation, tokenization, prompt= continuation, lyria-evaluate ------------------------------


def tiny_sampler():
    """A two-layer model on the default tokenizer (untrained: the fuzz checks the paths, not the music)."""
    import torch

    from lyria.generation.processors import GrammarMask, SpecialTokenMask
    from lyria.generation.sampler import Sampler
    from lyria.models.lm import LyriaLM
    from lyria.tokenizers import LyriaTokenizer

    tokenizer = LyriaTokenizer()
    torch.manual_seed(0)
    mixer = {"_target_": "lyria.models.mixers.AttentionMixer", "position": {"_target_": "lyria.models.positions.RotaryPosition"}}
    model = LyriaLM(tokenizer.vocab_sizes, mixer, d_model=32, n_layers=2, n_heads=2, d_ff=64, dropout=0.0, max_seq_len=64)
    return Sampler(model, tokenizer, [SpecialTokenMask(), GrammarMask()])


def _kind(path: str | Path) -> str:
    return Path(path).name.rsplit("_", 1)[0]


def fuzz_prepare(root: Path, cache: Path, num_proc: int = 2) -> dict:
    """data=midi_folder preparation (parsing, limits, tokenization) of the corpus: outcome counts by kind."""
    from lyria.data.prepare import SPLITS, prepare_data
    from lyria.data.sources import MidiFolderSource
    from lyria.tokenizers import LyriaTokenizer

    prepared = prepare_data(MidiFolderSource(str(root)), LyriaTokenizer(), cache, num_proc=num_proc, parse_timeout_s=30, tokenize_timeout_s=30)
    report = prepared.report
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        for style in prepared.splits[split]["style"]:
            counts.setdefault(style, {}).setdefault("kept", 0)
            counts[style]["kept"] += 1
    for skip in report["skipped"]:
        entry = counts.setdefault(skip["style"], {})
        key = f"skipped_{skip['stage']}"
        entry[key] = entry.get(key, 0) + 1
        assert skip["reason"], skip
    for duplicate in report["duplicates"]:
        entry = counts.setdefault(duplicate["piece_id"].split("/", 1)[0], {})
        entry["duplicates"] = entry.get("duplicates", 0) + 1
    return {"by_kind": counts, "report": report, "prepared": prepared}


def fuzz_prompts(paths: list[Path], sampler=None) -> dict:
    """Each file as `prompt=`: read_midi (isolated, bounded), then continue_piece for one short sample.

    A ValueError / FileNotFoundError is a refusal with a reason; any other exception is a crash."""
    import time
    import traceback

    from lyria.generation.pieces import continue_piece, read_midi
    from lyria.generation.sampler import Limits

    import torch

    sampler = sampler or tiny_sampler()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads on shared cores
    counts: dict[str, dict[str, int]] = {}
    crashes, slowest = [], (0.0, "")
    for path in paths:
        started = time.perf_counter()
        try:
            score = read_midi(path, "prompt")
        except (ValueError, FileNotFoundError) as err:
            outcome = "refused_reading"
            assert str(err) and "\n" not in str(err), (path, str(err))
        else:
            try:
                pieces = continue_piece(sampler, score, n=1, limits=Limits(max_new_tokens=4))
                outcome = "continued" if pieces[0].score is not None else "sample_failed"
            except ValueError as err:
                outcome = "refused_continuing"
                assert str(err), path
            except Exception as err:  # noqa: BLE001 - what the fuzz looks for
                outcome = "crashed"
                crashes.append({"file": str(path), "error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc(limit=3)})
        elapsed = time.perf_counter() - started
        slowest = max(slowest, (elapsed, str(path)))
        entry = counts.setdefault(_kind(path), {})
        entry[outcome] = entry.get(outcome, 0) + 1
    torch.set_num_threads(threads)
    return {"by_kind": counts, "crashes": crashes, "slowest_s": round(slowest[0], 3), "slowest_file": slowest[1]}


def fuzz_evaluate_folder(folder: Path, num_proc: int = 2) -> dict:
    """The folder as lyria-evaluate's `generated=` (read through load_generated): counts by kind."""
    from lyria.evaluation.sets import load_generated

    generated, _, _ = load_generated(folder, num_proc=num_proc, timeout_s=30)
    counts: dict[str, dict[str, int]] = {}
    for name in generated.names:
        entry = counts.setdefault(_kind(name), {})
        entry["read"] = entry.get("read", 0) + 1
    for skip in generated.skipped:
        assert skip["reason"], skip
        entry = counts.setdefault(_kind(skip["file"]), {})
        entry["skipped"] = entry.get("skipped", 0) + 1
    return {"by_kind": counts, "pieces": generated}


def fuzz_evaluate(folder: Path, data_root: Path, cache: Path, output_dir: Path, num_proc: int = 2) -> dict:
    """lyria-evaluate end to end: `generated=folder` against the test split of `data_root` (data=midi_folder),
    eval=fast without baseline or plots; returns metrics.json."""
    from hydra import compose, initialize_config_dir

    from lyria.cli import CONF_DIR
    from lyria.evaluation.evaluate import evaluate

    overrides = [
        f"generated={folder}", "data=midi_folder", f"data.path={data_root}", f"data.num_proc={num_proc}",
        "data.parse_timeout_s=30", "data.tokenize_timeout_s=30", "training_data=composed",
        f"paths.cache_dir={cache}", f"output_dir={output_dir}", f"eval.num_proc={num_proc}", "eval.parse_timeout_s=30",
        "eval=fast", "eval.baseline=false", "eval.plots=false", "quiet=true", "assets_dir=null",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=overrides)
    return evaluate(cfg)
