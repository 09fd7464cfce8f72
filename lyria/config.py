"""Typed schemas for the composed configs, and the one place that turns a class name into a class.

Sections whose keys depend on the chosen class (a data source, a mixer, a Lightning Trainer) are
`_target_` nodes; they are checked against the class signature when built (`build`). Every class
name, from a config, a checkpoint or a tokenizer file, goes through the allow-list (`resolve_class`):
lyria's own classes and a fixed list of third-party ones. Data never becomes code.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Optional

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError


def to_plain(value: Any) -> Any:
    """An OmegaConf node as plain dicts and lists (resolved); anything else unchanged."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


class ConfigError(ValueError):
    """A config value or key that cannot work; the message names it and what would be right."""


class DisallowedTargetError(ConfigError):
    """A class name (`_target_`, `miditok_class`) outside the allow-list: refused, never imported or called."""


# Third-party classes the configs name, one by one: a prefix such as `lightning.` would admit every
# callable under it (and a checkpoint could name any of them).
THIRD_PARTY_CLASSES = frozenset(
    {
        "lightning.Trainer",
        "lightning.pytorch.Trainer",
        "lightning.pytorch.callbacks.EarlyStopping",
        "lightning.pytorch.callbacks.LearningRateMonitor",
        "lightning.pytorch.callbacks.ModelCheckpoint",
        "lightning.pytorch.callbacks.ModelSummary",
        "lightning.pytorch.callbacks.RichProgressBar",
        "lightning.pytorch.callbacks.TQDMProgressBar",
        "lightning.pytorch.loggers.CSVLogger",
        "lightning.pytorch.loggers.TensorBoardLogger",
        "lightning.pytorch.loggers.WandbLogger",
        "lightning.pytorch.strategies.DDPStrategy",
        "lightning.pytorch.strategies.FSDPStrategy",
        "lightning.pytorch.plugins.environments.SLURMEnvironment",
        "miditok.CPWord",
        "miditok.MIDILike",
        "miditok.MMM",
        "miditok.MuMIDI",
        "miditok.Octuple",
        "miditok.PerTok",
        "miditok.REMI",
        "miditok.Structured",
        "miditok.TSD",
    }
)
LYRIA_PACKAGE = "lyria"
_registered: set[str] = set()


def register_class(name: str) -> None:
    """Allows one more class outside lyria by its full dotted name (for a research plugin's own code)."""
    _registered.add(str(name))


def _allowed_names_hint() -> str:
    return f"lyria's own classes (under '{LYRIA_PACKAGE}.') or one of {sorted(THIRD_PARTY_CLASSES | _registered)}"


def resolve_class(name: Any, where: str, base: type | tuple[type, ...] | None = None) -> type:
    """The class a dotted name stands for, if the allow-list admits it; otherwise a DisallowedTargetError.

    Admitted: a public class defined in lyria, or a name of THIRD_PARTY_CLASSES (or `register_class`).
    A refused name is never imported: only lyria's own modules and listed ones are. `base`, when given,
    is what the class must subclass. `where` names the key (and file) in the error.
    """
    if not isinstance(name, str) or not name:
        raise DisallowedTargetError(f"{where}: expected a class name, found {name!r}")
    parts = name.split(".")
    listed = name in THIRD_PARTY_CLASSES or name in _registered
    if not listed and (parts[0] != LYRIA_PACKAGE or len(parts) < 2 or any(not p or p.startswith("_") for p in parts)):
        raise DisallowedTargetError(f"{where}: refusing to load {name!r}; allowed are {_allowed_names_hint()}")
    cls = None
    for split in range(len(parts) - 1, 0, -1):  # the longest importable module prefix, then attributes only
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            break
        cls = obj
        break
    if cls is None:
        raise ConfigError(f"{where}: no class {name!r} (check the spelling of the module and the class)")
    defined_in = getattr(cls, "__module__", "") or ""
    if not isinstance(cls, type) or not (listed or defined_in == LYRIA_PACKAGE or defined_in.startswith(LYRIA_PACKAGE + ".")):
        raise DisallowedTargetError(f"{where}: refusing to load {name!r} (not a class of lyria); allowed are {_allowed_names_hint()}")
    if base is not None and not issubclass(cls, base):
        bases = base if isinstance(base, tuple) else (base,)
        expected = " or ".join(f"{b.__module__}.{b.__qualname__}" for b in bases)
        raise DisallowedTargetError(f"{where}: {name!r} is not a {expected}")
    return cls


