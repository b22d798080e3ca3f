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
MAX_IMAGE_PIXELS_ENV = "FACELAB_MAX_IMAGE_PIXELS"
# Faces are 64..250 px a side and even a 4K photo has 8.3 M pixels, so 4096x4096 refuses no
# real picture; yet it caps one decode at 48 MiB, where a 400 KB PNG may declare 20000x20000
# (1.2 GB decoded) and a few of those would exhaust a shared host.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
INSTRUCTORS_ENV = "FACELAB_INSTRUCTORS"


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


def instructors() -> tuple[str, ...]:
    """Names or e-mail addresses of the people who may cancel, stop and resume anyone's
    job (not only their own): FACELAB_INSTRUCTORS, separated by commas; none by default."""
    names = (part.strip() for part in os.environ.get(INSTRUCTORS_ENV, "").split(","))
    return tuple(name for name in names if name)


def max_image_pixels() -> int:
    """Width x height above which an image is refused before it is decoded."""
    configured = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not configured:
        return DEFAULT_MAX_IMAGE_PIXELS
    if not (configured.isascii() and configured.isdigit()) or int(configured) < 1:
        raise ValueError(f"{MAX_IMAGE_PIXELS_ENV} must be a positive whole number of pixels, got {configured!r}")
    return int(configured)
