"""The data check: counts, sizes and every problem of a data set, in the HW2P2 layout or
verification only (``ver_data/`` and ``val_pairs.txt`` without ``cls_data/``: no classification
splits to check, which is said, not counted as a problem).

Built on lib/data/datasets.py's loaders, so the check sees exactly what training will
see: a corrupt image the check lists is the one the loader skips, and so is a refused one
(leading outside the data set, or above the pixel limit), which is never opened or decoded.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import statistics
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lib.base import config
from lib.data.cache import cached_result
from lib.data.datasets import SPLITS, VERIFICATION_ONLY, load_split
from lib.data.images import (
    ImageRefused,
    NotAnImage,
    decoded_bytes_estimate,
    is_verification_only,
    load_image,
    outside_reason,
    scan_images,
)
from lib.data.pairs import load_pairs

PAIRS_FILES = ("val_pairs.txt", "test_pairs.txt")
LISTED = 5  # how many names a summary message spells out before "... and N more"
_LOCK = threading.Lock()
_REPORTS: dict[tuple, DataReport] = {}


@dataclass
class DataReport:
    """What ``check_dataset`` found. ``errors`` lists every problem; ``fatal`` the ones that make the
    data set unusable for training and verification (``usable`` is False when there is any)."""

    root: str
    verification_only: bool = False  # ver_data/ and pairs without cls_data/: nothing to train on
    layout: str = "HW2P2 (classification and verification)"
    classes: int = 0
    train_images: int = 0
    dev_images: int = 0
    ver_images: int = 0
    pairs: int = 0
    same_pairs: int = 0
    different_pairs: int = 0
    folds: int = 0  # folds named by val_pairs.txt's fold column (LFW's View 2 has 10); 0: no fold column
    test_pairs: int | None = None  # None: no test_pairs.txt
    images_per_class: dict[str, float] = field(default_factory=dict)  # min / median / max over train identities
    train_counts: dict[str, int] = field(default_factory=dict)  # identity -> train images
    dev_counts: dict[str, int] = field(default_factory=dict)
    image_sizes: dict[str, int] = field(default_factory=dict)  # "HxW" -> images on disk, all parts
    dev_missing_in_train: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "path: why" - outside the data set or too large, never read
    errors: list[str] = field(default_factory=list)
    fatal: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.fatal

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["usable"] = self.usable
        return out


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:LISTED])
    return shown + (f" ... and {len(items) - LISTED} more" if len(items) > LISTED else "")


def _problem(report: DataReport, message: str, fatal: bool = False) -> None:
    report.errors.append(message)
    if fatal:
        report.fatal.append(message)


def _add_corrupt(report: DataReport, paths: list[str]) -> None:
    for path in paths:
        if path not in report.corrupt:
            report.corrupt.append(path)
            _problem(report, f"{path}: not a decodable image (skipped)")


def _add_refused(report: DataReport, messages: list[str]) -> None:
    for message in messages:
        if message not in report.refused:  # the ver_data scan and the pairs may name the same file
            report.refused.append(message)
            _problem(report, message)


def _add_sizes(report: DataReport, sizes: dict[str, int]) -> None:
    for size, count in sizes.items():
        report.image_sizes[size] = report.image_sizes.get(size, 0) + count


def _check_split(root: Path, split: str, report: DataReport) -> None:
    try:
        images = load_split(root, split)
    except ValueError as error:
        _problem(report, str(error), fatal=True)
        return
    _add_refused(report, images.refused)
    _add_corrupt(report, images.corrupt)
    _add_sizes(report, images.sizes)
    if images.resized:
        height, width = images.image_size
        _problem(report, f"cls_data/{split}: {len(images.resized)} images are not {height}x{width} "
                         f"(resized on load): {_names(images.resized)}")
    counts = Counter(images.labels.tolist())
    per_class = {name: counts.get(index, 0) for index, name in enumerate(images.classes)}
    if split == "train":
        report.classes = len(images.classes)
        report.train_images = len(images)
        report.train_counts = per_class
        values = sorted(per_class.values()) or [0]
        report.images_per_class = {"min": values[0], "median": float(statistics.median(values)), "max": values[-1]}
        if report.classes < 2:
            _problem(report, f"cls_data/train: {report.classes} identities; classification needs at least 2", True)
    else:
        report.dev_images = len(images)
        report.dev_counts = {name: n for name, n in per_class.items() if n}
        report.dev_missing_in_train = images.unknown_classes
        if images.unknown_classes:
            count = len(images.unknown_classes)
            _problem(report, f"cls_data/dev: {count} {'identity is' if count == 1 else 'identities are'} not in "
                             f"train, so without a class (images skipped): {_names(images.unknown_classes)}")
        if not len(images):
            _problem(report, "cls_data/dev: no usable image; dev accuracy cannot be measured", fatal=True)


def _check_ver_folder(root: Path, report: DataReport) -> None:
    folder = root / "ver_data"
    if not folder.is_dir():
        _problem(report, f"{root}: no folder ver_data (verification images)", fatal=True)
        return
    found = _scan_ver_folder(root, folder)
    report.ver_images = sum(found["sizes"].values())
    _add_refused(report, found["refused"])
    _add_corrupt(report, found["corrupt"])
    _add_sizes(report, found["sizes"])


def _scan_ver_folder(root: Path, folder: Path) -> dict:
    """Sizes, corrupt and refused files of ver_data/. Finding the corrupt ones means decoding every
    image, so for a set too big for memory the answer is kept in the data cache, like its images."""
    listing = scan_images(folder, root)
    names = [f"ver_data/{entry.name}" for entry in listing.found]
    if decoded_bytes_estimate(root, names) <= config.in_memory_data_bytes():
        return _decode_ver_folder(root, listing)
    fingerprint = ([(entry.name, entry.stat().st_size, entry.stat().st_mtime_ns) for entry in listing.found],
                   listing.refused)
    return cached_result(root, "check:ver_data", names, fingerprint, lambda: _decode_ver_folder(root, listing))


def _decode_ver_folder(root: Path, listing) -> dict:
    sizes, corrupt, refused = Counter(), [], list(listing.refused)
    for entry in listing.found:
        try:
            image = load_image(Path(entry.path), root)
        except ImageRefused as why:
            refused.append(f"ver_data/{entry.name}: {why}")
        except NotAnImage:
            corrupt.append(f"ver_data/{entry.name}")
        else:
            sizes[f"{image.shape[-2]}x{image.shape[-1]}"] += 1
    return {"sizes": dict(sizes), "corrupt": corrupt, "refused": refused}


def _check_pairs(root: Path, name: str, report: DataReport) -> None:
    required = name == "val_pairs.txt"
    if not (root / name).is_file():
        if required:
            _problem(report, f"{root}: no {name} (verification pairs)", fatal=True)
        return
    try:
        pairs = load_pairs(root, name)
    except ValueError as error:
        _problem(report, str(error), fatal=required)
        return
    for message in pairs.problems:
        _problem(report, f"{name} {message}")
    _add_refused(report, pairs.refused)
    _add_corrupt(report, pairs.corrupt)
    labels = pairs.labels.tolist()
    if not required:
        report.test_pairs = len(labels)
        return
    report.pairs = len(labels)
    report.same_pairs = labels.count(1)
    report.different_pairs = labels.count(0)
    unlabeled = [line for line, label in zip(pairs.lines, labels) if label < 0]
    if unlabeled:
        lines = _names([str(n) for n in unlabeled])
        _problem(report, f"{name}: {len(unlabeled)} pairs have no 1/0 label (lines {lines})")
    if not report.same_pairs or not report.different_pairs:
        _problem(report, f"{name}: needs both same (1) and different (0) pairs to measure verification", fatal=True)
    _check_folds(name, pairs, report)


def _check_folds(name: str, pairs, report: DataReport) -> None:
    """A fold column with a single fold leaves the k-fold accuracy nothing to train a threshold on."""
    if pairs.folds is None:
        return
    folds = sorted(set(pairs.folds[pairs.labels >= 0].tolist()))
    report.folds = len(folds)
    if len(folds) < 2:
        _problem(report, f"{name}: the fold column names {len(folds)} fold ({', '.join(map(str, folds))}); "
                         f"k-fold accuracy needs at least 2, so it is not measured")


def _fingerprint(root: Path) -> tuple:
    """Names, sizes and modification times of every file the check reads: any change on disk changes it.
    Folders leading outside the data set are not listed, and links leading outside count by themselves
    (lstat), not by what they point at."""
    entries = []
    folders = [root / "ver_data", root] + [identity for split in SPLITS
                                           if _stays_inside(root / "cls_data" / split, root)
                                           for identity in sorted((root / "cls_data" / split).iterdir())]
    for folder in folders:
        if _stays_inside(folder, root):
            with os.scandir(folder) as scan:
                entries += sorted(_file_state(entry, root) for entry in scan
                                  if entry.is_symlink() or entry.is_file(follow_symlinks=False))
    return tuple(entries), config.max_image_pixels()


def _stays_inside(folder: Path, root: Path) -> bool:
    return folder.is_dir() and outside_reason(folder, root) is None


def _file_state(entry: os.DirEntry, root: Path) -> tuple:
    """(path, size, mtime) of the file a link leads to when it stays inside; of the link itself otherwise."""
    leads_outside = entry.is_symlink() and outside_reason(Path(entry.path), root) is not None
    follow = not leads_outside and entry.is_file()
    info = entry.stat(follow_symlinks=follow)
    return entry.path, info.st_size, info.st_mtime_ns


def clear_report_cache() -> None:
    """Forget the reports computed in this process (the next check reads the files again)."""
    with _LOCK:
        _REPORTS.clear()


def check_dataset(root: str | os.PathLike) -> DataReport:
    """The report, recomputed only when a file of the data set changed (the UI asks on every rerun)."""
    root = Path(root).expanduser().resolve()
    key = (str(root), hash(_fingerprint(root)) if root.is_dir() else None)
    with _LOCK:
        if key not in _REPORTS:
            _REPORTS.clear()  # one report is enough: the page shows one data set at a time
            _REPORTS[key] = _build(root)
        return copy.deepcopy(_REPORTS[key])


def _build(root: Path) -> DataReport:
    report = DataReport(root=str(root))
    if not root.is_dir():
        _problem(report, f"{root}: folder not found", fatal=True)
        return report
    if is_verification_only(root):
        report.verification_only, report.layout = True, VERIFICATION_ONLY
    else:
        for split in SPLITS:
            _check_split(root, split, report)
    _check_ver_folder(root, report)
    for name in PAIRS_FILES:
        _check_pairs(root, name, report)
    return report
