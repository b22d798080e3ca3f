"""Where checkpoints are: the demo checkpoints shipped in checkpoints/, and the best
checkpoint of every run in the runs folder."""
from __future__ import annotations

from pathlib import Path

from lib.base import config
from lib.store.checkpoint import is_checkpoint
from lib.store.run_folder import run_folders


def list_checkpoints() -> list[tuple[str, Path]]:
    """(label, folder): demo checkpoints under checkpoints/, then each run's best checkpoint."""
    found: list[tuple[str, Path]] = []
    if config.CHECKPOINTS_DIR.is_dir():
        for folder in sorted(p for p in config.CHECKPOINTS_DIR.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if is_checkpoint(folder):
                found.append((folder.name, folder))
    for run in run_folders(config.runs_dir()):
        if is_checkpoint(run.best):
            found.append((run.label(), run.best))
    return found
