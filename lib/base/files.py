"""Atomic files and folders: the one place that writes a file so that a crash (or a full
disk) leaves either the old version or the new one, never half of one.

A file is written to a temporary name in the same folder, flushed to disk, then renamed
over its target (rename is atomic within one file system). A folder is staged beside its
target and swapped in with two renames; ``recover_folder`` undoes a swap cut short.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) entries; finished files get the usual permissions.
_FILE_MODE = 0o666 & ~_current_umask()
_DIR_MODE = 0o777 & ~_current_umask()




def _temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    os.chmod(name, _FILE_MODE)
    return Path(name)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file in the same folder, then rename it over ``path``."""
    path = Path(path)
    temp = _temp_beside(path)
    try:
        temp.write_text(text, encoding="utf-8")
        fsync_file(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_json(path: str | os.PathLike, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=json_default) + "\n")


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    path = Path(path)
    temp = _temp_beside(path)
    try:
        # Through a Python file: a full disk then surfaces as OSError(ENOSPC) (torch's own
        # writer only says "iostream error"), and the handle is closed before the unlink.
        with temp.open("wb") as handle:
            torch.save(obj, handle)
        fsync_file(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def json_default(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def staging_folder(folder: Path) -> Path:
    staged = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    os.chmod(staged, _DIR_MODE)
    return staged


def replace_folder(staged: Path, folder: Path) -> None:
    """Move the finished ``staged`` folder to ``folder``, replacing what was there.

    POSIX cannot rename a folder over a non-empty one, so the old folder is first
    renamed aside; ``recover_folder`` puts it back if we die between the two renames."""
    aside = folder.with_name(f".{folder.name}.old")
    # After a swap cut short the folder aside is the only copy: put it back first, so that
    # what is deleted below is always a spare and a crash mid-delete leaves the folder whole.
    recover_folder(folder)
    if aside.exists():
        shutil.rmtree(aside)
    if folder.exists():
        os.replace(folder, aside)
    os.replace(staged, folder)
    shutil.rmtree(aside, ignore_errors=True)


def remove_unfinished_writes(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and staged folders (".name.XXXX.tmp") that writes above left
    under ``folder`` when their process was killed mid-write; returns what was removed. Only for
    a folder whose writers have all ended: a live writer's temporary file would vanish under it.
    Folders renamed aside (".name.old") are kept: recover_folder may still need them."""
    removed = []
    for path in sorted(Path(folder).rglob(".*.tmp")):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def recover_folder(folder: Path) -> None:
    """If a replacement was interrupted after moving the old folder aside, restore it."""
    aside = folder.with_name(f".{folder.name}.old")
    if not folder.exists() and aside.is_dir():
        os.replace(aside, folder)


def atomic_save_npy(path: str | os.PathLike, values) -> None:
    """A numpy array as .npy (never pickled), written beside ``path`` and renamed over it."""
    import numpy as np

    path = Path(path)
    temp = _temp_beside(path)
    try:
        with temp.open("wb") as handle:
            np.save(handle, values, allow_pickle=False)
        fsync_file(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def file_fingerprint(path: str | os.PathLike) -> str:
    """A hash of the file's bytes, read a megabyte at a time (a cache key for weights files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]
