"""Data sets in the HW2P2 layout, decoded once into uint8 tensors.

Layout (the embedded data/lfw64 follows it)::

    cls_data/train/<identity>/*.jpg    closed-set classification, training
    cls_data/dev/<identity>/*.jpg      the same identities, held-out images
    ver_data/*.jpg                     verification images (other people)
    val_pairs.txt                      "ver_data/a.jpg ver_data/b.jpg 1|0 [fold]"
    test_pairs.txt                     optional, same without the label

Small sets are decoded once and kept in memory, so an epoch costs tensor
operations instead of JPEG decoding. The cache key includes every file's size
and modification time: editing the data on disk is noticed on the next load.
A corrupt image is skipped and listed; it never stops the rest from loading.
``check_dataset`` (lib/data/report.py) turns all of this into one report.
"""
from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF

from lib.base import config

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SPLITS = ("train", "dev")
# Decoding a whole split into memory is meant for small sets (LFW-64 needs
# ~100 MB); beyond this the loader refuses with a clear message instead of
# letting the machine swap.
MAX_IN_MEMORY_BYTES = int(os.environ.get("FACELAB_MAX_DATA_BYTES", 8 * 2**30))

_LOCK = threading.RLock()
_SPLIT_CACHE: dict[tuple, "ImageSet"] = {}
_PAIRS_CACHE: dict[tuple, "PairSet"] = {}
_STATS_CACHE: dict[tuple, tuple] = {}
_CACHE_ENTRIES = 6  # a few data sets at once; older ones are dropped


@dataclass
class ImageSet:
    """One classification split. ``labels[i]`` indexes ``classes`` (sorted train identities)."""

    images: torch.Tensor  # uint8 [N, 3, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: list[str]
    paths: list[str]  # relative to the data set root, e.g. "cls_data/train/Al_Gore/Al_Gore_0001.jpg"
    corrupt: list[str] = field(default_factory=list)  # could not be decoded: skipped
    resized: list[str] = field(default_factory=list)  # other size than the rest: resized to it
    unknown_classes: list[str] = field(default_factory=list)  # dev identities absent from train: skipped
    sizes: dict[str, int] = field(default_factory=dict)  # "HxW" -> images of that size on disk

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])


@dataclass
class PairSet:
    """Verification pairs: ``pairs[p] = (i, j)`` index ``images``; label 1 same, 0 different, -1 unknown."""

    images: torch.Tensor  # uint8 [M, 3, H, W]
    paths: list[str]  # "ver_data/x.jpg"
    pairs: torch.Tensor  # int64 [P, 2]
    labels: torch.Tensor  # int64 [P]
    problems: list[str] = field(default_factory=list)  # skipped lines, each with its line number
    corrupt: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # line number of each kept pair
    # int64 [P]: each pair's fold from the file's 4th column (LFW's pairs number them), for the
    # k-fold accuracy; None when the file has no fold column.
    folds: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.numel())


# ----------------------------------------------------------------------------- finding data sets

def has_layout(folder: Path) -> bool:
    return (Path(folder) / "cls_data" / "train").is_dir()


def find_datasets() -> list[Path]:
    """Data sets one level under each configured root (or a root that is one itself); embedded first."""
    found: list[Path] = []
    for root in config.data_roots():
        if not root.is_dir():
            continue
        candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for folder in candidates:
            folder = folder.resolve()
            # A symlink pointing out of every root is not offered: resolve_dataset refuses it too.
            if has_layout(folder) and folder not in found and _inside_roots(folder):
                found.append(folder)
    embedded = config.EMBEDDED_DATA.resolve()
    if embedded in found:
        found.remove(embedded)
        found.insert(0, embedded)
    return found


def _inside_roots(resolved: Path) -> bool:
    for root in config.data_roots():
        root = root.resolve()
        if resolved == root or root in resolved.parents:
            return True
    return False


def resolve_dataset(path: str | os.PathLike) -> Path:
    """The resolved folder, if it lies inside a configured data root; ValueError otherwise."""
    resolved = Path(path).expanduser().resolve()
    if _inside_roots(resolved):
        return resolved
    roots = ", ".join(str(r) for r in config.data_roots())
    raise ValueError(f"data set {str(path)!r} is not inside a configured data root ({roots}); "
                     f"add its parent folder to {config.DATA_ROOTS_ENV}")


