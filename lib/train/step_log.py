"""Training curves within the epoch: every few optimizer steps the engine appends one record
(mean loss and accuracy of the steps since the last record, learning rate, images/s) to the run
folder's steps.jsonl, so the Runs page moves long before the first epoch ends.

When a record is written: every ``every`` steps, with ``every = ceil(total_steps / TARGET_RECORDS)``
(so a whole run writes at most TARGET_RECORDS of them), and also as soon as MAX_GAP_S seconds of
training passed since the last one (a slow run on a CPU still moves every few seconds); those
extra records stop once the file holds TARGET_RECORDS, so the file never passes twice that
(about 300 kB). The steps left over at the end of an epoch, or at a stop, make one last record, so
no record mixes two epochs and none is lost by a stop. Under torchrun rank 0 records its own batches
(its shard of each global batch); images/s counts every rank's.
"""
from __future__ import annotations

import math
import time

import torch

from lib.store.run_folder import RunFolder

TARGET_RECORDS = 2000
MAX_GAP_S = 10.0


def record_every(total_steps: int, target: int = TARGET_RECORDS) -> int:
    """Record every this many optimizer steps: at most ``target`` records over the run."""
    return max(1, math.ceil(total_steps / max(1, target)))


class StepLog:
    """Accumulates the steps since the last record and appends records to steps.jsonl."""

    def __init__(self, folder: RunFolder, optimizer: torch.optim.Optimizer, total_steps: int, world_size: int = 1,
                 enabled: bool = True):
        self.folder, self.optimizer, self.world_size, self.enabled = folder, optimizer, world_size, enabled
        self.every = record_every(total_steps)
        self.written = 0
        self._reset(time.perf_counter())

    def _reset(self, now: float) -> None:
        self.loss_sum, self.correct, self.images, self.steps, self.started = 0.0, 0.0, 0, 0, now

    def begin(self, step: int) -> None:
        """Start (step 0) or resume at ``step``: records past it are dropped, they will be re-done."""
        if self.enabled:
            self.written = self.folder.align_steps(step)

    def start_clock(self) -> None:
        """Training (re)starts now: the time before it (evaluation, loading) is no training time."""
        self._reset(time.perf_counter())

    def add(self, loss: float, correct: float, images: int, step: int, epoch: int) -> None:
        """One optimizer step done; ``step`` counts the steps done so far (1 after the first),
        ``epoch`` the epoch in progress (from 0)."""
        self.loss_sum += loss * images
        self.correct += correct
        self.images += images
        self.steps += 1
        late = time.perf_counter() - self.started >= MAX_GAP_S and self.written < TARGET_RECORDS
        if step % self.every == 0 or late:
            self.flush(step, epoch)

    def flush(self, step: int, epoch: int) -> None:
        """Write the steps since the last record (if any) as one record. Its learning rate is the
        scheduler's after the last step, as in the epoch records of metrics.jsonl."""
        if not self.steps or not self.enabled:
            self._reset(time.perf_counter())
            return
        now = time.perf_counter()
        seconds = now - self.started
        record = {"step": step, "epoch": epoch + 1, "steps": self.steps, "images": self.images,
                  "loss": self.loss_sum / self.images, "acc": self.correct / self.images,
                  "lr": self.optimizer.param_groups[0]["lr"],
                  "images_per_s": round(self.images * self.world_size / seconds, 2) if seconds > 0 else None}
        self.folder.append_steps([record])
        self.written += 1
        self._reset(now)
