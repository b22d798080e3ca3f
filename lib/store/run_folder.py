"""The run folder's files, and the state that makes a resumed run continue exactly.

    DIR/config.json       the TrainConfig (and run name) this folder was started with
    DIR/metrics.jsonl     one JSON object per finished epoch
    DIR/progress.json     status for the Runs page, rewritten atomically every few seconds
    DIR/last/ DIR/best/   checkpoints (lib/store/checkpoint.py)
    DIR/resume/state.pt   model, loss, optimizer, scheduler, scaler, EMA, RNG states, epoch, step

The resume file holds only tensors, numbers, strings and containers of them, so
it loads with ``torch.load(weights_only=True)``: opening it runs no code.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from lib.base.files import atomic_torch_save, atomic_write_json, atomic_write_text

STATUSES = ("running", "done", "failed", "cancelled")
PROGRESS_EVERY_S = 2.0


def rng_state() -> dict:
    """Every random generator the run draws from, in weights_only-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    np.random.set_state((saved["kind"], saved["keys"].numpy().astype(np.uint32), saved["pos"],
                         saved["has_gauss"], saved["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunFolder:
    """Reads and writes the files of one run folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.config_file = self.folder / "config.json"
        self.metrics_file = self.folder / "metrics.jsonl"
        self.progress_file = self.folder / "progress.json"
        self.last = self.folder / "last"
        self.best = self.folder / "best"
        self.resume_file = self.folder / "resume" / "state.pt"
        self._progress_written = 0.0

    def create(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    # -- progress ---------------------------------------------------------------------------
    def write_progress(self, force: bool = False, **fields) -> bool:
        """Rewrite progress.json (at most every PROGRESS_EVERY_S unless forced); True if written."""
        now = time.time()
        if not force and now - self._progress_written < PROGRESS_EVERY_S:
            return False
        fields.setdefault("updated", now)
        atomic_write_json(self.progress_file, fields)
        self._progress_written = now
        return True

    def read_progress(self) -> dict:
        try:
            return json.loads(self.progress_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    # -- metrics ----------------------------------------------------------------------------
    def read_metrics(self) -> list[dict]:
        if not self.metrics_file.is_file():
            return []
        records = []
        for line in self.metrics_file.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash
        return records

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def align_metrics(self, records: list[dict]) -> None:
        """Make metrics.jsonl hold exactly ``records`` (the epochs the resume state has finished)."""
        atomic_write_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in records))

    # -- resume -----------------------------------------------------------------------------
    def save_resume(self, state: dict) -> None:
        self.resume_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(state, self.resume_file)

    def load_resume(self) -> dict:
        if not self.resume_file.is_file():
            raise ValueError(f"{self.folder}: nothing to resume (no resume/state.pt); start the run again instead")
        try:
            return torch.load(self.resume_file, map_location="cpu", weights_only=True)
        except Exception as err:  # an unreadable file: say so rather than show a pickle traceback
            raise ValueError(f"{self.resume_file}: cannot be read ({err})") from None