def iter_targets(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    """(key, target) of every `_target_` in a config tree, nested ones and those in lists included."""
    if isinstance(node, (DictConfig, ListConfig)):
        try:
            node = OmegaConf.to_container(node, resolve=True)
        except OmegaConfBaseException:  # an interpolation that only resolves inside a Hydra run
            node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if key == "_target_":
                yield path, value
            else:
                yield from iter_targets(value, path)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from iter_targets(value, f"{where}[{i}]")


def check_targets(node: Any, where: str, allowed: type | tuple[type, ...] | None = None) -> None:
    """Refuses a config tree (from a file or the command line) if any `_target_` in it is not allowed.

    `allowed`: what the top-level target must subclass (e.g. a Mixer for `model.mixer`).
    """
    for key, target in iter_targets(node, where):
        resolve_class(target, key, base=allowed if key == f"{where}._target_" else None)


@dataclass
class InputLimitsSchema:
    """Per-piece bounds (lyria.data.limits.InputLimits); null turns one off."""

    max_file_bytes: Optional[int] = 10 * 2**20
    max_notes: Optional[int] = 200_000
    max_beats: Optional[float] = 100_000.0
    max_seconds: Optional[float] = 14_400.0
    max_tokens: Optional[int] = 2_000_000


@dataclass
class DataConfig:
    source: Any = None
    max_pieces_per_style: Optional[int] = None
    cache_dir: str = ".cache/lyria/data"
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    split_salt: str = ""
    num_proc: int = 2
    parse_timeout_s: float = 60.0
    tokenize_timeout_s: float = 120.0
    limits: InputLimitsSchema = field(default_factory=InputLimitsSchema)
    batch_size: int = 16
    eval_batch_size: Optional[int] = None
    num_workers: int = 0
    balance_styles: bool = False
    transpose: list[int] = field(default_factory=lambda: [0, 0])
    path: Optional[str] = None
    styles_csv: Optional[str] = None
    name: Optional[str] = None
    column: Optional[str] = None
    streaming: bool = False
    task: Optional[str] = None


@dataclass
class TokenizerSchema:
    _target_: str = "lyria.tokenizers.LyriaTokenizer"
    miditok_class: str = "miditok.REMI"
    num_style_slots: int = 32
    learned_vocab_size: Optional[int] = None
    merge_tracks: bool = True
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSchema:
    mixer: Any = None
    conditioning: Any = None
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 1024
    dropout: float = 0.1
    attention_dropout: Optional[float] = None
    max_seq_len: int = 512
    tie_embeddings: bool = True
    style_output: bool = False
    style_output_rank: int = 8


@dataclass
class OptimizerSchema:
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8


@dataclass
class TrainingSchema:
    optimizer: OptimizerSchema = field(default_factory=OptimizerSchema)
    warmup_steps: int = 100
    total_steps: Optional[int] = None
    time_budget_s: Optional[float] = None
    min_lr_ratio: float = 0.1
    infilling_rate: float = 0.0
    infilling_max_bars: int = 8
    compile: bool = False
    nonfinite: str = "stop"
    max_skipped_steps: int = 10
    cpu_allocator: str = "keep"


@dataclass
class PathsSchema:
    root_dir: str = "."
    cache_dir: str = ".cache/lyria"
    output_dir: str = "outputs"


@dataclass
class StudySchema:
    """After training: a fixed seeded sample set (`generate`: lyria-generate settings) scored by lyria-evaluate
    (`evaluate`: `eval` names the conf/eval group, the other keys are lyria-evaluate settings)."""

    generate: dict[str, Any] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainSchema:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerSchema = field(default_factory=TokenizerSchema)
    model: ModelSchema = field(default_factory=ModelSchema)
    trainer: Any = None
    logger: Any = None
    callbacks: Any = None
    paths: PathsSchema = field(default_factory=PathsSchema)
    training: TrainingSchema = field(default_factory=TrainingSchema)
    task_name: str = "train"
    seed: int = 1234
    ckpt_path: Optional[str] = None
    auto_resume: bool = True
    study: Optional[StudySchema] = None


@dataclass
class WindowSchema:
    keep_fraction: float = 0.75
    opening_bars: int = 2


@dataclass
class SynthSchema:
    hop_length: int = 64
    harmonics: int = 48
    reverb: float = 0.2
    reverb_seconds: float = 1.2
    chunk_samples: int = 2097152


@dataclass
class FluidSynthSchema:
    soundfont: Optional[str] = None
    gain: float = 0.5
    timeout_s: float = 300.0


@dataclass
class MusicXmlSchema:
    quarter_length_divisors: list[int] = field(default_factory=lambda: [4, 3])


@dataclass
class PianoRollSchema:
    dpi: int = 100
    inches_per_bar: float = 0.6
    max_width_inches: float = 40.0
    height_inches: float = 4.0


@dataclass
class RenderSchema:
    """Formats and audio backends are names from lyria.render's registries, checked when the renderers are built."""

    formats: list[str] = field(default_factory=lambda: ["midi", "musicxml", "wav", "png"])
    backend: str = "synth"
    sample_rate: int = 44100
    peak_db: float = -1.0
    max_seconds: float = 900.0
    device: str = "cpu"
    synth: SynthSchema = field(default_factory=SynthSchema)
    fluidsynth: FluidSynthSchema = field(default_factory=FluidSynthSchema)
    musicxml: MusicXmlSchema = field(default_factory=MusicXmlSchema)
    png: PianoRollSchema = field(default_factory=PianoRollSchema)


@dataclass
class GenerateSchema:
    ckpt: str = "???"
    n: int = 8
    batch_size: int = 8
    max_new_tokens: int = 1024
    max_bars: Optional[int] = None
    max_seconds: Optional[float] = None
    window: WindowSchema = field(default_factory=WindowSchema)
    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    min_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    field_temperature: Optional[dict[str, float]] = None
    field_top_p: Optional[dict[str, float]] = None
    seed: int = 0
    input_limits: InputLimitsSchema = field(default_factory=InputLimitsSchema)
    style: Any = None
    cfg_scale: Optional[float] = None
    prompt: Optional[str] = None
    prompt_bars: Optional[int] = None
    infill: Optional[str] = None
    bars: Optional[str] = None
    melody: Optional[str] = None
    device: str = "cpu"
    quantize: Optional[str] = None
    output_dir: str = "samples"
    processors: list[Any] = field(default_factory=list)
    render: RenderSchema = field(default_factory=RenderSchema)
    paths: PathsSchema = field(default_factory=PathsSchema)


@dataclass
class LeaderboardSchema:
    runs: str = "???"
    output_dir: str = "leaderboard"
    rank_by: Optional[str] = None
    baseline: Optional[str] = None
    metrics: list[str] = field(default_factory=lambda: ["*"])
    exclude_metrics: list[str] = field(default_factory=list)
    lower_is_better: list[str] = field(default_factory=list)
    higher_is_better: list[str] = field(default_factory=list)
    identity_ignore: list[str] = field(default_factory=list)
    confidence: float = 0.95
    n_resamples: int = 2000
    alpha: float = 0.05
    min_seeds: int = 5
    seed: int = 0
    samples_per_run: int = 3
    logger: Any = None
    paths: PathsSchema = field(default_factory=PathsSchema)
    task_name: str = "leaderboard"


@dataclass
class ExportSchema:
    ckpt: str = "???"
    output_dir: str = "???"
    overwrite: bool = False


@dataclass
class EvalSettingsSchema:
    families: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    feature_resolution: int = 24
    polyphony_threshold: int = 2
    baseline: bool = True
    max_pieces: Optional[int] = None
    plots: bool = True
    num_proc: int = 2
    parse_timeout_s: float = 60.0


@dataclass
class EvaluateSchema:
    generated: str = "???"
    reference: str = "test"
    training_data: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerSchema = field(default_factory=TokenizerSchema)
    eval: EvalSettingsSchema = field(default_factory=EvalSettingsSchema)
    assets_dir: Optional[str] = None
    checkpoint: Optional[str] = None
    output_dir: str = "evaluation"
    quiet: bool = False
    paths: PathsSchema = field(default_factory=PathsSchema)


@dataclass
class StyleClassifierSettingsSchema:
    hidden: int = 0
    weight_decays: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1])
    max_iter: int = 300
    seed: int = 0
    max_pieces_per_style: Optional[int] = 2000
    feature_resolution: int = 24


