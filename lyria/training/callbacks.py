"""Callbacks: exact repeatability and resumption (RNG state), and a sample monitor that watches for mode collapse."""

from __future__ import annotations

import logging
import random
import time

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


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


class SampleMonitor(L.Callback):
    """Every `every_n_steps` optimizer steps, rank 0 samples `n_samples` pieces and logs their diversity and
    mode-collapse metrics (`monitor/...`) against up to `reference_pieces` real pieces (validation split
    first, then training pieces); a collapse score above `warn_above` logs a warning.

    Sampling draws from its own seeded generator and puts the model back in training mode, so the
    training run itself is unchanged; the cost is one short generation per check.
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        n_samples: int = 8,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float | None = 0.95,
        warn_above: float = 0.6,
        reference_pieces: int = 64,
        seed: int = 0,
    ) -> None:
        if every_n_steps < 1 or n_samples < 2:
            raise ValueError(f"SampleMonitor needs every_n_steps >= 1 and n_samples >= 2, got {every_n_steps} and {n_samples}")
        self.every_n_steps, self.n_samples, self.max_new_tokens = int(every_n_steps), int(n_samples), int(max_new_tokens)
        self.temperature, self.top_p, self.warn_above = float(temperature), top_p, float(warn_above)
        self.reference_pieces, self.seed = int(reference_pieces), int(seed)
        self._reference = None
        self.history: list[dict[str, float]] = []

    def _reference_set(self, datamodule):
        from lyria.evaluation.base import PieceSet
        from lyria.evaluation.sets import load_split

        prepared = datamodule.prepared
        chosen = load_split(prepared, "validation")
        if len(chosen) < self.reference_pieces:
            train = load_split(prepared, "train")
            extra = min(len(train), self.reference_pieces - len(chosen))
            chosen = PieceSet(
                "monitor_reference",
                chosen.names + train.names[:extra],
                [chosen.pieces[i] for i in range(len(chosen))] + [train.pieces[i] for i in range(extra)],
                chosen.styles + train.styles[:extra],
            )
        return chosen.subset(range(min(len(chosen), self.reference_pieces)), "monitor_reference")

    def measure(self, model, tokenizer, reference, step: int) -> dict[str, float]:
        """Samples and scores; returns the metrics (those the set sizes allow)."""
        from lyria.data.notes import notes_from_score
        from lyria.evaluation.base import EvalInputs, PieceSet
        from lyria.evaluation.diversity import Diversity
        from lyria.evaluation.features import FeatureSettings
        from lyria.evaluation.mode_collapse import ModeCollapse
        from lyria.generation.pieces import new_pieces
        from lyria.generation.processors import GrammarMask, SpecialTokenMask, Temperature, TopP
        from lyria.generation.sampler import Limits, Sampler

        processors = [SpecialTokenMask(), GrammarMask(), Temperature(self.temperature), TopP(self.top_p)]
        sampler = Sampler(model, tokenizer, processors, device=next(model.parameters()).device)
        made = new_pieces(sampler, n=self.n_samples, seed=self.seed + step, limits=Limits(max_new_tokens=self.max_new_tokens))
        pieces = [notes_from_score(piece.score) for piece in made if piece.score is not None]
        failures = len(made) - len(pieces)
        metrics = {"monitor/decode_failures": float(failures)}
        if len(pieces) < 2:
            return metrics
        generated = PieceSet("monitor_samples", [f"sample_{i}" for i in range(len(pieces))], pieces, [None] * len(pieces))
        inputs = EvalInputs(generated, reference, None, self.seed, FeatureSettings(), role="monitor")
        diversity = Diversity(orders=[4], note_f1_pairs=0).compute(inputs)
        collapse = ModeCollapse().compute(inputs)
        chosen = {"distinct_4": diversity, "self_bleu": diversity, "vendi": diversity, "near_duplicate_rate": collapse, "coverage": collapse}
        for name, result in chosen.items():
            if result.values.get(name) is not None:
                metrics[f"monitor/{name}"] = result.values[name]
        if collapse.values.get("score") is not None:
            metrics["monitor/collapse_score"] = collapse.values["score"]
        return metrics

    @rank_zero_only
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps or (self.history and self.history[-1]["step"] == step):
            return
        started = time.perf_counter()
        datamodule = trainer.datamodule
        if self._reference is None:
            self._reference = self._reference_set(datamodule)
        was_training = pl_module.training
        try:
            metrics = self.measure(pl_module.model, datamodule.tokenizer, self._reference, step)
        finally:
            pl_module.train(was_training)
        metrics["monitor/seconds"] = time.perf_counter() - started
        if trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=step)
        self.history.append({"step": step, **metrics})
        score = metrics.get("monitor/collapse_score")
        if score is not None and score > self.warn_above:
            log.warning(
                "step %d: mode-collapse score %.3f is above %.2f (near duplicates %.2f, coverage %.2f): the samples are "
                "collapsing onto a few pieces",
                step,
                score,
                self.warn_above,
                metrics.get("monitor/near_duplicate_rate", float("nan")),
                metrics.get("monitor/coverage", float("nan")),
            )
