"""The sample monitor: logs diversity and mode-collapse metrics while training, warns on collapse, changes nothing else."""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path

import lightning as L
import pytest

from lyria.training.callbacks import SampleMonitor
from lyria.training.train import train


class BatchDigest(L.Callback):
    def __init__(self) -> None:
        self.digests: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.digests.append(hashlib.sha1(batch["tokens"].numpy().tobytes()).hexdigest())


def monitor_of(objects) -> SampleMonitor:
    (monitor,) = [c for c in objects["trainer"].callbacks if isinstance(c, SampleMonitor)]
    return monitor


def test_monitor_logs_every_n_steps_and_warns_above_the_threshold(compose_train, midi_folder, one_thread, caplog):
    overrides = ["data=midi_folder", f"data.path={midi_folder}", "data.max_pieces_per_style=null"]
    watched = BatchDigest()
    with caplog.at_level(logging.WARNING, logger="lyria.training.callbacks"):
        _, objects = train(
            compose_train(
                *overrides,
                "callbacks.sample_monitor.every_n_steps=3",
                "callbacks.sample_monitor.n_samples=6",
                "callbacks.sample_monitor.max_new_tokens=32",
                "callbacks.sample_monitor.warn_above=-1",
            ),
            callbacks=[watched],
        )
    history = monitor_of(objects).history
    assert [h["step"] for h in history] == [3, 6]
    for row in history:
        assert {"monitor/distinct_4", "monitor/vendi", "monitor/self_bleu", "monitor/near_duplicate_rate"} <= set(row)
    scored = sum("monitor/collapse_score" in h for h in history)
    assert scored >= 1
    assert sum("mode-collapse score" in r.getMessage() for r in caplog.records) == scored
    with open(Path(objects["trainer"].logger.log_dir) / "metrics.csv", newline="") as handle:
        logged = list(csv.DictReader(handle))
    assert [row["step"] for row in logged if row.get("monitor/vendi")] == ["3", "6"]

    # off by default in debug runs (the first check would come after the last step), and training is unchanged by it
    plain = BatchDigest()
    _, quiet = train(
        compose_train(*overrides, "paths.output_dir=" + str(objects["paths"]["run_dir"]) + "_plain"), callbacks=[plain]
    )
    assert monitor_of(quiet).history == []
    assert plain.digests == watched.digests


def test_monitor_rejects_settings_that_cannot_work():
    with pytest.raises(ValueError, match="n_samples >= 2"):
        SampleMonitor(n_samples=1)
