"""The run folder: the one module that knows its files, and reads and writes them.

`python -m lib train RUN.json --out DIR` (lib/train/engine.py) fills DIR; a job queued
from the app gets DIR = runs/<job id> (lib/jobs/queue.py):

    DIR/run.json          the run as submitted from the app: {"name", "model", "config"}
    DIR/config.json       the TrainConfig (and run name) the engine started this folder with
    DIR/log.txt           stdout and stderr of the training process, appended by each launch
    DIR/metrics.jsonl     one JSON object per finished epoch
    DIR/steps.jsonl       one JSON object every few training steps (loss, accuracy, lr, speed)
    DIR/probes.json       the probe images (dev paths and identities) embedded after every epoch
    DIR/probes/epoch_0003.npy   their L2-normalized embeddings after epoch 3, float32 [N, D]
    DIR/progress.json     status for the Runs page, rewritten atomically every few seconds
    DIR/last/ DIR/best/   checkpoints (lib/store/checkpoint.py): the latest epoch, the best AUC
    DIR/resume/state.pt   model, loss, optimizer, scheduler, scaler, EMA, RNG states, epoch, step

Beside the run folders, a Slurm job's own files (submitit's pickled call, Slurm's stdout and
stderr) go to ``runs/.slurm/<job id>/``, a dot folder that ``run_folders`` skips.

Pages read a folder while a job writes it, or after a job crashed: every reader
tolerates a missing or half-written file and gives an empty result, never an error.
Only the resume state is strict, since resuming from nothing has to say so.

The resume file holds only tensors, numbers, strings and containers of them, so
it loads with ``torch.load(weights_only=True)``: opening it runs no code.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from lib.base.files import atomic_save_npy, atomic_torch_save, atomic_write_json, atomic_write_text
from lib.model.presets import PRESETS
from lib.store.meta import peek_meta

PROGRESS_EVERY_S = 2.0
RUN_FILE = "run.json"
CONFIG_FILE = "config.json"
LOG_FILE = "log.txt"
METRICS_FILE = "metrics.jsonl"
PROGRESS_FILE = "progress.json"
LAST_DIR = "last"
BEST_DIR = "best"
RESUME_FILE = "resume/state.pt"
STEPS_FILE = "steps.jsonl"
PROBES_FILE = "probes.json"
PROBES_DIR = "probes"
# steps.jsonl never holds more lines than this (the engine writes at most about half as many):
# a reader stops there, so a damaged or foreign file cannot make a page slow.
MAX_STEP_RECORDS = 5000


def parse_metrics(text: str) -> list[dict]:
    """The epochs of a metrics.jsonl text, in epoch order. A line cut short by a crash is
    skipped, and a resumed run that repeated an epoch it had started keeps its latest record."""
    by_epoch: dict = {}
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            by_epoch[record.get("epoch", len(by_epoch))] = record
    return [by_epoch[key] for key in sorted(by_epoch, key=_epoch_order)]


def parse_steps(text: str) -> list[dict]:
    """The records of a steps.jsonl text with a whole-number "step", in step order, at most
    MAX_STEP_RECORDS; a line cut short by a crash or without a step is skipped, and a step recorded
    twice keeps its latest record."""
    by_step: dict[int, dict] = {}
    for line in text.splitlines()[:MAX_STEP_RECORDS]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            by_step[record["step"]] = record
    return [by_step[step] for step in sorted(by_step)]


def _epoch_order(epoch) -> float:
    return float(epoch) if isinstance(epoch, (int, float)) else math.inf


def _read_object(path: Path) -> dict:
    """A JSON object from a file; {} when the file is missing, half written or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _spec_dict(model) -> dict | None:
    """A model spec as a dict, from a dict or a preset's name."""
    if isinstance(model, dict):
        return model
    if isinstance(model, str) and model in PRESETS:
        return PRESETS[model].to_dict()
    return None