# ----------------------------------------------------------------------------- decoding

def _is_image_file(entry: os.DirEntry) -> bool:
    return (entry.is_file() and not entry.name.startswith(".")
            and entry.name.lower().endswith(IMAGE_SUFFIXES))


def list_images(folder: Path) -> list[os.DirEntry]:
    """Image files directly in ``folder``, sorted by name (hidden files and other files ignored)."""
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if _is_image_file(e)), key=lambda e: e.name)


def list_identities(split_dir: Path) -> list[str]:
    """Sorted names of the identity folders of a split that hold at least one image file."""
    if not split_dir.is_dir():
        return []
    with os.scandir(split_dir) as entries:
        folders = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    return sorted(e.name for e in folders if list_images(Path(e.path)))


def decode_file(path: Path) -> torch.Tensor | None:
    """uint8 [3, H, W] (gray and RGBA images become RGB), or None if the file is not a decodable image."""
    try:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError, OSError):
        return None


def _stack(root: Path, rel_paths: list[str]) -> tuple[torch.Tensor, list[int], list[str], list[str], Counter]:
    """Decode files into one uint8 [N,3,H,W] tensor at the most common size.

    Returns (images, kept indices into rel_paths, corrupt paths, resized paths, size counts)."""
    decoded, kept, corrupt = [], [], []
    for index, rel in enumerate(rel_paths):
        image = decode_file(root / rel)
        if image is None:
            corrupt.append(rel)
        else:
            decoded.append(image)
            kept.append(index)
    sizes = Counter(f"{im.shape[-2]}x{im.shape[-1]}" for im in decoded)
    if not decoded:
        return torch.empty(0, 3, 0, 0, dtype=torch.uint8), kept, corrupt, [], sizes
    height, width = (int(v) for v in sizes.most_common(1)[0][0].split("x"))
    needed = len(decoded) * 3 * height * width
    if needed > MAX_IN_MEMORY_BYTES:
        raise ValueError(f"{root}: {len(decoded)} images of {height}x{width} need {needed / 2**30:.1f} GiB in memory, "
                         f"more than the limit of {MAX_IN_MEMORY_BYTES / 2**30:.1f} GiB (FACELAB_MAX_DATA_BYTES)")
    images = torch.empty(len(decoded), 3, height, width, dtype=torch.uint8)
    resized = []
    for slot, (index, image) in enumerate(zip(kept, decoded)):
        if tuple(image.shape[-2:]) != (height, width):
            # One tensor needs one size; an odd image is resized rather than dropped.
            image = TF.resize(image, [height, width], antialias=True)
            resized.append(rel_paths[index])
        images[slot] = image
    return images, kept, corrupt, resized, sizes


def _remember(cache: dict, key: tuple, value):
    stale = [k for k in cache if k[:-1] == key[:-1] and k != key]
    for k in stale:  # the same data set changed on disk: drop its old copy
        del cache[k]
    cache[key] = value
    while len(cache) > _CACHE_ENTRIES:
        del cache[next(iter(cache))]
    return value


def clear_cache() -> None:
    with _LOCK:
        _SPLIT_CACHE.clear()
        _PAIRS_CACHE.clear()
        _STATS_CACHE.clear()


# ----------------------------------------------------------------------------- classification splits

def _split_listing(root: Path, split: str) -> tuple[list[str], list[str], tuple]:
    """(relative paths, identity of each, fingerprint of sizes and mtimes)."""
    split_dir = root / "cls_data" / split
    paths, identities, fingerprint = [], [], []
    for identity in list_identities(split_dir):
        for entry in list_images(split_dir / identity):
            stat = entry.stat()
            paths.append(f"cls_data/{split}/{identity}/{entry.name}")
            identities.append(identity)
            fingerprint.append((entry.name, stat.st_size, stat.st_mtime_ns))
    return paths, identities, tuple(fingerprint)


