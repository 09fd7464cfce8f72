"""Library entry points: new pieces, continuations of a prompt and infilled bars, as symusic Scores.

No CLI or Hydra state: a caller (lyria-generate, a web server) loads a model once, builds a `Sampler`,
and calls these per request. Sample `i` of a request seeded `seed` is the same music whatever the
batch size. What the tokens do not hold is carried from the input: a continuation keeps the prompt's
own notes, tempo map, time signatures, key signatures, track names and programs; an infilled piece
keeps every note outside the span exactly as it was. `style=` asks for a style the checkpoint knows
(`style_conditioning`), and `cfg_scale=` guides towards it (classifier-free guidance).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from symusic import Note, Score, Track

import torch

from lyria.config import ConfigError
from lyria.data.convert import drop_impossible_events
from lyria.data.isolated import isolated_map
from lyria.data.limits import InputLimits
from lyria.generation.sampler import Generated, Guidance, Limits, Sampler, sample_seed
from lyria.tokenizers.infilling import infilling_layout


@dataclass
class Piece:
    """One sample: the sampler's output, the Score made of it (None when it could not decode), and why."""

    index: int
    result: Generated
    score: Score | None
    repaired: str | None = None
    error: str | None = None
    style: str | None = None  # the style asked for (None: no style)
    metrics: dict | None = None  # task measures (harmonization: does the soprano equal the melody)


def _read_bounded(job: tuple[str, InputLimits]) -> Score:
    """Worker (isolated process): the file's size, then its notes and length, within the limits."""
    path, limits = job
    limits.check_file(path)
    score = drop_impossible_events(Score(path))
    limits.check_score(score)
    return score


def read_midi(path: str | Path, what: str = "prompt", limits: InputLimits | None = None, timeout_s: float = 60.0) -> Score:
    """A MIDI file with notes within `limits` (default `InputLimits(where="input_limits")`), or a one-line
    ValueError / FileNotFoundError naming the setting and the file.

    The file is parsed in a separate process with a time limit, so a file that crashes or hangs the parser
    is an error like any other."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}={str(path)!r}: no such MIDI file")
    limits = limits or InputLimits(where="input_limits")
    (outcome,) = isolated_map(_read_bounded, [(str(path), limits)], timeout_s=timeout_s, desc=f"reading {what}")
    if not outcome.ok:
        problem = "is over a limit" if outcome.error == "LimitExceeded" else "is not a readable MIDI file"
        raise ValueError(f"{what}={str(path)!r} {problem}: {outcome.reason}")
    score = outcome.value
    if score.note_num() == 0:
        raise ValueError(f"{what}={str(path)!r} has no notes")
    return score


def decode_or_repair(tokenizer, ids: np.ndarray) -> tuple[Score, str | None]:
    """Decodes a sample; one that fails or holds no note is repaired by dropping the steps the tokenizer's
    grammar forbids. Returns (score, what was repaired or None); raises ValueError with both reasons."""
    try:
        score = tokenizer.decode(ids)
        problem = None if score.note_num() else "decoded to a score with no notes"
    except Exception as err:  # MidiTok's decoders raise many types on illegal sequences
        score, problem = None, f"{type(err).__name__}: {err}"
    if problem is None:
        return score, None
    repaired, dropped = tokenizer.grammar.repair(ids)
    try:
        score = tokenizer.decode(repaired)
    except Exception as err:
        raise ValueError(f"{problem}; after dropping {dropped} illegal steps: {type(err).__name__}: {err}") from err
    if score.note_num() == 0:
        raise ValueError(f"{problem}; still no notes after dropping {dropped} illegal steps")
    return score, f"{problem}; repaired by dropping {dropped} illegal steps"


def tempo_seconds(score: Score) -> Callable[[float], float]:
    """Quarter notes -> seconds through the score's tempo map (120 bpm before its first tempo)."""
    tpq = score.ticks_per_quarter
    changes = sorted((t.time / tpq, t.qpm) for t in score.tempos)
    if not changes or changes[0][0] > 0:
        changes.insert(0, (0.0, 120.0))
    starts = np.array([q for q, _ in changes])
    per_quarter = np.array([60.0 / qpm for _, qpm in changes])
    elapsed = np.concatenate([[0.0], np.cumsum(np.diff(starts) * per_quarter[:-1])])

    def seconds(quarters: float) -> float:
        i = int(np.searchsorted(starts, quarters, side="right")) - 1
        return float(elapsed[i] + (quarters - starts[i]) * per_quarter[i])

    return seconds