@dataclass
class StyleClassifierSchema:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerSchema = field(default_factory=TokenizerSchema)
    assets_dir: Optional[str] = None
    classifier: StyleClassifierSettingsSchema = field(default_factory=StyleClassifierSettingsSchema)
    paths: PathsSchema = field(default_factory=PathsSchema)


def _allowed_keys(schema: type, parent: list[str]) -> list[str]:
    node: Any = OmegaConf.structured(schema)
    for part in parent:
        node = node.get(part) if isinstance(node, DictConfig) else None
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def validate(cfg: DictConfig, schema: type) -> DictConfig:
    """Merges `cfg` into the schema, then checks the values (`check_values`): unknown keys, wrong types, missing
    required values and impossible values become a ConfigError naming the key and what is allowed."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
    except ConfigKeyError as err:
        key = str(err.key) if err.key is not None else "?"
        parent = [p for p in (err.full_key or "").split(".")[:-1] if p]
        raise ConfigError(unknown_key_message(schema, parent, key)) from None
    except ValidationError as err:
        raise ConfigError(f"invalid value for config key '{err.full_key}': {str(err).splitlines()[0]}") from None
    missing = _missing_keys(merged)
    if missing:
        raise ConfigError(f"config key '{missing[0]}' is required: give it on the command line, e.g. {missing[0]}=...")
    check_values(merged, schema)
    return merged


def _missing_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Dotted keys whose value is `???` (required), found without resolving interpolations."""
    missing = []
    for key in node.keys():
        path = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            missing.append(path)
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not OmegaConf.is_interpolation(node, key):
            missing += _missing_keys(child, path + ".")
    return missing


