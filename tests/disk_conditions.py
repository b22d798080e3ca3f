"""The conditions jobs meet on a shared host, made real for the fault tests: a tmpfs of a few
hundred KB is a full disk, RLIMIT_FSIZE a disk that has just filled up, a read-only bind
mount (or, for a normal user, a folder without write permission) a read-only runs folder.
"""
from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest

from lib.store.run_folder import RunFolder


def metric_lines(run_dir: Path) -> list[str]:
    """The raw lines of a run's metrics file (a half-written last line included)."""
    try:
        return [line for line in RunFolder(run_dir).metrics_file.read_text().splitlines() if line.strip()]
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
