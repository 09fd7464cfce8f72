"""The LightningModule: next-token training of LyriaLM with per-token loss, perplexity and accuracy.

Validation and test report loss, perplexity and accuracy per token, and NLL per note and bits per note
(summed NLL divided by the notes the targets hold, the likelihood that compares across tokenizers),
all from sums over every rank's share of the windows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics.aggregation import SumMetric

from lyria.data.datamodule import IGNORE_INDEX
from lyria.errors import NonFiniteLossError
from lyria.models.lm import LyriaLM
from lyria.training.optim import WarmupCosine, build_optimizer


def token_loss(logits: Tensor | list[Tensor], targets: Tensor, loss_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(mean NLL summed over fields, correct predictions, counted targets); padding is ignored, and so are
    targets `loss_mask` (B, T) marks False (the steps an infilling task gives).

    For compound tokens (targets (B, T, F)) a step is correct when every field is.
    """
    if isinstance(logits, Tensor):
        logits, targets = [logits], targets[..., None]
    if loss_mask is not None:
        targets = targets.masked_fill(~loss_mask[..., None], IGNORE_INDEX)
    mask = targets[..., 0] != IGNORE_INDEX
    count = mask.sum()
    loss = logits[0].new_zeros(())
    correct = torch.ones_like(mask)
    for field, field_logits in enumerate(logits):
        field_targets = targets[..., field]
        loss = loss + F.cross_entropy(
            field_logits.float().reshape(-1, field_logits.shape[-1]), field_targets.reshape(-1), ignore_index=IGNORE_INDEX
        )
        correct &= field_logits.argmax(-1) == field_targets
    return loss, (correct & mask).sum(), count


