"""Data sets, decoded once into uint8 tensors: where they are, and their classification splits.

Two layouts. The HW2P2 one (the embedded data/lfw64 follows it)::

    cls_data/train/<identity>/*.jpg    closed-set classification, training
    cls_data/dev/<identity>/*.jpg      the same identities, held-out images
    ver_data/*.jpg                     verification images (other people)
    val_pairs.txt                      "ver_data/a.jpg ver_data/b.jpg 1|0 [fold]"
    test_pairs.txt                     optional, same without the label

and the verification-only one: ``ver_data/`` and ``val_pairs.txt`` (``test_pairs.txt``
optional) without ``cls_data/``, as a student has LFW's View 2 pairs. It can be
explored and evaluated, not trained on.

Each split is decoded once, so an epoch costs tensor operations instead of JPEG
decoding: a small set (LFW-64) into memory, a larger one (HW2P2's 140,000 images)
into the data cache on disk, memory-mapped (lib/data/cache.py), so that a process
holds only the images it touches whatever the data set's size. Both caches are keyed
by every file's size and modification time: editing the data on disk is noticed on
the next load.
A corrupt image is skipped and listed; it never stops the rest from loading.
Nothing outside the data set folder is read (lib/data/images.py); the pairs file
format belongs to lib/data/pairs.py. ``check_dataset`` (lib/data/report.py) turns
all of this into one report.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from lib.base import config
from lib.data.cache import Progress, release_pages, stderr_progress  # noqa: F401  (release_pages: for callers)

# The names callers import from here, whose code lives in the two modules split from this one.
from lib.data.images import (  # noqa: F401
    IMAGE_SUFFIXES,
    ImageRefused,
    Listing,
    NotAnImage,
    Stacked,
    declared_size,
    decode_file,
    has_classification,
    has_layout,
    is_verification_only,
    list_identities,
    list_images,
    load_image,
    max_image_bytes,
    outside_reason,
    remember,
    scan_identities,
    scan_images,
    stack_images,
)
from lib.data.pairs import PAIRS_LINE, PairLine, PairSet, clear_pairs_cache, load_pairs, parse_pairs_text  # noqa: F401

SPLITS = ("train", "dev")
VERIFICATION_ONLY = "verification only: no classification splits"

_LOCK = threading.RLock()
_SPLIT_CACHE: dict[tuple, "ImageSet"] = {}
_STATS_CACHE: dict[tuple, tuple] = {}


@dataclass
class ImageSet:
    """One classification split. ``labels[i]`` indexes ``classes`` (sorted train identities)."""

    images: torch.Tensor  # uint8 [N, 3, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: list[str]
    paths: list[str]  # relative to the data set root, e.g. "cls_data/train/Al_Gore/Al_Gore_0001.jpg"
    corrupt: list[str] = field(default_factory=list)  # could not be decoded: skipped
    refused: list[str] = field(default_factory=list)  # "path: why" - outside the data set or too large: never decoded
    resized: list[str] = field(default_factory=list)  # other size than the rest: resized to it
    unknown_classes: list[str] = field(default_factory=list)  # dev identities absent from train: skipped
    sizes: dict[str, int] = field(default_factory=dict)  # "HxW" -> images of that size on disk
    # (sums[3], squares[3], values per channel) of the pixels in [0, 1], counted while decoding
    # into the data cache: the mean and std then need no pass over the images. None: in memory.
    channel_sums: tuple | None = None

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])


# ----------------------------------------------------------------------------- finding data sets

def find_datasets() -> list[Path]:
    """Data sets (either layout) one level under each configured root (or a root that is one
    itself); embedded first."""
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


def clear_cache() -> None:
    with _LOCK:
        _SPLIT_CACHE.clear()
        _STATS_CACHE.clear()
    clear_pairs_cache()


# ----------------------------------------------------------------------------- classification splits

class SplitListing(NamedTuple):
    paths: list[str]  # relative to the data set root
    identities: list[str]  # the identity of each path
    refused: list[str]  # "path: why" of the folders and files leading outside the data set
    fingerprint: tuple  # names, sizes and mtimes: changes when the files do


def _split_listing(root: Path, split: str) -> SplitListing:
    split_dir = root / "cls_data" / split
    identities = scan_identities(split_dir, root)
    listing = SplitListing([], [], identities.refused, ())
    fingerprint = []
    for identity in identities.found:
        for entry in list_images(split_dir / identity, root):  # its refusals are in identities.refused
            info = entry.stat()
            listing.paths.append(f"cls_data/{split}/{identity}/{entry.name}")
            listing.identities.append(identity)
            fingerprint.append((entry.name, info.st_size, info.st_mtime_ns))
    return listing._replace(fingerprint=(tuple(fingerprint), tuple(identities.refused)))


def load_split(root: str | os.PathLike, split: str, progress: Progress | None = None) -> ImageSet:
    """Decode ``cls_data/<split>`` once (cached); class order is the sorted train identities.
    ``progress(done, total)`` hears of a decode into the data cache (default: lines on stderr)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root).resolve()
    split_dir = root / "cls_data" / split
    if not split_dir.is_dir():
        if is_verification_only(root):
            raise ValueError(f"{root}: {VERIFICATION_ONLY} (no cls_data/{split}); it serves verification "
                             "(its pairs), not training or identification")
        raise ValueError(f"{root}: no folder cls_data/{split} (expected cls_data/{split}/<identity>/*.jpg)")
    classes = list_identities(root / "cls_data" / "train", root)
    listing = _split_listing(root, split)
    key = (str(root), split, hash((tuple(classes), listing.fingerprint, config.max_image_pixels())))
    with _LOCK:
        if key in _SPLIT_CACHE:
            return _SPLIT_CACHE[key]
        progress = progress or stderr_progress(f"{root.name}/cls_data/{split}")
        return remember(_SPLIT_CACHE, key, _decode_split(root, split, classes, listing, progress))