def unknown_key_message(schema: type | None, parent: list[str], key: str) -> str:
    """'unknown config key ...', with the closest allowed key and the keys allowed where it was given."""
    allowed = _allowed_keys(schema, parent) if schema is not None else []
    where = ".".join(parent + [key])
    hint = difflib.get_close_matches(key, allowed, n=1)
    return (
        f"unknown config key '{where}'"
        + (f"; did you mean '{'.'.join(parent + [hint[0]])}'?" if hint else "")
        + (f" Allowed keys under '{'.'.join(parent) or '<root>'}': {sorted(allowed)}" if allowed else "")
    )


# ----------------------------------------------------------------------------------------- value checks
# Each rule: (dotted key, what is allowed in words, the test). A key that is absent or null passes unless the
# rule says `required`; checked by `validate` before any data is prepared or any model is built.

def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _range(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False, integer: bool = False):
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi}")
    text = f"{'an integer' if integer else 'a number'} {' and '.join(parts)}".strip()

    def test(value: Any) -> bool:
        if not _is_number(value) or (integer and not float(value).is_integer()) or value != value:
            return False
        if lo is not None and (value <= lo if lo_open else value < lo):
            return False
        return not (hi is not None and (value >= hi if hi_open else value > hi))

    return text, test


def _one_of(*choices: Any):
    return f"one of {list(choices)}", lambda value: value in choices


def _existing(kind: str = "file", extra: tuple[str, ...] = ()):
    def test(value: Any) -> bool:
        if value in extra:
            return True
        path = Path(str(value))
        return path.is_file() if kind == "file" else path.is_dir() if kind == "folder" else path.exists()

    words = {"file": "an existing file", "folder": "an existing folder", "path": "an existing file or folder"}[kind]
    return (f"{' or '.join(repr(e) for e in extra)} or {words}" if extra else words), test


POSITIVE = _range(0, lo_open=True)
NON_NEGATIVE = _range(0)
AT_LEAST_ONE = _range(1, integer=True)
COUNT = _range(0, integer=True)
FRACTION = _range(0, 1)
OPEN_FRACTION = _range(0, 1, lo_open=True, hi_open=True)
SEED = _range(0, 2**32 - 1, integer=True)

