"""`export_model`: a training checkpoint as one folder of data only, which `load_model` (and `lyria-generate
ckpt=FOLDER`) reads: safetensors weights, the model's hyper-parameters and the run's resolved config as YAML,
and the tokenizer as JSON. Nothing in it is pickled or executable.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from lyria.checkpoint import EXPORT_CONFIG, EXPORT_FORMAT, EXPORT_MODEL, EXPORT_VERSION, EXPORT_WEIGHTS, load_model
from lyria.config import ConfigError
from lyria.errors import DiskFullError, is_disk_full
from lyria.files import atomic_write
from lyria.tokenizers.base import TOKENIZER_FILE

RUN_CONFIG = "config.yaml"  # written beside the checkpoints by lyria-train
EXPORTED_FILES = (EXPORT_WEIGHTS, EXPORT_MODEL, EXPORT_CONFIG, TOKENIZER_FILE)


def _plain(value: Any) -> Any:
    """Hyper-parameters as YAML-safe containers (dicts, lists, str, int, float, bool, None)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, "tolist"):
        return value.tolist()
    raise ConfigError(f"hyper-parameter value {value!r} ({type(value).__name__}) cannot be exported as plain data")


def export_model(ckpt: str | Path, output_dir: str | Path, overwrite: bool = False) -> Path:
    """Writes the folder `output_dir` (all at once: it appears complete or not at all); returns its path."""
    from safetensors.torch import save_file

    ckpt, output_dir = Path(ckpt), Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not overwrite:
        raise ConfigError(f"output_dir={output_dir} exists and is not empty; choose another folder or set overwrite=true")
    model, tokenizer, hparams = load_model(ckpt)  # checks the checkpoint, its allow-listed classes and tokenizer
    # tied weights share storage, which safetensors refuses: each tensor gets its own copy
    weights = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in model.state_dict().items()}
    meta = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "source": ckpt.name, "hyper_parameters": _plain(dict(hparams))}
    run_config = ckpt.parent / RUN_CONFIG
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        save_file(weights, str(staging / EXPORT_WEIGHTS), metadata={"format": EXPORT_FORMAT, "version": str(EXPORT_VERSION)})
        atomic_write(staging / EXPORT_MODEL, yaml.safe_dump(meta, sort_keys=False))
        if run_config.is_file():
            config_text = yaml.safe_dump(yaml.safe_load(run_config.read_text()), sort_keys=False)  # data only, re-emitted
        else:
            config_text = yaml.safe_dump({"model": meta["hyper_parameters"]["model"], "training": meta["hyper_parameters"].get("training")}, sort_keys=False)
        atomic_write(staging / EXPORT_CONFIG, config_text)
        tokenizer.save(staging)
        for path in staging.iterdir():
            path.chmod(0o644)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, Exception) and is_disk_full(err) and not isinstance(err, DiskFullError):
            raise DiskFullError(f"disk full while exporting {ckpt} to {output_dir}; nothing was written") from err
        raise
    return output_dir