def _decode_split(root: Path, split: str, classes: list[str], listing: SplitListing, progress) -> ImageSet:
    index_of = {name: i for i, name in enumerate(classes)}
    unknown = sorted({name for name in listing.identities if name not in index_of})
    known = [i for i, name in enumerate(listing.identities) if name in index_of]
    paths = [listing.paths[i] for i in known]
    identities = [listing.identities[i] for i in known]
    fingerprint = (tuple(classes), listing.fingerprint)
    stacked = stack_images(root, paths, f"cls_data/{split}", fingerprint, progress)
    labels = torch.tensor([index_of[identities[i]] for i in stacked.kept], dtype=torch.int64)
    return ImageSet(images=stacked.images, labels=labels, classes=classes, paths=[paths[i] for i in stacked.kept],
                    corrupt=stacked.corrupt, resized=stacked.resized,
                    refused=listing.refused + [f"{path}: {why}" for path, why in stacked.refused.items()],
                    unknown_classes=unknown, sizes=dict(stacked.sizes), channel_sums=stacked.channel_sums)


def channel_stats(root: str | os.PathLike) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of the train split, in [0, 1] units."""
    train = load_split(root, "train")
    if len(train) == 0:
        raise ValueError(f"{root}: the train split has no decodable images, so it has no mean/std")
    key = (str(Path(root).resolve()), id(train))
    with _LOCK:
        if key in _STATS_CACHE:
            return _STATS_CACHE[key]
        if train.channel_sums is not None:
            return remember(_STATS_CACHE, key, _stats_of(*train.channel_sums))
        total = torch.zeros(3, dtype=torch.float64)
        squares = torch.zeros(3, dtype=torch.float64)
        for chunk in train.images.split(512):  # float copies of a chunk only, not of the whole set
            values = chunk.to(torch.float64) / 255.0
            total += values.sum(dim=(0, 2, 3))
            squares += (values * values).sum(dim=(0, 2, 3))
        return remember(_STATS_CACHE, key, _stats_of(total, squares, train.images.numel() / 3))


def _stats_of(sums, squares, count) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, population std) per channel from the sums of the values and of their squares."""
    mean = torch.as_tensor(sums, dtype=torch.float64) / count
    std = (torch.as_tensor(squares, dtype=torch.float64) / count - mean * mean).clamp_min(0).sqrt()
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
