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
LOGIN_ENV = "FACELAB_REQUIRE_LOGIN"  # "1": the app is shared behind a sign-in (see app.py)
# The course's limit on a HW2P2 model's size; the Build page's budget starts here.
PARAMETER_BUDGET = 35_000_000
MAX_BATCH_ACTIVATION_BYTES_ENV = "FACELAB_MAX_BATCH_ACTIVATION_BYTES"
# What one batch's layers may write (float32 values of every layer, as lib/model/profile.py counts
# them: what training keeps for the backward pass). The face presets at 112x112 write at most
# 54 MiB per image, 3.4 GiB for a batch of 64; a 4,096-channel stem at 64x64 writes 192 MiB.
DEFAULT_MAX_BATCH_ACTIVATION_BYTES = 8 * 2**30
MAX_MACS_PER_IMAGE_ENV = "FACELAB_MAX_MACS_PER_IMAGE"
# Multiply-accumulates of one image's forward pass: every preset, even ImageNet's at 224x224
# (ConvNeXt-T: 4.5 G), passes; far beyond that a CPU host spends minutes per batch.
DEFAULT_MAX_MACS_PER_IMAGE = 10 * 10**9
# The course's cut-offs and leaderboard split: defaults in lib/eval/cutoffs.toml, a TOML file
# named here overrides them. The hidden test labels live wherever the instructor puts them,
# outside every data root (lib/eval/cutoffs.py refuses them there).
CUTOFFS_ENV = "FACELAB_CUTOFFS"
TEST_LABELS_ENV = "FACELAB_TEST_LABELS"
LEADERBOARD_DATA_ENV = "FACELAB_LEADERBOARD_DATA"
DATA_CACHE_ENV = "FACELAB_DATA_CACHE_DIR"  # decoded data sets too big for memory (lib/data/cache.py)
IN_MEMORY_DATA_BYTES_ENV = "FACELAB_IN_MEMORY_DATA_BYTES"
# A split or pairs set whose decoded images take at most this stays in memory (LFW-64's train
# split takes 50 MB); a larger one is decoded once into the data cache and memory-mapped, so a
# process holds only the images it touches whatever the data set's size.
DEFAULT_IN_MEMORY_DATA_BYTES = 128 * 2**20


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


def _configured_path(name: str) -> Path | None:
    configured = os.environ.get(name, "").strip()
    return Path(configured).expanduser().resolve() if configured else None


def cutoffs_file() -> Path | None:
    """The operator's TOML file of cut-offs and leaderboard settings (FACELAB_CUTOFFS); None: the defaults."""
    return _configured_path(CUTOFFS_ENV)


def test_labels_file() -> Path | None:
    """The hidden labels of the test pairs (FACELAB_TEST_LABELS), read only by the leaderboard; None: none.
    Absolute but not resolved: the leaderboard checks where the name points and where its links lead."""
    configured = os.environ.get(TEST_LABELS_ENV, "").strip()
    return Path(os.path.abspath(Path(configured).expanduser())) if configured else None


def leaderboard_data() -> Path | None:
    """The data set whose test_pairs.txt the hidden labels belong to (FACELAB_LEADERBOARD_DATA)."""
    return _configured_path(LEADERBOARD_DATA_ENV)


def max_image_pixels() -> int:
    """Width x height above which an image is refused before it is decoded."""
    return positive_whole_number(MAX_IMAGE_PIXELS_ENV, DEFAULT_MAX_IMAGE_PIXELS, "pixels")


PROJECTED_FACES_ENV = "FACELAB_PROJECTED_FACES"
DEFAULT_PROJECTED_FACES = 5000  # UMAP takes about 20 s for this many on a CPU; more draws a blur


def projected_faces() -> int:
    """How many faces the Embeddings page projects and draws at first (a fixed sample of more)."""
    return positive_whole_number(PROJECTED_FACES_ENV, DEFAULT_PROJECTED_FACES, "faces")


def data_cache_dir() -> Path:
    """Folder of the decoded data sets (FACELAB_DATA_CACHE_DIR; default .cache/data in the project).
    Deleting it is safe: each set is decoded again on its next load."""
    configured = os.environ.get(DATA_CACHE_ENV, "").strip()
    return Path(configured).expanduser() if configured else PROJECT_ROOT / ".cache" / "data"


def in_memory_data_bytes() -> int:
    """Decoded bytes up to which a data set's images are kept in memory instead of memory-mapped."""
    return positive_whole_number(IN_MEMORY_DATA_BYTES_ENV, DEFAULT_IN_MEMORY_DATA_BYTES, "bytes")


