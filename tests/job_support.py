"""Small real training jobs and the conditions they meet on a shared host.

A tiny model on a few identities trains an epoch in well under a second on a
CPU, so tests can run real `python -m lib train` processes through the real
queue. The disk conditions are real too: a tmpfs of a few hundred KB is a full
disk, a read-only bind mount (or, for a normal user, a folder without write
permission) is a read-only runs folder.
"""
from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from lib.base import config
from lib.model.presets import PRESETS


def tiny_model() -> dict:
    """face_resnet cut to two narrow stages (16 and 32 channels, embedding 32): ~20k parameters.
    (8-channel 1x1 strided convolutions crash PyTorch's channels-last backward on some CPUs.)"""
    spec = PRESETS["face_resnet"].to_dict()
    spec["name"] = "tiny"
    spec["stem"]["out_chs"] = 16
    spec["stages"] = [dict(spec["stages"][0], out_chs=16), dict(spec["stages"][1], out_chs=32)]
    spec["head"]["embedding_dim"] = 32
    return spec


def tiny_run(name: str, epochs: int = 1, **config) -> dict:
    """A run file for a job of a few seconds: 4 identities, 1 CPU thread, resume state every second."""
    settings = {"epochs": epochs, "batch_size": 16, "lr": 0.05, "threads": 1, "resume_every_s": 1.0,
                "subset": {"classes": 4, "images": 64, "pairs": 40}}
    settings.update(config)
    return {"name": name, "model": tiny_model(), "config": settings}


def small_dataset(dest: Path, identities: int = 6, train_per: int = 8, dev_per: int = 2, pairs: int = 24) -> Path:
    """A few identities of the embedded LFW-64 copied into a new HW2P2-layout folder: what a student
    with their own (small) data would point FaceLab at, and an epoch of a second or two."""
    source = config.EMBEDDED_DATA
    people = [d.name for d in sorted((source / "cls_data" / "train").iterdir())
              if len(list(d.iterdir())) >= train_per and (source / "cls_data" / "dev" / d.name).is_dir()
              and len(list((source / "cls_data" / "dev" / d.name).iterdir())) >= dev_per][:identities]
    for split, count in (("train", train_per), ("dev", dev_per)):
        for person in people:
            target = dest / "cls_data" / split / person
            target.mkdir(parents=True)
            for image in sorted((source / "cls_data" / split / person).iterdir())[:count]:
                shutil.copy(image, target / image.name)
    lines = (source / "val_pairs.txt").read_text().splitlines()
    chosen = [line for line in lines if line.endswith(" 1")][:pairs // 2]
    chosen += [line for line in lines if line.endswith(" 0")][:pairs - len(chosen)]
    (dest / "ver_data").mkdir(parents=True)
    for name in {part for line in chosen for part in line.split()[:2]}:
        shutil.copy(source / name, dest / name)
    (dest / "val_pairs.txt").write_text("\n".join(chosen) + "\n")
    return dest


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll until predicate() is truthy; return its value, or fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f} s still waiting for: {what}")
        time.sleep(interval)


def states(queue) -> dict[str, str]:
    return {job.id: job.state for job in queue.list_jobs()}


def metric_lines(run_dir: Path) -> list[str]:
    try:
        return [line for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except OSError:
        return []


def leftover_temp_files(folder: Path) -> list[str]:
    """Temporary files of atomic writes (".name.XXXX.tmp") that a failed write left behind."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob(".*.tmp"))


def _mount(*args: str) -> bool:
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def small_disk(folder: Path, size_kb: int):
    """`folder` becomes a tmpfs of `size_kb` KB; yields True, or False where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = _mount("-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(folder))
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def grow_disk(folder: Path, size_kb: int) -> None:
    """Give a `small_disk` more room (as an operator freeing space would)."""
    assert _mount("-o", f"remount,size={size_kb}k", str(folder)), f"could not resize the tmpfs at {folder}"


@contextlib.contextmanager
def file_size_limit(max_bytes: int):
    """RLIMIT_FSIZE for this process and the children it starts meanwhile: a write past it fails
    with EFBIG (Python ignores SIGXFSZ), as on a disk that has just filled up."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@contextlib.contextmanager
def read_only(folder: Path):
    """Make `folder` read-only for this process and its children: a read-only bind mount for
    root (who ignores permission bits), or permission bits for everyone else."""
    if os.geteuid() == 0:
        if not (_mount("--bind", str(folder), str(folder))
                and _mount("-o", "remount,bind,ro", str(folder))):
            subprocess.run(["umount", str(folder)], capture_output=True)
            pytest.skip("running as root without permission to mount: cannot make a folder read-only")
        try:
            yield
        finally:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        return
    modes = {path: path.stat().st_mode for path in [folder, *folder.rglob("*")]}
    for path in modes:
        path.chmod(modes[path] & ~0o222)
    try:
        yield
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
