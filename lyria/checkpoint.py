"""Loading a trained model: the checkpoint is read as plain data (weights_only) and the model is rebuilt
from allow-listed classes only, so a crafted checkpoint or tokenizer file cannot run code.

A model is either a Lightning training checkpoint (`*.ckpt`, with `tokenizer.json` beside it) or a folder
written by `lyria-export` (`model.safetensors`, `model.yaml`, `config.yaml`, `tokenizer.json`; no pickle).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import yaml

from lyria.config import check_targets
from lyria.errors import CheckpointError
from lyria.files import is_temporary
from lyria.models.lm import LyriaLM
from lyria.tokenizers import LyriaTokenizer
from lyria.tokenizers.base import TOKENIZER_FILE

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("state_dict", "hyper_parameters")
REQUIRED_HPARAMS = ("model", "vocab_sizes", "num_styles", "pad_id")
# an exported model folder
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_MODEL = "model.yaml"
EXPORT_CONFIG = "config.yaml"
EXPORT_FORMAT = "lyria-export"
EXPORT_VERSION = 1


def read_checkpoint(checkpoint: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """The checkpoint's contents as plain containers (`torch.load(weights_only=True)`), checked to be lyria's.

    `mmap`: map the tensors instead of reading them (a quick check of a large file's structure)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    try:
        state = torch.load(checkpoint, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises many types on truncated, corrupt or pickled-code files
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{checkpoint} is not a readable checkpoint (truncated or corrupt?): {detail}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{checkpoint} holds a {type(state).__name__}, not a lyria training checkpoint")
    for key in REQUIRED_KEYS:
        if key not in state:
            raise CheckpointError(f"{checkpoint} has no '{key}': not a lyria training checkpoint")
    _check_hparams(state["hyper_parameters"], checkpoint)
    return state


def _check_hparams(hparams: Any, where: Path) -> None:
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{where}: hyper_parameters is a {type(hparams).__name__}, not a mapping")
    missing = [key for key in REQUIRED_HPARAMS if key not in hparams]
    if missing or not isinstance(hparams["model"], dict):
        raise CheckpointError(f"{where}: hyper_parameters lack {missing or ['a model dict']}: not a lyria model")
    # every class the model section names must pass the allow-list before anything is built
    check_targets(hparams["model"], f"{where}: hyper_parameters.model")


def checkpoint_problem(checkpoint: str | Path) -> str | None:
    """Why `checkpoint` cannot be resumed from or loaded (missing, truncated, corrupt, not lyria's), or None."""
    try:
        read_checkpoint(checkpoint, mmap=True)  # the tensors mapped, not read: quick on large files
    except FileNotFoundError as err:
        return str(err)
    except CheckpointError:
        try:  # files in torch's legacy format cannot be mapped: read them whole before calling them broken
            read_checkpoint(checkpoint)
        except (CheckpointError, FileNotFoundError) as err:
            return str(err)
    return None


def newest_intact_checkpoint(folder: str | Path, prefer: str = "last.ckpt") -> tuple[Path | None, list[str]]:
    """(the newest readable `*.ckpt` in `folder`, `prefer` first when it reads, else None; why each newer one was passed over)."""
    folder = Path(folder)
    candidates = [p for p in folder.glob("*.ckpt") if p.is_file() and not is_temporary(p)]
    candidates.sort(key=lambda p: (p.name != prefer, -p.stat().st_mtime))
    passed_over = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            return path, passed_over
        passed_over.append(problem)
    return None, passed_over


def is_export_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / EXPORT_WEIGHTS).exists()


def read_export(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(hyper-parameters, LyriaLM weights) of a folder written by `lyria-export`; nothing in it is unpickled or run."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    model_file, weights_file = folder / EXPORT_MODEL, folder / EXPORT_WEIGHTS
    for required in (model_file, weights_file, folder / TOKENIZER_FILE):
        if not required.is_file():
            raise CheckpointError(f"{folder} is not a lyria-export folder: {required.name} is missing")
    try:
        meta = yaml.safe_load(model_file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{model_file} is not readable YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{model_file} does not say format: {EXPORT_FORMAT}: not a lyria-export folder")
    if meta.get("version") != EXPORT_VERSION:
        raise CheckpointError(f"{model_file} has format version {meta.get('version')!r}; this lyria reads version {EXPORT_VERSION}")
    hparams = meta.get("hyper_parameters")
    _check_hparams(hparams, model_file)
    try:
        weights = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights_file} is not a readable safetensors file (truncated or corrupt?): {err}") from err
    return hparams, weights


def load_model(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> tuple[LyriaLM, LyriaTokenizer, dict]:
    """(model in eval mode, its tokenizer, hyper-parameters) of a training checkpoint (`tokenizer.json` beside
    it) or of a `lyria-export` folder."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        hparams, weights = read_export(checkpoint)
        tokenizer_path = checkpoint / TOKENIZER_FILE
        weights = {k: v.to(map_location) for k, v in weights.items()}
    else:
        state = read_checkpoint(checkpoint, map_location)
        hparams = state["hyper_parameters"]
        tokenizer_path = checkpoint.parent / TOKENIZER_FILE
        weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
    tokenizer = LyriaTokenizer.load(tokenizer_path)
    if tokenizer.vocab_sizes != list(hparams["vocab_sizes"]):
        raise CheckpointError(
            f"{tokenizer_path} has vocabulary sizes {tokenizer.vocab_sizes} but {checkpoint} was trained with "
            f"{hparams['vocab_sizes']}: the tokenizer file does not belong to this checkpoint"
        )
    model_cfg = {k: v for k, v in hparams["model"].items() if k != "_target_"}
    try:
        model = LyriaLM(vocab_sizes=hparams["vocab_sizes"], num_styles=hparams["num_styles"], pad_id=hparams["pad_id"], **model_cfg)
    except TypeError as err:
        raise CheckpointError(f"{checkpoint}: hyper_parameters.model does not describe a LyriaLM: {err}") from err
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{checkpoint}: the weights do not fit the model its hyper-parameters describe: {str(err).splitlines()[0]}") from err
    model.eval()
    return model, tokenizer, hparams