DECODE_DEVICE_ENV = "FACELAB_DECODE_DEVICE"
# Where the JPEGs of a set built into the data cache are decoded: "cuda" (nvjpeg, in batches),
# "cpu" (one file at a time, libjpeg-turbo), or "auto": cuda when a working GPU decoder is found.
DECODE_DEVICES = ("auto", "cpu", "cuda")


def decode_device() -> str:
    """Where the data cache's JPEGs are decoded (FACELAB_DECODE_DEVICE): "auto" (default), "cpu" or "cuda"."""
    value = os.environ.get(DECODE_DEVICE_ENV, "").strip().lower() or "auto"
    if value not in DECODE_DEVICES:
        raise ValueError(f"{DECODE_DEVICE_ENV} must be one of {', '.join(DECODE_DEVICES)}, got {value!r}")
    return value


def max_batch_activation_bytes() -> int:
    """Bytes of activations one batch may write before a forward pass or a training job is refused."""
    return positive_whole_number(MAX_BATCH_ACTIVATION_BYTES_ENV, DEFAULT_MAX_BATCH_ACTIVATION_BYTES, "bytes")


def max_macs_per_image() -> int:
    """Multiply-accumulates one image's forward pass may take before a model is refused."""
    return positive_whole_number(MAX_MACS_PER_IMAGE_ENV, DEFAULT_MAX_MACS_PER_IMAGE, "MACs")


def positive_whole_number(env: str, default: int, unit: str) -> int:
    """The setting ``env`` as a positive whole number of ``unit``; ``default`` when unset; ValueError
    naming the variable when it is anything else."""
    configured = os.environ.get(env, "").strip()
    if not configured:
        return default
    if not (configured.isascii() and configured.isdigit()) or int(configured) < 1:
        raise ValueError(f"{env} must be a positive whole number of {unit}, got {configured!r}")
    return int(configured)


def sign_in_required() -> bool:
    """Whether the app is shared by a class behind a sign-in (FACELAB_REQUIRE_LOGIN=1)."""
    return os.environ.get(LOGIN_ENV, "").strip() == "1"


def refuse_model_code_when_shared() -> None:
    """Opening a model through its own Python code runs that code with the app's rights: fine on
    the owner's machine (the CLI, or the app with sign-in off), never on a host shared by a class."""
    if sign_in_required():
        raise ValueError(f"this FaceLab is shared ({LOGIN_ENV}=1), so it does not run a model's own Python code: "
                         "open its weights (a state dict of a torchvision architecture) or an ONNX export instead, "
                         "or use --model-code on your own machine")


# -- where training jobs run: this machine's processes, or a Slurm cluster -----------------------
LAUNCHER_ENV = "FACELAB_LAUNCHER"  # "local" (default) or "slurm"
LAUNCHERS = ("local", "slurm")
# What each Slurm job asks for: (environment variable, default, smallest value). PARTITION has no
# default: a cluster's partitions are its own. GPUS is per job (a run with gpus_per_job N > 1 asks
# for N); 0 is a CPU-only partition. TIME_MIN is the job's time limit: at its end the job saves and
# stops, and Resume continues it.
SLURM_PARTITION_ENV = "FACELAB_SLURM_PARTITION"
SLURM_NUMBERS = {"gpus": ("FACELAB_SLURM_GPUS", 1, 0), "cpus": ("FACELAB_SLURM_CPUS", 4, 1),
                 "mem_gb": ("FACELAB_SLURM_MEM_GB", 16, 1), "time_min": ("FACELAB_SLURM_TIME_MIN", 240, 1)}


def launcher() -> str:
    """How jobs run: "local" (a process on this machine) or "slurm" (FACELAB_LAUNCHER)."""
    value = os.environ.get(LAUNCHER_ENV, "").strip().lower() or "local"
    if value not in LAUNCHERS:
        raise ValueError(f"{LAUNCHER_ENV} must be one of {', '.join(LAUNCHERS)}, got {value!r}")
    return value


def slurm_settings() -> dict:
    """{"partition", "gpus", "cpus", "mem_gb", "time_min"} for Slurm jobs, from FACELAB_SLURM_*;
    ValueError naming the variable when one is missing or not a whole number."""
    partition = os.environ.get(SLURM_PARTITION_ENV, "").strip()
    if not partition or not all(c.isalnum() or c in "-_." for c in partition):
        raise ValueError(f"{SLURM_PARTITION_ENV} must name the Slurm partition jobs go to (letters, digits, "
                         f"- _ .), got {partition!r}")
    settings: dict = {"partition": partition}
    for key, (env, default, low) in SLURM_NUMBERS.items():
        text = os.environ.get(env, "").strip() or str(default)
        if not (text.isascii() and text.isdigit()) or int(text) < low:
            raise ValueError(f"{env} must be a whole number >= {low}, got {text!r}")
        settings[key] = int(text)
    return settings
