"""Loading a trained model: the checkpoint is read as plain data (weights_only) and the model is rebuilt
from allow-listed classes only, so a crafted checkpoint or tokenizer file cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lyria.config import check_targets
from lyria.models.lm import LyriaLM
from lyria.tokenizers import LyriaTokenizer
from lyria.tokenizers.base import TOKENIZER_FILE

REQUIRED_KEYS = ("state_dict", "hyper_parameters")
REQUIRED_HPARAMS = ("model", "vocab_sizes", "num_styles", "pad_id")


def read_checkpoint(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's contents as plain containers (`torch.load(weights_only=True)`), checked to be lyria's."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    try:
        state = torch.load(checkpoint, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types on truncated, corrupt or pickled-code files
        raise ValueError(f"{checkpoint} is not a readable checkpoint (truncated or corrupt?): {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"{checkpoint} holds a {type(state).__name__}, not a lyria training checkpoint")
    for key in REQUIRED_KEYS:
        if key not in state:
            raise ValueError(f"{checkpoint} has no '{key}': not a lyria training checkpoint")
    hparams = state["hyper_parameters"]
    missing = [key for key in REQUIRED_HPARAMS if key not in hparams]
    if missing or not isinstance(hparams["model"], dict):
        raise ValueError(f"{checkpoint}: hyper_parameters lack {missing or ['a model dict']}: not a lyria training checkpoint")
    # every class the model section names must pass the allow-list before anything is built
    check_targets(hparams["model"], f"{checkpoint}: hyper_parameters.model")
    return state


def load_model(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> tuple[LyriaLM, LyriaTokenizer, dict]:
    """(model in eval mode, its tokenizer from the `tokenizer.json` beside the checkpoint, hyper-parameters)."""
    checkpoint = Path(checkpoint)
    state = read_checkpoint(checkpoint, map_location)
    hparams = state["hyper_parameters"]
    tokenizer_path = checkpoint.parent / TOKENIZER_FILE
    tokenizer = LyriaTokenizer.load(tokenizer_path)
    if tokenizer.vocab_sizes != list(hparams["vocab_sizes"]):
        raise ValueError(
            f"{tokenizer_path} has vocabulary sizes {tokenizer.vocab_sizes} but {checkpoint} was trained with "
            f"{hparams['vocab_sizes']}: the tokenizer file does not belong to this checkpoint"
        )
    model_cfg = {k: v for k, v in hparams["model"].items() if k != "_target_"}
    try:
        model = LyriaLM(vocab_sizes=hparams["vocab_sizes"], num_styles=hparams["num_styles"], pad_id=hparams["pad_id"], **model_cfg)
    except TypeError as err:
        raise ValueError(f"{checkpoint}: hyper_parameters.model does not describe a LyriaLM: {err}") from err
    weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(weights)
    model.eval()
    return model, tokenizer, hparams
