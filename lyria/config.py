"""Typed schemas for the composed configs: a typo or a wrong type fails at start-up, naming the key.

Sections whose keys depend on the chosen class (a data source, a mixer, a Lightning Trainer) are
`_target_` nodes; they are checked against the class signature when built (`build`).
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError


def to_plain(value: Any) -> Any:
    """An OmegaConf node as plain dicts and lists (resolved); anything else unchanged."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


class ConfigError(ValueError):
    """A config value or key that cannot work; the message names it and what would be right."""


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


@dataclass
class PathsSchema:
    root_dir: str = "."
    cache_dir: str = ".cache/lyria"
    output_dir: str = "outputs"


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


@dataclass
class GenerateSchema:
    ckpt: str = "???"
    n: int = 8
    batch_size: int = 8
    max_new_tokens: int = 1024
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
    device: str = "cpu"
    output_dir: str = "samples"
    processors: list[Any] = field(default_factory=list)
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


def build(node: Any, where: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate` with errors that name the config node and the class's parameters."""
    if node is None:
        raise ConfigError(f"config node '{where}' is missing")
    target = node.get("_target_") if hasattr(node, "get") else None
    try:
        return instantiate(node, **kwargs)
    except Exception as err:
        cause = err.__cause__ or err
        detail = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        accepted = ""
        if target is not None and isinstance(cause, TypeError):
            try:
                params = [p for p in inspect.signature(get_class(target).__init__).parameters if p not in ("self", "args", "kwargs")]
                accepted = f"; {target} accepts: {params}"
            except (ImportError, ValueError, TypeError, OmegaConfBaseException):
                pass
        raise ConfigError(f"cannot build '{where}' ({target}): {detail}{accepted}") from err