def load_split(root: str | os.PathLike, split: str) -> ImageSet:
    """Decode ``cls_data/<split>`` once (cached); class order is the sorted train identities."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root).resolve()
    split_dir = root / "cls_data" / split
    if not split_dir.is_dir():
        raise ValueError(f"{root}: no folder cls_data/{split} (expected cls_data/{split}/<identity>/*.jpg)")
    classes = list_identities(root / "cls_data" / "train")
    paths, identities, fingerprint = _split_listing(root, split)
    key = (str(root), split, hash((tuple(classes), fingerprint)))
    with _LOCK:
        if key in _SPLIT_CACHE:
            return _SPLIT_CACHE[key]
        return _remember(_SPLIT_CACHE, key, _decode_split(root, classes, paths, identities))


def _decode_split(root: Path, classes: list[str], paths: list[str], identities: list[str]) -> ImageSet:
    index_of = {name: i for i, name in enumerate(classes)}
    unknown = sorted({name for name in identities if name not in index_of})
    known = [i for i, name in enumerate(identities) if name in index_of]
    paths = [paths[i] for i in known]
    identities = [identities[i] for i in known]
    images, kept, corrupt, resized, sizes = _stack(root, paths)
    labels = torch.tensor([index_of[identities[i]] for i in kept], dtype=torch.int64)
    return ImageSet(images=images, labels=labels, classes=classes, paths=[paths[i] for i in kept],
                    corrupt=corrupt, resized=resized, unknown_classes=unknown, sizes=dict(sizes))


def channel_stats(root: str | os.PathLike) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of the train split, in [0, 1] units."""
    train = load_split(root, "train")
    if len(train) == 0:
        raise ValueError(f"{root}: the train split has no decodable images, so it has no mean/std")
    key = (str(Path(root).resolve()), id(train))
    with _LOCK:
        if key in _STATS_CACHE:
            return _STATS_CACHE[key]
        total = torch.zeros(3, dtype=torch.float64)
        squares = torch.zeros(3, dtype=torch.float64)
        for chunk in train.images.split(512):  # float copies of a chunk only, not of the whole set
            values = chunk.to(torch.float64) / 255.0
            total += values.sum(dim=(0, 2, 3))
            squares += (values * values).sum(dim=(0, 2, 3))
        count = train.images.numel() / 3
        mean = total / count
        std = (squares / count - mean * mean).clamp_min(0).sqrt()
        stats = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
        return _remember(_STATS_CACHE, key, stats)


# ----------------------------------------------------------------------------- verification pairs

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
            problems.append(f"line {number}: expected {PAIRS_LINE}, got {line.strip()!r}")
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


def _is_count(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit alone also takes digits of other scripts


def _mixed_fold_column(row: PairLine, first: PairLine) -> str:
    if row.fold is None:
        return (f"line {row.line}: no fold column, but line {first.line} has one "
                f"(give every line a fold, or none)")
    return (f"line {row.line}: a fold column ({row.fold}), but line {first.line} has none "
            f"(give every line a fold, or none)")


def _inside(root: Path, rel: str) -> bool:
    target = (root / rel).resolve()
    return root in target.parents


def load_pairs(root: str | os.PathLike, pairs_file: str = "val_pairs.txt") -> PairSet:
    """Read a pairs file and decode the images it names (cached). Bad lines are skipped and listed in
    ``problems``; ValueError (with line numbers) when the file is missing or no pair is usable."""
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
    fingerprint = tuple((n, (root / n).stat().st_mtime_ns) if (root / n).is_file() else (n, None) for n in names)
    key = (str(root), pairs_file, hash((text, fingerprint)))
    with _LOCK:
        if key in _PAIRS_CACHE:
            return _PAIRS_CACHE[key]
        pair_set = _decode_pairs(root, pairs_file, rows, problems)
        return _remember(_PAIRS_CACHE, key, pair_set)


def _decode_pairs(root: Path, pairs_file: str, rows: list, problems: list[str]) -> PairSet:
    bad: dict[str, str] = {}
    named = {n for row in rows for n in (row.a, row.b)}
    for name in sorted(named):
        if not _inside(root, name):
            bad[name] = "is outside the data set folder"
        elif not (root / name).is_file():
            bad[name] = "not found"
    wanted = sorted(named - set(bad))
    images, kept, corrupt, resized, _ = _stack(root, wanted)
    bad.update({name: "could not be decoded" for name in corrupt})
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
                   corrupt=corrupt, resized=resized, lines=lines,
                   folds=None if folds[0] is None else torch.tensor(folds, dtype=torch.int64))