@dataclass
class StyleConditioning:
    """What a request for a style becomes: the prompt's head (BOS, and the style token for the style-token
    scheme), one row of conditioning per sample, and the guidance towards the style (or None)."""

    head: np.ndarray
    cond: dict | None
    guidance: Guidance | None
    slot: int | None


def style_conditioning(sampler: Sampler, style: str | None, cfg_scale: float | None, n: int) -> StyleConditioning:
    """The head, conditioning and guidance of `n` samples of `style` (None: no style) guided by `cfg_scale`
    (None: no guidance). A style the checkpoint does not know, or a style for an unconditional model, is a
    ValueError naming what it knows."""
    tok, model = sampler.tokenizer, sampler.model
    bos = tok.step_ids(tok.bos_id)[None]
    if style is None and cfg_scale is None:
        if not model.conditional:
            return StyleConditioning(bos, None, None, None)
    elif not model.conditional:
        raise ValueError(
            f"style={style!r} cfg_scale={cfg_scale}: this checkpoint's model is unconditional (model.conditioning=none, "
            "model.style_output=false); train with a conditioning scheme to ask for a style"
        )
    if style is not None and style not in tok.style_slots:
        raise ValueError(f"style={style!r} is not a style this checkpoint knows; it knows {tok.styles}")
    if cfg_scale is not None and style is None:
        raise ValueError(f"cfg_scale={cfg_scale} guides towards a style: give style=NAME (one of {tok.styles})")
    null = model.null_style
    slot = null if style is None else tok.style_slot(style)

    def head(slot: int) -> np.ndarray:
        return np.concatenate([bos, tok.step_ids(tok.style_token_id(slot))[None]]) if model.uses_style_token else bos

    cond = {"style": torch.full((n,), slot, dtype=torch.long)}
    guidance = None if cfg_scale is None else Guidance(float(cfg_scale), head(null), {"style": torch.tensor([null])})
    return StyleConditioning(head(slot), cond, guidance, None if style is None else slot)


