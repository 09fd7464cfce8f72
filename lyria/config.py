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
class DataConfig:
    source: Any = None
    max_pieces_per_style: Optional[int] = None
    cache_dir: str = ".cache/lyria/data"
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    split_salt: str = ""
    num_proc: int = 2
    parse_timeout_s: float = 60.0
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
    max_seq_len: int = 512
    tie_embeddings: bool = True


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
    min_lr_ratio: float = 0.1
    infilling_rate: float = 0.0
    infilling_max_bars: int = 8
    compile: bool = False


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
    prompt: Optional[str] = None
    prompt_bars: Optional[int] = None
    infill: Optional[str] = None
    bars: Optional[str] = None
    device: str = "cpu"
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


def _allowed_keys(schema: type, parent: list[str]) -> list[str]:
    node: Any = OmegaConf.structured(schema)
    for part in parent:
        node = node.get(part) if isinstance(node, DictConfig) else None
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def validate(cfg: DictConfig, schema: type) -> DictConfig:
    """Merges `cfg` into the schema; unknown keys and wrong types become a ConfigError naming the key."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
    except ConfigKeyError as err:
        key = str(err.key) if err.key is not None else "?"
        parent = [p for p in (err.full_key or "").split(".")[:-1] if p]
        allowed = _allowed_keys(schema, parent)
        where = ".".join(parent + [key])
        hint = difflib.get_close_matches(key, allowed, n=1)
        raise ConfigError(
            f"unknown config key '{where}'"
            + (f"; did you mean '{'.'.join(parent + [hint[0]])}'?" if hint else "")
            + (f" Allowed keys under '{'.'.join(parent) or '<root>'}': {sorted(allowed)}" if allowed else "")
        ) from None
    except ValidationError as err:
        raise ConfigError(f"invalid value for config key '{err.full_key}': {str(err).splitlines()[0]}") from None
    return merged


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
