"""Where FaceLab finds its data, runs and checkpoints.

Everything is a path under the project or under a root the operator configured
through an environment variable: a user in the browser picks among these,
never types a path of their own.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_DATA = PROJECT_ROOT / "data" / "lfw64"
CHECKPOINTS_DIR = PROJECT_ROOT / "checkpoints"
RECIPES_DIR = PROJECT_ROOT / "recipes"

DATA_ROOTS_ENV = "FACELAB_DATA_ROOTS"
RUNS_DIR_ENV = "FACELAB_RUNS_DIR"


def data_roots() -> list[Path]:
    """Folders whose sub-folders may hold data sets: the project's data/ plus
    every folder named in FACELAB_DATA_ROOTS (separated like PATH)."""
    roots = [EMBEDDED_DATA.parent]
    for part in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep):
        if part.strip():
            roots.append(Path(part.strip()).expanduser().resolve())
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def runs_dir() -> Path:
    """Folder for training runs and the job registry (created on demand)."""
    configured = os.environ.get(RUNS_DIR_ENV, "").strip()
    path = Path(configured).expanduser() if configured else PROJECT_ROOT / "runs"
    return path.resolve()