def run_folders(runs_dir: str | Path) -> list[RunFolder]:
    """The run folders inside a runs folder, by name (a job's id starts with its date)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return [RunFolder(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]


class RunFolder:
    """Reads and writes the files of one run folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.run_file = self.folder / RUN_FILE
        self.config_file = self.folder / CONFIG_FILE
        self.log_file = self.folder / LOG_FILE
        self.metrics_file = self.folder / METRICS_FILE
        self.progress_file = self.folder / PROGRESS_FILE
        self.last = self.folder / LAST_DIR
        self.best = self.folder / BEST_DIR
        self.resume_file = self.folder / RESUME_FILE
        self.steps_file = self.folder / STEPS_FILE
        self.probes_file = self.folder / PROBES_FILE
        self.probes_dir = self.folder / PROBES_DIR
        self._progress_written = 0.0

    @property
    def id(self) -> str:
        """The folder's name: a job's id for runs started from the app."""
        return self.folder.name

    def create(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    # -- what the run is --------------------------------------------------------------------
    def write_run(self, run: dict) -> None:
        atomic_write_json(self.run_file, run)

    def read_run(self) -> dict:
        return _read_object(self.run_file)

    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config_file, config)

    def read_config(self) -> dict:
        return _read_object(self.config_file)

    def train_config(self) -> dict:
        """The training settings: config.json once the engine started, else the submitted run's."""
        config = self.read_config() or self.read_run().get("config")
        return config if isinstance(config, dict) else {}

    def run_name(self) -> str:
        """The name the run was given (config.json, else run.json); "" when neither says."""
        for saved in (self.read_config(), self.read_run()):
            name = saved.get("name")
            if isinstance(name, str) and name.strip():
                return name.strip()
        return ""

    def label(self) -> str:
        """"run <id> (<name>)" for a list of checkpoints; the id alone when the name adds nothing."""
        name = self.run_name()
        return f"run {self.id}" + (f" ({name})" if name and name != self.id else "")

    def spec(self) -> dict | None:
        """The model spec the run trains: from its checkpoint when it has one (the classifier
        sized to the data), else from the engine's config.json or the submitted run.json."""
        for checkpoint in (self.best, self.last):
            meta = peek_meta(checkpoint)
            if meta is not None:
                return meta.spec.to_dict()
        for path in (self.config_file, self.run_file):
            spec = _spec_dict(_read_object(path).get("model"))
            if spec is not None:
                return spec
        return None

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
        return _read_object(self.progress_file)

    def progress_written_at(self) -> float | None:
        """When progress.json was last written (a timestamp), None when there is none."""
        try:
            return self.progress_file.stat().st_mtime
        except OSError:
            return None

    # -- metrics ----------------------------------------------------------------------------
    def read_metrics(self) -> list[dict]:
        """One dict per finished epoch (see parse_metrics); a line being written now is skipped."""
        try:
            return parse_metrics(self.metrics_file.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return []

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def align_metrics(self, records: list[dict]) -> None:
        """Make metrics.jsonl hold exactly ``records`` (the epochs the resume state has finished)."""
        atomic_write_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in records))

    # -- steps ------------------------------------------------------------------------------
    def read_steps(self) -> list[dict]:
        """The step records (see parse_steps); [] for a run without the file (older runs)."""
        try:
            return parse_steps(self.steps_file.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return []

    def append_steps(self, records: list[dict]) -> None:
        if records:
            with open(self.steps_file, "a", encoding="utf-8") as handle:
                handle.write("".join(json.dumps(record) + "\n" for record in records))

    def align_steps(self, step: int) -> int:
        """Keep only the records up to ``step`` (a resumed run re-does the steps after its resume
        state, which would record them twice); returns how many are kept."""
        kept = [record for record in self.read_steps() if record["step"] <= step]
        atomic_write_text(self.steps_file, "".join(json.dumps(record) + "\n" for record in kept))
        return len(kept)

    # -- probe embeddings -------------------------------------------------------------------
    def write_probe_index(self, paths: list[str], identities: list[str]) -> None:
        atomic_write_json(self.probes_file, {"paths": list(paths), "identities": list(identities)})

    def read_probe_index(self) -> dict:
        """{"paths": [...], "identities": [...]} of the probe images, {} when missing or unusable."""
        index = _read_object(self.probes_file)
        paths, identities = index.get("paths"), index.get("identities")
        if not isinstance(paths, list) or not isinstance(identities, list) or len(paths) != len(identities):
            return {}
        return {"paths": [str(p) for p in paths], "identities": [str(i) for i in identities]}

    def probe_file(self, epoch: int) -> Path:
        return self.probes_dir / f"epoch_{epoch:04d}.npy"

    def save_probe_embeddings(self, epoch: int, embeddings) -> None:
        self.probes_dir.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(self.probe_file(epoch), np.asarray(embeddings, dtype=np.float32))

    def read_probe_embeddings(self) -> dict[int, np.ndarray]:
        """Epoch -> probe embeddings [N, D] for every epoch saved; a file that cannot be read, or of
        another shape than the first, is left out."""
        found: dict[int, np.ndarray] = {}
        for path in sorted(self.probes_dir.glob("epoch_*.npy")) if self.probes_dir.is_dir() else []:
            try:
                epoch, values = int(path.stem.split("_")[1]), np.load(path, allow_pickle=False)
            except (OSError, ValueError, IndexError):
                continue
            first = next(iter(found.values()), values)
            if values.ndim == 2 and values.shape == first.shape:
                found[epoch] = values
        return found

    def align_probes(self, epoch: int) -> None:
        """Remove the probe embeddings of epochs after ``epoch`` (a resume re-does them; a new run
        in this folder starts at 0)."""
        for path in sorted(self.probes_dir.glob("epoch_*.npy")) if self.probes_dir.is_dir() else []:
            try:
                later = int(path.stem.split("_")[1]) > epoch
            except (ValueError, IndexError):
                continue
            if later:
                path.unlink(missing_ok=True)

    # -- log --------------------------------------------------------------------------------
    def open_log(self) -> BinaryIO:
        """log.txt opened for appending bytes: each launch adds to what earlier ones wrote."""
        return self.log_file.open("ab")

    def log_tail(self, lines: int = 30, max_chars: int = 6000) -> str:
        """The last lines of the log, reading only its end (a long run's log grows large)."""
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(0, 2)
                handle.seek(max(0, handle.tell() - max_chars))
                text = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- resume -----------------------------------------------------------------------------
    def has_resume(self) -> bool:
        """The engine saved a resume state (after an epoch, a cancel, or every few minutes)."""
        return self.resume_file.is_file()

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