def _sample(
    sampler: Sampler, prompt: np.ndarray, n: int, seed: int, limits: Limits, batch_size: int, cond: dict | None, progress, **options
) -> list[Generated]:
    """Samples 0..n-1 in batches; sample i draws from sample_seed(seed, i), so batching does not change it."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    results: list[Generated] = []
    for start in range(0, n, batch_size):
        seeds = [sample_seed(seed, i) for i in range(start, min(start + batch_size, n))]
        rows = slice(start, start + len(seeds))
        batch_cond = None if cond is None else {key: value[rows] for key, value in cond.items()}
        results += sampler.generate(prompt, seeds, limits, cond=batch_cond, **options)
        if progress is not None:
            progress(len(seeds))
    return results


def _pieces(results: list[Generated], build: Callable[[Generated], tuple[Score, str | None]]) -> list[Piece]:
    pieces = []
    for index, result in enumerate(results):
        try:
            score, repaired = build(result)
            pieces.append(Piece(index, result, score, repaired))
        except ValueError as err:  # counted and reported by the caller, never dropped silently
            pieces.append(Piece(index, result, None, error=str(err)))
    return pieces


def new_pieces(
    sampler: Sampler,
    n: int,
    seed: int = 0,
    limits: Limits | None = None,
    batch_size: int = 8,
    cond: dict | None = None,
    progress=None,
    style: str | None = None,
    cfg_scale: float | None = None,
) -> list[Piece]:
    """`n` pieces from BOS (and the style's token for the style-token scheme)."""
    tok = sampler.tokenizer
    request = style_conditioning(sampler, style, cfg_scale, n)
    cond = request.cond if cond is None else cond
    results = _sample(sampler, request.head, n, seed, limits or Limits(), batch_size, cond, progress, guidance=request.guidance)
    return _pieces(results, lambda result: decode_or_repair(tok, result.ids))


def _quarter_notes(score: Score) -> dict[tuple[int, bool], dict[str, np.ndarray]]:
    """Notes of a decoded score in quarter notes, by (program, is_drum)."""
    tracks: dict[tuple[int, bool], list] = {}
    for track in score.to("quarter").tracks:
        tracks.setdefault((track.program, track.is_drum), []).append(track.notes.numpy())
    return {key: {f: np.concatenate([p[f] for p in parts]) for f in parts[0]} for key, parts in tracks.items()}


def _place_notes(target: Score, notes: dict[tuple[int, bool], dict[str, np.ndarray]], span: tuple[float, float], tokenizer) -> None:
    """Adds decoded notes with onsets in `span` (quarters; durations cut at its end) to the target's tracks.

    With programs in the tokens a note joins the first track of its program; merged tracks give one stream,
    and each note joins the pitched track whose notes lie nearest in pitch (a track of its own if none).
    """
    tpq = target.ticks_per_quarter
    pitched = [t for t in target.tracks if not t.is_drum and t.note_num()]
    centres = np.array([np.mean(t.notes.numpy()["pitch"]) for t in pitched])
    for (program, is_drum), arrays in notes.items():
        keep = (arrays["time"] >= span[0]) & (arrays["time"] < span[1])
        if not keep.any():
            continue
        time = arrays["time"][keep]
        end = np.minimum(time + arrays["duration"][keep], span[1])
        ticks = np.round(time * tpq).astype(np.int32)
        lengths = np.maximum(np.round(end * tpq).astype(np.int32) - ticks, 1)
        if tokenizer.tok.config.use_programs:
            home = next((t for t in target.tracks if t.program == program and t.is_drum == is_drum), None)
            if home is None:
                home = Track(f"program {program}", program, is_drum)
                target.tracks.append(home)
            owners = [home] * len(ticks)
        elif pitched:
            nearest = np.abs(arrays["pitch"][keep][:, None] - centres[None, :]).argmin(1)
            owners = [pitched[i] for i in nearest]
        else:
            target.tracks.append(Track("generated", program, is_drum))
            owners = [target.tracks[-1]] * len(ticks)
        for owner, tick, length, pitch, velocity in zip(owners, ticks, lengths, arrays["pitch"][keep], arrays["velocity"][keep]):
            owner.notes.append(Note(int(tick), int(length), int(pitch), int(velocity)))
    for track in target.tracks:
        track.notes.sort()


def _modelled(track: Track, tokenizer) -> bool:
    """Whether the tokens hold this track's notes (drums need programs in the tokens)."""
    return tokenizer.tok.config.use_programs or not track.is_drum


def _without_notes(score: Score, start_tick: int, end_tick: float, tokenizer, every_track: bool = False) -> Score:
    """A copy of `score` whose modelled tracks (or all, `every_track`) lose the notes with onsets in [start_tick, end_tick)."""
    out = score.copy()
    for track in out.tracks:
        if not (every_track or _modelled(track, tokenizer)) or not track.note_num():
            continue
        arrays = track.notes.numpy()
        keep = (arrays["time"] < start_tick) | (arrays["time"] >= end_tick)
        track.notes = Note.from_numpy(**{k: v[keep] for k, v in arrays.items()}, ttype="tick")
    return out


def _cut_events(score: Score, end_tick: int) -> None:
    """Drops tempo, time-signature and key changes at or after `end_tick`: the generated part follows them."""
    for name in ("tempos", "time_signatures", "key_signatures"):
        events = getattr(score, name)
        kept = [e for e in events if e.time < end_tick]
        events.clear()
        events.extend(kept)


def encode_prompt(tokenizer, score: Score, prompt_bars: int | None, head: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """`head` (default BOS) and the prompt's tokens (its first `prompt_bars` bars), and where the continuation
    starts (quarters)."""
    seq = tokenizer.encode(score)
    ids, bars = seq.ids, seq.bar_ids
    if prompt_bars is not None:
        if prompt_bars < 1:
            raise ConfigError(f"prompt_bars must be >= 1, got {prompt_bars}")
        ids = ids[bars < prompt_bars]
    head = tokenizer.step_ids(tokenizer.bos_id)[None] if head is None else head
    prompt = np.concatenate([head, ids], axis=0)
    tracker = tokenizer.new_bar_tracker()
    tracker.run(prompt)
    if prompt_bars is not None and int(bars.max()) >= prompt_bars:
        start = tracker.bar_start(prompt_bars) / tracker.tables.ticks_per_quarter
    else:
        start = tracker.quarters
    return prompt, start


def continue_piece(
    sampler: Sampler,
    prompt: Score,
    n: int,
    seed: int = 0,
    limits: Limits | None = None,
    prompt_bars: int | None = None,
    batch_size: int = 8,
    cond: dict | None = None,
    progress=None,
    style: str | None = None,
    cfg_scale: float | None = None,
) -> list[Piece]:
    """`n` continuations of `prompt` (its first `prompt_bars` bars when given; a prompt longer than the
    context keeps its opening and its end in view). Output: the prompt's own notes and events, then the
    generated notes from where the prompt ends (the start of bar `prompt_bars`, or its last event) in its
    tracks; `limits.max_bars` and `max_seconds` count the prompt too."""
    tok = sampler.tokenizer
    request = style_conditioning(sampler, style, cfg_scale, n)
    cond = request.cond if cond is None else cond
    ids, start = encode_prompt(tok, prompt, prompt_bars, request.head)
    limits = limits or Limits()
    if limits.seconds_at is None:
        limits = Limits(limits.max_new_tokens, limits.max_bars, limits.max_seconds, tempo_seconds(prompt))
    bars_in_prompt = int(tok.bar_ids(ids).max()) + 1
    if limits.max_bars is not None and bars_in_prompt >= limits.max_bars:
        raise ConfigError(f"max_bars={limits.max_bars} leaves no room after the prompt's {bars_in_prompt} bars; raise it")
    prompt_notes = Counter()
    try:
        for key, arrays in _quarter_notes(tok.decode(ids)).items():
            prompt_notes.update(zip(arrays["time"].tolist(), arrays["pitch"].tolist(), [key] * len(arrays["time"])))
    except ValueError:
        pass  # a prompt with no musical token decodes to nothing: every decoded note is new
    start_tick = round(start * prompt.ticks_per_quarter)

    def build(result: Generated) -> tuple[Score, str | None]:
        decoded, repaired = decode_or_repair(tok, result.ids)
        out = _without_notes(prompt, start_tick, float("inf"), tok, every_track=True)  # nothing after the prompt's end
        _cut_events(out, start_tick)
        new, seen = {}, Counter(prompt_notes)
        for key, arrays in _quarter_notes(decoded).items():
            fresh = np.ones(len(arrays["time"]), dtype=bool)
            for i, note in enumerate(zip(arrays["time"].tolist(), arrays["pitch"].tolist(), [key] * len(arrays["time"]))):
                if seen[note]:
                    seen[note] -= 1
                    fresh[i] = False
            new[key] = {f: v[fresh] for f, v in arrays.items()}
        _place_notes(out, new, (start, float("inf")), tok)  # the prompt's bars stay the prompt's
        _carry_time_signatures(out, decoded, start)
        return out, repaired

    results = _sample(sampler, ids, n, seed, limits, batch_size, cond, progress, guidance=request.guidance)
    return _pieces(results, build)


def _carry_time_signatures(out: Score, decoded: Score, start: float) -> None:
    """Meter changes the tokens hold after the prompt (tokenizers with TimeSig tokens) join the output."""
    scale = out.ticks_per_quarter / decoded.ticks_per_quarter
    for ts in decoded.time_signatures:
        if ts.time / decoded.ticks_per_quarter >= start:
            moved = ts.copy()
            moved.time = round(ts.time * scale)
            out.time_signatures.append(moved)
    out.time_signatures.sort()


def parse_bars(bars: str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """`"5-8"` (1-based, inclusive, as musicians count) -> (4, 8), the 0-based half-open span."""
    try:
        if isinstance(bars, str):
            first, _, last = bars.partition("-")
            first, last = int(first), int(last or first)
        else:
            first, last = (int(b) for b in bars)
    except (TypeError, ValueError):
        raise ConfigError(f"bars={bars!r}: expected FIRST-LAST, 1-based and inclusive, e.g. bars=5-8") from None
    if first < 1 or last < first:
        raise ConfigError(f"bars={bars!r}: expected 1 <= FIRST <= LAST, e.g. bars=5-8")
    return first - 1, last


def infill_piece(
    sampler: Sampler,
    score: Score,
    bars: str | tuple[int, int],
    n: int,
    seed: int = 0,
    limits: Limits | None = None,
    batch_size: int = 8,
    cond: dict | None = None,
    progress=None,
    style: str | None = None,
    cfg_scale: float | None = None,
) -> list[Piece]:
    """`n` versions of `score` whose bars `bars` ("5-8": 1-based, inclusive, as the tokenizer counts bars)
    are written anew to fit what comes before and after; every note outside them stays as it was."""
    tok = sampler.tokenizer
    if not tok.supports_infilling:
        raise ConfigError(
            f"infilling needs a tokenizer whose tokens mark bars (remi, cpword, octuple); {tok.name} carries time as "
            "shifts between events, so a gap's end cannot be placed"
        )
    request = style_conditioning(sampler, style, cfg_scale, n)
    cond = request.cond if cond is None else cond
    first, end = parse_bars(bars)
    seq = tok.encode(score)
    piece_bars = int(seq.bar_ids.max()) + 1
    if end > piece_bars:
        raise ConfigError(f"bars={first + 1}-{end}: the piece has {piece_bars} bars")
    head = len(request.head)
    ids = np.concatenate([request.head, seq.ids], axis=0)
    bar_ids = np.concatenate([[0] * head, seq.bar_ids])
    tracker = tok.new_bar_tracker()
    tracker.run(ids[bar_ids < end])
    ticks = tracker.tables.ticks_per_quarter
    span = (tracker.bar_start(first) / ticks, tracker.bar_start(end) / ticks)
    prompt = _infilling_prompt(tok, ids, bar_ids, (first, end), sampler.window.size(sampler.model.max_seq_len) // 2, head)
    tracker = tok.new_bar_tracker()
    tracker.run(prompt)
    # the span ends at its last bar (counted as the prompt's tracker counts), whatever else was asked
    limits = Limits((limits or Limits()).max_new_tokens, tracker.gap_bar + end - first)
    prefix = ids[bar_ids < first] if first > 0 else ids[:head]
    tpq = score.ticks_per_quarter

    def build(result: Generated) -> tuple[Score, str | None]:
        decoded, repaired = decode_or_repair(tok, np.concatenate([prefix, result.new_ids], axis=0))
        out = _without_notes(score, round(span[0] * tpq), round(span[1] * tpq), tok)
        _place_notes(out, _quarter_notes(decoded), span, tok)
        return out, repaired

    results = _sample(
        sampler, prompt, n, seed, limits, batch_size, cond, progress, end_id=tok.sep_id, pinned=len(prompt), guidance=request.guidance
    )
    return _pieces(results, build)


def harmonize(
    sampler: Sampler,
    melody: Score,
    n: int,
    seed: int = 0,
    limits: Limits | None = None,
    batch_size: int = 8,
    progress=None,
    style: str | None = None,
) -> list[Piece]:
    """`n` four-part settings of `melody` (its first pitched part, as the soprano) by a model trained with
    `experiment=chorale_harmonization`: the melody's tokens are the cross-attention memory, the decoder writes
    every voice from BOS. Each piece's `metrics` say whether its soprano equals the melody (onsets and pitches)
    and the share of the melody's notes it holds. Unless `limits.max_bars` says otherwise, a setting stops
    after the melody's last bar."""
    from lyria.data.harmonization import melody_score, soprano_match

    tok = sampler.tokenizer
    if not getattr(sampler.model.conditioner, "memory_vocab_size", 0):
        raise ValueError("melody= needs a model that reads an input sequence (experiment=chorale_harmonization: cross_attention with memory_tokens)")
    soprano = melody_score(melody)
    memory = tok.encode(soprano)
    if len(memory) == 0:
        raise ValueError("the melody encodes to no tokens")
    limits = limits or Limits()
    if limits.max_bars is None:
        limits = Limits(limits.max_new_tokens, int(memory.bar_ids.max()) + 1, limits.max_seconds, limits.seconds_at)
    request = style_conditioning(sampler, style, None, n)
    cond = {
        "memory": torch.as_tensor(memory.ids, dtype=torch.long)[None].repeat(n, 1),
        # the bar of each melody token, numbered as the setting's bars (both from the piece's start)
        "memory_bars": torch.as_tensor(memory.bar_ids, dtype=torch.long)[None].repeat(n, 1),
    }
    if request.cond is not None:
        cond["style"] = request.cond["style"]
    results = _sample(sampler, request.head, n, seed, limits, batch_size, cond, progress)
    pieces = _pieces(results, lambda result: decode_or_repair(tok, result.ids))
    for piece in pieces:
        if piece.score is not None:
            piece.metrics = soprano_match(piece.score, soprano)
    return pieces


def _infilling_prompt(
    tokenizer, ids: np.ndarray, bar_ids: np.ndarray, span: tuple[int, int], budget: int, head: int = 1
) -> np.ndarray:
    """The `head` (BOS, a style token), prefix, FILLs, suffix, SEP, in at most `budget` steps: the prefix loses whole bars from its
    start and the suffix steps from its end, so that what sits next to the gap stays in view."""
    first, end = span
    fill, sep = tokenizer.step_ids(tokenizer.fill_id), tokenizer.step_ids(tokenizer.sep_id)
    room = budget - 1 - head - (end - first)
    if room < 2:
        raise ConfigError(f"bars {first + 1}-{end} need {end - first} FILL steps, more than the context allows ({budget}); infill fewer bars")
    body, body_bars = ids[head:], bar_ids[head:]
    n_prefix, n_suffix = int((body_bars < first).sum()), int((body_bars >= end).sum())
    keep_prefix = min(n_prefix, max(room // 2, room - n_suffix))
    cut = n_prefix - keep_prefix
    while 0 < cut < n_prefix and body_bars[cut] == body_bars[cut - 1]:  # start the prefix at a bar start
        cut += 1
    suffix_end = n_prefix + int(((body_bars >= first) & (body_bars < end)).sum()) + min(n_suffix, room - (n_prefix - cut))
    kept = np.concatenate([ids[:head], body[cut:suffix_end]], axis=0)
    kept_bars = np.concatenate([[0] * head, body_bars[cut:suffix_end]])
    layout = infilling_layout(kept, kept_bars, span, fill, sep, head=head)
    return layout.ids[: layout.prompt_length]


__all__ = [
    "Piece",
    "continue_piece",
    "decode_or_repair",
    "harmonize",
    "infill_piece",
    "new_pieces",
    "parse_bars",
    "read_midi",
    "style_conditioning",
    "tempo_seconds",
]