_DATA_RULES = [
    ("data.batch_size", AT_LEAST_ONE),
    ("data.eval_batch_size", AT_LEAST_ONE),
    ("data.val_fraction", _range(0, 1, hi_open=True)),
    ("data.test_fraction", _range(0, 1, hi_open=True)),
    ("data.num_proc", AT_LEAST_ONE),
    ("data.num_workers", COUNT),
    ("data.parse_timeout_s", POSITIVE),
    ("data.max_pieces_per_style", AT_LEAST_ONE),
    ("tokenizer.num_style_slots", AT_LEAST_ONE),
    ("tokenizer.learned_vocab_size", AT_LEAST_ONE),
]

VALUE_RULES: dict[str, list[tuple[str, tuple[str, Any]]]] = {
    "TrainSchema": _DATA_RULES
    + [
        ("seed", SEED),
        ("ckpt_path", _existing("file")),
        ("training.optimizer.lr", POSITIVE),
        ("training.optimizer.weight_decay", NON_NEGATIVE),
        ("training.optimizer.eps", POSITIVE),
        ("training.warmup_steps", COUNT),
        ("training.total_steps", AT_LEAST_ONE),
        ("training.time_budget_s", POSITIVE),
        ("training.min_lr_ratio", FRACTION),
        ("training.infilling_rate", FRACTION),
        ("training.infilling_max_bars", AT_LEAST_ONE),
        ("training.nonfinite", _one_of("stop", "skip")),
        ("training.max_skipped_steps", COUNT),
        ("training.cpu_allocator", _one_of("keep", "default")),
        ("model.d_model", AT_LEAST_ONE),
        ("model.n_layers", AT_LEAST_ONE),
        ("model.n_heads", AT_LEAST_ONE),
        ("model.d_ff", AT_LEAST_ONE),
        ("model.dropout", _range(0, 1, hi_open=True)),
        ("model.attention_dropout", _range(0, 1, hi_open=True)),
        ("model.max_seq_len", _range(2, integer=True)),
        ("model.mixer.window", AT_LEAST_ONE),
        ("model.conditioning.dropout", _range(0, 1, hi_open=True)),
        ("model.style_output_rank", AT_LEAST_ONE),
        ("trainer.max_steps", ("-1 (no limit) or an integer >= 1", lambda v: v == -1 or AT_LEAST_ONE[1](v))),
        ("trainer.max_epochs", ("-1 (no limit) or an integer >= 1", lambda v: v == -1 or AT_LEAST_ONE[1](v))),
        ("trainer.accumulate_grad_batches", AT_LEAST_ONE),
        ("trainer.gradient_clip_val", NON_NEGATIVE),
        ("trainer.log_every_n_steps", AT_LEAST_ONE),
        ("trainer.val_check_interval", POSITIVE),
    ],
    "GenerateSchema": [
        ("ckpt", _existing("path")),
        ("n", AT_LEAST_ONE),
        ("batch_size", AT_LEAST_ONE),
        ("seed", SEED),
        ("max_new_tokens", AT_LEAST_ONE),
        ("max_bars", AT_LEAST_ONE),
        ("max_seconds", POSITIVE),
        ("window.keep_fraction", OPEN_FRACTION),
        ("window.opening_bars", COUNT),
        ("temperature", _range(0, lo_open=True)),
        ("top_k", AT_LEAST_ONE),
        ("top_p", _range(0, 1, lo_open=True)),
        ("min_p", FRACTION),
        ("repetition_penalty", POSITIVE),
        ("cfg_scale", NON_NEGATIVE),
        ("quantize", _one_of("int8")),
        ("prompt", _existing("file")),
        ("prompt_bars", AT_LEAST_ONE),
        ("infill", _existing("file")),
        ("render.sample_rate", _range(1000, integer=True)),
        ("render.max_seconds", POSITIVE),
        ("render.peak_db", _range(hi=0)),
        ("render.backend", _one_of("synth", "fluidsynth")),
    ],
    "EvaluateSchema": _DATA_RULES
    + [
        ("generated", _existing("folder")),
        ("reference", _existing("folder", extra=("test", "validation", "train"))),
        ("training_data", _existing("file", extra=("auto", "composed"))),
        ("checkpoint", _existing("path")),
        ("eval.max_pieces", AT_LEAST_ONE),
        ("eval.num_proc", AT_LEAST_ONE),
        ("eval.parse_timeout_s", POSITIVE),
        ("eval.feature_resolution", AT_LEAST_ONE),
        ("eval.polyphony_threshold", AT_LEAST_ONE),
        ("eval.seed", SEED),
    ],
    "LeaderboardSchema": [
        ("runs", _existing("folder")),
        ("confidence", OPEN_FRACTION),
        ("alpha", OPEN_FRACTION),
        ("n_resamples", _range(100, integer=True)),
        ("min_seeds", AT_LEAST_ONE),
        ("samples_per_run", COUNT),
        ("seed", SEED),
    ],
    "ExportSchema": [("ckpt", _existing("path"))],
}


