"""A training run in its own process, for the multi-process and kill/resume tests.

    python train_worker.py SPEC.json

SPEC: {"cache": DIR, "overrides": [...], "losses": FILE, "kill_after": STEP, "signal_at": STEP,
"nan_on_rank": [RANK, STEP]}. Each rank appends one JSON line per batch to LOSSES.rank<R>: the step, the
batch (epoch:index), the loss as hex (bitwise comparison), and the number of target tokens. Lightning's DDP launcher
starts the other ranks by running this same command again.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from lyria.cli import CONF_DIR
from lyria.data.datamodule import IGNORE_INDEX
from lyria.training.train import train


class StepProbe(L.Callback):
    def __init__(self, spec: dict) -> None:
        self.spec = spec

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.spec.get("signal_at") == trainer.global_step:
            os.kill(os.getpid(), signal.SIGUSR1)  # arrives in the middle of the step, as SLURM's would
        rank, step = self.spec.get("nan_on_rank", (None, None))
        if rank == trainer.global_rank and step == trainer.global_step:
            with torch.no_grad():
                pl_module.model.norm.weight.fill_(math.nan)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = float(outputs["loss"])
        tokens = int((batch["targets"][..., 0] if batch["targets"].dim() == 3 else batch["targets"]).ne(IGNORE_INDEX).sum())
        with open(f"{self.spec['losses']}.rank{trainer.global_rank}", "a") as out:
            row = {"step": trainer.global_step - 1, "batch": f"{trainer.current_epoch}:{batch_idx}", "loss": loss.hex(), "tokens": tokens}
            out.write(json.dumps(row) + "\n")
        if self.spec.get("kill_after") == trainer.global_step - 1:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(1)
    base = ["trainer=debug", "logger=csv", "data.max_pieces_per_style=4", "data.num_proc=1", f"paths.cache_dir={spec['cache']}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=base + spec["overrides"])
    metrics, _ = train(cfg, callbacks=[StepProbe(spec)])
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        print("WORKER-METRICS " + json.dumps(metrics))


if __name__ == "__main__":
    main()