class LyriaLightningModule(L.LightningModule):
    """Hyper-parameters are plain dicts (they land in the checkpoint, which must load with weights_only)."""

    def __init__(
        self,
        model: dict,
        training: dict,
        vocab_sizes: list[int],
        num_styles: int,
        pad_id: int,
        style_names: list[str] | None = None,
        note_counts: list[int] | None = None,
        note_field: int = 0,
        style_slots: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        model_cfg = {k: v for k, v in model.items() if k != "_target_"}
        self.model = LyriaLM(vocab_sizes=vocab_sizes, num_styles=num_styles, pad_id=pad_id, **model_cfg)
        self.training_cfg = training
        self.skipped_steps = 0  # updates skipped for a non-finite loss (training.nonfinite=skip)
        if training.get("compile"):
            self.model.compile()  # compiles forward in place: parameter names (and checkpoints) stay the same
        # note onsets each id of `note_field` carries (tokenizer.note_counts(): a learned token may hold several)
        self.register_buffer("note_counts", torch.tensor(note_counts or [], dtype=torch.long), persistent=False)
        self.note_field = int(note_field)
        # validation / test sums (synchronised across ranks when read), so metrics are global and exact
        # (NaN kept: a diverged model must not report a finite loss, torchmetrics' default drops NaN values)
        self.eval_sums = nn.ModuleDict({name: SumMetric(nan_strategy="disable") for name in ("nll", "tokens", "correct", "notes")})

    def forward(self, tokens: Tensor, bar_ids: Tensor | None = None, cond: dict | None = None, cache=None):
        return self.model(tokens, bar_ids=bar_ids, cond=cond, cache=cache)

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        cond = {"style": batch["style"]}
        if "memory" in batch:  # a sequence-to-sequence task's input (harmonization: the melody)
            cond["memory"] = batch["memory"]
            if "memory_bars" in batch:
                cond["memory_bars"] = batch["memory_bars"]
        logits, _ = self.model(batch["tokens"], bar_ids=batch["bar_ids"], cond=cond)
        loss, correct, count = token_loss(logits, batch["targets"], batch.get("loss_mask"))
        if stage == "train":
            # per step, on this rank; no host synchronisation here (the progress bar reads it now and then)
            rows = batch["tokens"].shape[0]
            self.log("train/loss", loss, prog_bar=True, batch_size=rows)
            self.log("train/ppl", torch.exp(loss.detach()), batch_size=rows)
            self.log("train/acc", correct.float() / count.clamp(min=1), batch_size=rows)
            return self._global_token_mean(loss, count)
        sums = self.eval_sums
        sums["nll"].update(loss.detach() * count)
        sums["tokens"].update(count)
        sums["correct"].update(correct)
        if self.note_counts.numel():
            targets = batch["targets"] if batch["targets"].dim() == 2 else batch["targets"][..., self.note_field]
            sums["notes"].update(self.note_counts[targets[targets != IGNORE_INDEX]].sum())
        return loss

    def _global_token_mean(self, loss: Tensor, count: Tensor) -> Tensor:
        """With several processes, this rank's share of the mean over every rank's target tokens.

        Crops that end with their piece are shorter (padded), so ranks hold different numbers of targets; DDP
        averages the ranks' gradients, which would weight each rank's tokens by 1 / its own count. Scaling this
        rank's token sum by world_size / (all ranks' tokens) makes that average the gradient of the global
        per-token mean, the loss one process computes over the whole batch. One scalar all-reduce per step."""
        if self._trainer is None or self.trainer.world_size <= 1:
            return loss
        total = self.trainer.strategy.reduce(count.detach().to(loss.dtype), reduce_op="sum")
        return loss * count / (total.clamp(min=1) / self.trainer.world_size)

    def _log_eval(self, stage: str) -> None:
        """Loss, perplexity, accuracy and per-note NLL from sums over every rank's windows (each counted once)."""
        totals = {name: metric.compute() for name, metric in self.eval_sums.items()}
        for metric in self.eval_sums.values():
            metric.reset()
        if totals["tokens"] > 0:
            loss = totals["nll"] / totals["tokens"]
            if stage == "val" and not self.trainer.sanity_checking and not bool(torch.isfinite(loss)):
                # before ModelCheckpoint sees it: a diverged model is never saved as best (nor as last)
                raise NonFiniteLossError(
                    f"validation loss is {float(loss)} at step {self.global_step}: the model diverged; lower "
                    f"training.optimizer.lr. {self._last_good()}"
                )
            # the same value on every rank; sync_dist only keeps Lightning from warning about epoch-level logs
            self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True)
            self.log(f"{stage}/ppl", torch.exp(loss), sync_dist=True)
            self.log(f"{stage}/acc", totals["correct"] / totals["tokens"], sync_dist=True)
        if self.note_counts.numel() and totals["notes"] > 0:
            per_note = totals["nll"] / totals["notes"]
            self.log(f"{stage}/nll_per_note", per_note, sync_dist=True)
            self.log(f"{stage}/bits_per_note", per_note / math.log(2), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        loss = self._step(batch, "train")
        if self.training_cfg.get("nonfinite", "stop") == "skip":
            # checked every step (a host synchronisation): a non-finite loss skips this step's update
            if not self._all_finite(loss):
                self.skipped_steps += 1
                limit = int(self.training_cfg.get("max_skipped_steps", 10))
                if self.skipped_steps > limit:
                    raise NonFiniteLossError(
                        f"training loss was not finite in {self.skipped_steps} steps (training.max_skipped_steps={limit}); "
                        f"stopping at step {self.global_step}: lower training.optimizer.lr. {self._last_good()}"
                    )
                rank_zero_warn(
                    f"training loss is not finite at step {self.global_step}: skipping this update "
                    f"({self.skipped_steps} of at most training.max_skipped_steps={limit})"
                )
                return None
            return loss
        # Read on the host only as often as the trainer logs (no per-step synchronisation with a GPU). A NaN
        # spreads to every rank through the gradient all-reduce, and all ranks check at the same steps; a NaN
        # that slips in between checks is caught at validation and before any checkpoint is written.
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self._stop_if_not_finite(loss)
        return loss

    def _all_finite(self, value: Tensor) -> bool:
        finite = bool(torch.isfinite(value).all())
        # every rank must take the same branch: one that raised (or skipped) alone would leave the others
        # waiting in the gradient all-reduce
        if self._trainer is not None and self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        return finite

    def _last_good(self) -> str:
        callback = self.trainer.checkpoint_callback if self._trainer is not None else None
        paths = [getattr(callback, name, "") for name in ("last_model_path", "best_model_path")]
        kept = [path for path in paths if path and Path(path).is_file()]
        return f"The last good checkpoint is kept: {kept[0]}" if kept else "No checkpoint was written."

    def _stop_if_not_finite(self, loss: Tensor) -> None:
        if not self._all_finite(loss):
            where = f"{loss.item()} on this rank" if not torch.isfinite(loss) else "finite here but not on another rank"
            raise NonFiniteLossError(
                f"training loss is {where} at step {self.global_step} (checked every trainer.log_every_n_steps="
                f"{self.trainer.log_every_n_steps} steps); lower training.optimizer.lr, or set training.nonfinite=skip. "
                f"{self._last_good()}"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuses to write a model whose weights are not all finite (a NaN model is never saved, as best or last)."""
        broken = [name for name, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if broken:
            raise NonFiniteLossError(
                f"the weights are not finite at step {self.global_step} ({len(broken)} tensors, e.g. {broken[0]}): "
                f"no checkpoint is written; lower training.optimizer.lr. {self._last_good()}"
            )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.training_cfg
        opt = cfg["optimizer"]
        optimizer = build_optimizer(self.model, lr=opt["lr"], weight_decay=opt["weight_decay"], betas=opt["betas"], eps=opt["eps"])
        total = cfg.get("total_steps") or self._estimated_steps()
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(cfg["warmup_steps"], total, cfg["min_lr_ratio"]))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def _estimated_steps(self) -> int:
        estimate = self.trainer.estimated_stepping_batches if self.trainer is not None else math.inf
        if not math.isfinite(estimate):
            raise ValueError(
                "training.total_steps is null and the trainer has no step or epoch limit to derive it from; "
                "set training.total_steps or trainer.max_steps"
            )
        return int(estimate)
