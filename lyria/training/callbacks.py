"""Callbacks that make runs exactly repeatable and resumable."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch


def capture_rng_state() -> dict:
    """Every RNG state as plain containers (tensors, lists, numbers), so checkpoints load with weights_only."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStateCallback(L.Callback):
    """Saves torch / numpy / python (and CUDA) RNG states in every checkpoint and restores them on resume."""

    def state_dict(self) -> dict:
        return capture_rng_state()

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            restore_rng_state(state_dict)