def _value(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    except OmegaConfBaseException:  # an interpolation that resolves only inside a Hydra run
        return None


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} is not allowed: expected {allowed}")


def check_values(cfg: DictConfig, schema: type) -> None:
    """Impossible values (negative lr, top_p=2, n=0, a missing file, a window longer than the context...): a
    ConfigError naming the first key that breaks its rule and what it allows."""
    for key, (allowed, test) in VALUE_RULES.get(schema.__name__, []):
        value = _value(cfg, key)
        if value is not None and not test(value):
            raise _fail(key, value, allowed)
    for check in _CROSS_CHECKS.get(schema.__name__, []):
        check(cfg)


def _check_model(cfg: DictConfig) -> None:
    d_model, heads, context = _value(cfg, "model.d_model"), _value(cfg, "model.n_heads"), _value(cfg, "model.max_seq_len")
    if d_model % heads:
        raise ConfigError(f"model.d_model={d_model} is not allowed with model.n_heads={heads}: d_model must be a multiple of n_heads")
    window = _value(cfg, "model.mixer.window")
    if window is not None and window > context:
        raise ConfigError(
            f"model.mixer.window={window} is not allowed: the window must not exceed the sequence, "
            f"model.max_seq_len={context} (lower the window or raise max_seq_len)"
        )


def _check_data(cfg: DictConfig) -> None:
    val, test = _value(cfg, "data.val_fraction"), _value(cfg, "data.test_fraction")
    if val is not None and test is not None and val + test >= 1:
        raise ConfigError(f"data.val_fraction={val} plus data.test_fraction={test} is not allowed: together they must stay below 1")
    transpose = _value(cfg, "data.transpose")
    if transpose is not None and (len(transpose) != 2 or transpose[0] > transpose[1] or any(abs(t) > 24 for t in transpose)):
        raise ConfigError(f"data.transpose={list(transpose)} is not allowed: expected [LOW, HIGH] semitones, LOW <= HIGH, within +-24")
    _check_music21_styles(cfg)


def _music21_corpus_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("music21")  # finds the package without importing it (seconds)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "corpus"


def _check_music21_styles(cfg: DictConfig) -> None:
    """A music21 corpus style must name a folder of the bundled corpus."""
    source = _value(cfg, "data.source")
    if not source or not str(source.get("_target_", "")).endswith("Music21CorpusSource"):
        return
    root = _music21_corpus_dir()
    if root is None or not root.is_dir():
        return
    available = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    for i, style in enumerate(source.get("styles") or []):
        composer = style.get("composer") if hasattr(style, "get") else None
        if composer is not None and not (root / str(composer)).is_dir():
            hint = difflib.get_close_matches(str(composer), available, n=1)
            raise ConfigError(
                f"data.source.styles[{i}].composer={composer!r} is not allowed: no such music21 corpus folder"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + f" Available: {available}"
            )


def _check_prompt_settings(cfg: DictConfig) -> None:
    for key in ("field_temperature", "field_top_p"):
        values = _value(cfg, key) or {}
        for name, value in values.items():
            ok = POSITIVE[1](value) if key == "field_temperature" else _range(0, 1, lo_open=True)[1](value)
            if not ok:
                raise _fail(f"{key}.{name}", value, POSITIVE[0] if key == "field_temperature" else "a number > 0 and <= 1")


