"""Verification pairs: the pairs file format (its one owner) and the pairs loaded with their images.

A pairs file has one pair a line::

    ver_data/a.jpg ver_data/b.jpg 1      same person (0: different people)
    ver_data/a.jpg ver_data/b.jpg 1 3    the same, in fold 3 (LFW's View 2 numbers ten folds)
    ver_data/a.jpg ver_data/b.jpg        unlabeled (test_pairs.txt)

The fold column is optional but all or nothing; when present, the k-fold accuracy
uses those folds instead of its own. Images are read through lib/data/images.py:
a name leading outside the data set, or an image above the pixel limit, is never
opened, and the line is skipped and listed with its number.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from lib.base import config
from lib.data.cache import Progress, stderr_progress
from lib.data.images import outside_reason, remember, stack_images

_LOCK = threading.RLock()
_PAIRS_CACHE: dict[tuple, "PairSet"] = {}


@dataclass
class PairSet:
    """Verification pairs: ``pairs[p] = (i, j)`` index ``images``; label 1 same, 0 different, -1 unknown."""

    images: torch.Tensor  # uint8 [M, 3, H, W]
    paths: list[str]  # "ver_data/x.jpg"
    pairs: torch.Tensor  # int64 [P, 2]
    labels: torch.Tensor  # int64 [P]
    problems: list[str] = field(default_factory=list)  # skipped lines, each with its line number
    corrupt: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "path: why" - images above the pixel limit
    resized: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # line number of each kept pair
    # int64 [P]: each pair's fold from the file's 4th column (LFW's pairs number them), for the
    # k-fold accuracy; None when the file has no fold column.
    folds: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.numel())



PAIRS_LINE = "'ver_data/a.jpg ver_data/b.jpg 1|0 [fold]'"


class PairLine(NamedTuple):
    """One well-formed line of a pairs file."""

    line: int  # its number in the file, from 1
    a: str
    b: str
    label: int  # 1 same, 0 different, -1 not given
    fold: int | None  # the optional 4th column; None when the line has none


def parse_pairs_text(text: str) -> tuple[list[PairLine], list[str]]:
    """Lines "a b [1|0 [fold]]" -> [PairLine] and messages for malformed lines.

    Blank lines and lines starting with '#' are ignored; a missing label is -1. The fold
    column is all or nothing: the first well-formed line decides whether the file has one,
    and a line that differs from it is reported and skipped (its pair would have no fold).
    """
    rows, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        row = _pair_line(number, parts)
        if row is None:
            problems.append(f"line {number}: expected {PAIRS_LINE}, got {_quoted_line(line)}")
        elif rows and (row.fold is None) != (rows[0].fold is None):
            problems.append(_mixed_fold_column(row, rows[0]))
        else:
            rows.append(row)
    return rows, problems


def _pair_line(number: int, parts: list[str]) -> PairLine | None:
    """The line's pair, or None when its columns are not "a b", "a b 1|0" or "a b 1|0 fold"."""
    if len(parts) == 2:
        return PairLine(number, parts[0], parts[1], -1, None)
    has_fold = len(parts) == 4
    if len(parts) not in (3, 4) or parts[2] not in ("0", "1") or (has_fold and not _is_count(parts[3])):
        return None
    return PairLine(number, parts[0], parts[1], int(parts[2]), int(parts[3]) if has_fold else None)


# Folds number a few splits (LFW has 10); without a limit, a 20-digit "fold" would overflow the int64 fold tensor.
_MAX_FOLD_DIGITS = 6


def _is_count(text: str) -> bool:
    # str.isdigit alone also takes digits of other scripts
    return text.isascii() and text.isdigit() and len(text) <= _MAX_FOLD_DIGITS


def _quoted_line(line: str, limit: int = 80) -> str:
    """A malformed line as a problem message quotes it: stripped, and cut to ``limit`` characters."""
    text = line.strip()
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _mixed_fold_column(row: PairLine, first: PairLine) -> str:
    if row.fold is None:
        return (f"line {row.line}: no fold column, but line {first.line} has one "
                f"(give every line a fold, or none)")
    return (f"line {row.line}: a fold column ({row.fold}), but line {first.line} has none "
            f"(give every line a fold, or none)")


def _inside(root: Path, rel: str) -> bool:
    target = (root / rel).resolve()
    return root in target.parents


def _resolve_in(path: Path, resolved_folders: dict[Path, Path]) -> Path:
    """``path.resolve()``, resolving each folder once: pairs name thousands of files in a few folders."""
    if path.name in ("", "..") or path.is_symlink():
        return path.resolve()
    if path.parent not in resolved_folders:
        resolved_folders[path.parent] = path.parent.resolve()
    return resolved_folders[path.parent] / path.name