def _check_quantize_device(cfg: DictConfig) -> None:
    quantize, device = _value(cfg, "quantize"), _value(cfg, "device")
    if quantize is not None and not str(device).startswith("cpu"):
        raise ConfigError(
            f"quantize={quantize} is not allowed with device={device}: torch's dynamic int8 quantization runs on "
            "the CPU only (set device=cpu, or quantize=null on a GPU)"
        )


_CROSS_CHECKS = {
    "TrainSchema": [_check_model, _check_data],
    "GenerateSchema": [_check_prompt_settings, _check_quantize_device],
    "EvaluateSchema": [_check_data],
}


def check_arguments(node: Any, where: str, ignore: tuple[str, ...] = ()) -> None:
    """Keys of a `_target_` node (and of nested ones) that its class does not accept: a ConfigError naming the key
    and the accepted parameters, found before anything is built (classes are resolved through the allow-list).
    `ignore`: keys of the top node that its owner consumes itself (a mixer's `position`)."""
    if isinstance(node, (DictConfig, ListConfig)):
        try:
            node = OmegaConf.to_container(node, resolve=True)
        except OmegaConfBaseException:
            node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, list):
        for i, item in enumerate(node):
            check_arguments(item, f"{where}[{i}]")
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if isinstance(value, (dict, list)):
            check_arguments(value, f"{where}.{key}")
    target = node.get("_target_")
    if target is None:
        return
    cls = resolve_class(target, f"{where}._target_")
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [name for name, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in node:
        if (key.startswith("_") and key.endswith("_")) or key in ignore:
            continue
        if key not in accepted:
            hint = difflib.get_close_matches(key, accepted, n=1)
            raise ConfigError(
                f"unknown config key '{where}.{key}'" + (f"; did you mean '{where}.{hint[0]}'?" if hint else "")
                + f" {target} accepts: {accepted}"
            )


def build(node: Any, where: str, allowed: type | tuple[type, ...] | None = None, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate` of allow-listed classes only, with errors that name the node and the parameters.

    Every `_target_` in `node` (and in dict-valued `kwargs`) must pass `resolve_class`; `allowed` is
    what the top-level class must subclass.
    """
    if node is None:
        raise ConfigError(f"config node '{where}' is missing")
    check_targets(node, where, allowed)
    check_targets(kwargs, where)
    target = node.get("_target_") if hasattr(node, "get") else None
    try:
        return instantiate(node, **kwargs)
    except Exception as err:
        cause = err.__cause__ or err
        detail = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        accepted = ""
        if target is not None and isinstance(cause, TypeError):
            try:
                params = [p for p in inspect.signature(resolve_class(target, where).__init__).parameters if p not in ("self", "args", "kwargs")]
                accepted = f"; {target} accepts: {params}"
            except (ValueError, TypeError):
                pass
        raise ConfigError(f"cannot build '{where}' ({target}): {detail}{accepted}") from err


def slurm_run_name() -> str | None:
    """`slurm-JOBID` (array tasks: `slurm-ARRAYJOB_TASK`) inside a SLURM job, else None.

    A requeued job keeps its id, so a run folder named after it is found again after the requeue.
    """
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return f"slurm-{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    job = os.environ.get("SLURM_JOB_ID")
    return f"slurm-{job}" if job else None


def process_rank() -> int:
    """This process's global rank as the launcher set it (srun, torchrun, Lightning's DDP launcher); 0 alone."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def register_resolvers() -> None:
    """Resolvers the Hydra configs use: `${run_name:}` (the run folder's name) and `${rank_zero:VALUE}`."""
    OmegaConf.register_new_resolver(
        "run_name", lambda: slurm_run_name() or datetime.now().strftime("%Y-%m-%d_%H-%M-%S"), use_cache=True, replace=True
    )
    # VALUE on the process of rank 0, null on the others (only rank 0 writes Hydra's output folder)
    OmegaConf.register_new_resolver("rank_zero", lambda value: value if process_rank() == 0 else None, replace=True)