def _name_problems(root: Path, names: list[str]) -> dict[str, str]:
    """Why files named by a pairs file cannot be used, checked without opening them: name -> why."""
    problems, resolved_folders = {}, {}
    for name in names:
        try:
            reason = outside_reason(root / name, root, _resolve_in(root / name, resolved_folders))
        except ValueError:  # a NUL byte in the name
            reason = "is not a file name"
        if reason or not (root / name).is_file():
            problems[name] = reason or "not found"
    return problems


def load_pairs(root: str | os.PathLike, pairs_file: str = "val_pairs.txt", progress: Progress | None = None) -> PairSet:
    """Read a pairs file and decode the images it names (cached; a large set in the data cache on disk,
    lib/data/cache.py). Bad lines are skipped and listed in ``problems``; ValueError (with line numbers)
    when the file is missing or no pair is usable. ``progress(done, total)`` hears of a decode into
    the data cache (default: lines on stderr)."""
    root = Path(root).resolve()
    file = root / pairs_file
    # The name may come from the UI: a file outside the data set is never read (its lines
    # would be echoed back in the problems list).
    if not _inside(root, pairs_file):
        raise ValueError(f"pairs file {pairs_file!r} is outside the data set folder {root}")
    if not file.is_file():
        raise ValueError(f"{root}: pairs file {pairs_file!r} not found")
    text = file.read_text(encoding="utf-8", errors="replace")
    rows, problems = parse_pairs_text(text)
    names = sorted({name for row in rows for name in (row.a, row.b)})
    unusable = _name_problems(root, names)
    # Only files inside the data set are looked at, not even stat()ed otherwise.
    fingerprint = tuple((n, None) if n in unusable else (n, *_size_and_time(root / n)) for n in names)
    key = (str(root), pairs_file, hash((text, fingerprint, config.max_image_pixels())))
    with _LOCK:
        if key in _PAIRS_CACHE:
            return _PAIRS_CACHE[key]
        decoded = _decode_images(root, pairs_file, names, unusable, fingerprint, progress)
        pair_set = _pair_up(root, pairs_file, rows, problems, unusable, decoded)
        return remember(_PAIRS_CACHE, key, pair_set)


def _size_and_time(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


def _decode_images(root: Path, pairs_file: str, names: list[str], unusable: dict[str, str], fingerprint, progress):
    """(the usable names in order, their decoded stack), from the data cache when they are many."""
    wanted = [name for name in names if name not in unusable]
    progress = progress or stderr_progress(f"{root.name}/{pairs_file}")
    return wanted, stack_images(root, wanted, f"pairs:{pairs_file}", fingerprint, progress)


def _pair_up(root: Path, pairs_file: str, rows: list, problems: list[str], unusable: dict[str, str],
             decoded) -> PairSet:
    wanted, (images, kept, corrupt, refused, resized, *_) = decoded
    bad = dict(unusable)
    bad.update({name: "could not be decoded" for name in corrupt})
    bad.update(refused)
    position = {wanted[i]: slot for slot, i in enumerate(kept)}
    pairs, labels, lines, folds = [], [], [], []
    for row in rows:
        missing = [f"{n!r} {bad[n]}" for n in (row.a, row.b) if n in bad]
        if missing:
            problems.append(f"line {row.line}: " + "; ".join(missing))
            continue
        pairs.append((position[row.a], position[row.b]))
        labels.append(row.label)
        lines.append(row.line)
        folds.append(row.fold)
    problems.sort(key=lambda message: int(message.split(":")[0].split()[1]))
    if not pairs:
        listed = "; ".join(problems[:5]) + (f"; ... {len(problems) - 5} more" if len(problems) > 5 else "")
        detail = f" ({listed})" if listed else " (the file is empty)"
        raise ValueError(f"{root / pairs_file}: no usable pair{detail}")
    return PairSet(images=images, paths=[wanted[i] for i in kept],
                   pairs=torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2),
                   labels=torch.tensor(labels, dtype=torch.int64), problems=problems,
                   corrupt=corrupt, refused=[f"{path}: {why}" for path, why in refused.items()],
                   resized=resized, lines=lines,
                   folds=None if folds[0] is None else torch.tensor(folds, dtype=torch.int64))


def clear_pairs_cache() -> None:
    with _LOCK:
        _PAIRS_CACHE.clear()
