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

Nothing outside the data set folder is read: every folder, image and pairs path
is resolved first, and one that leads outside (a symlink, "../..", an absolute
path) is skipped and listed in ``refused`` without being opened. A symlink that
stays inside the data set is followed. An image whose header declares more than
``config.max_image_pixels()`` pixels is refused the same way, before decoding.
``check_dataset`` (lib/data/report.py) turns all of this into one report.
"""
from __future__ import annotations

import io
import os
import stat
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from PIL.JpegImagePlugin import JpegImageFile
from PIL.PngImagePlugin import PngImageFile
from torchvision.io import ImageReadMode, decode_image
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
    refused: list[str] = field(default_factory=list)  # "path: why" - outside the data set or too large: never decoded
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
    refused: list[str] = field(default_factory=list)  # "path: why" - images above the pixel limit
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


# ----------------------------------------------------------------------------- staying inside the data set

class Listing(NamedTuple):
    """What a folder of a data set offers: ``found`` entries, and ``refused`` ones as "path: why"."""

    found: list
    refused: list[str]


def outside_reason(path: Path, within: Path, target: Path | None = None) -> str | None:
    """Why ``path`` may not be read - once resolved (or as ``target``, its resolved form) it lies
    outside the resolved folder ``within`` - or None when it stays inside. A symlink whose target
    stays inside is fine."""
    target = Path(path).resolve() if target is None else target
    if target == within or within in target.parents:
        return None
    return f"leads outside the data set (to {target}); skipped, never read"


def _entry_outside_reason(entry: os.DirEntry, within: Path) -> str | None:
    """``outside_reason`` for an entry of a folder already known to lie inside: only a link can
    lead out, so only links are resolved (resolving every file made listing 20x slower)."""
    return outside_reason(Path(entry.path), within) if entry.is_symlink() else None


def _relative(path: Path, root: Path) -> str:
    """``path`` as messages name it: relative to the data set folder when it lies under it."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return str(path)


def _dataset_of(path: Path) -> Path:
    """The data set ``path`` belongs to, for callers that do not say: its nearest enclosing folder in
    the HW2P2 layout, found by name so that a link along the path cannot move the boundary. Without
    one, the folder itself (or a file's folder) is the boundary."""
    absolute = Path(os.path.abspath(path))
    for folder in (absolute, *absolute.parents):
        if has_layout(folder):
            return folder
    return absolute if absolute.is_dir() else absolute.parent


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def scan_images(folder: Path, root: Path) -> Listing:
    """Image files directly in ``folder``, sorted by name, that stay inside the data set ``root``;
    hidden and other files are ignored, and files or links leading outside are refused."""
    folder, within = Path(folder), Path(root).resolve()
    reason = outside_reason(folder, within)
    if reason:
        return Listing([], [f"{_relative(folder, root)}: {reason}"])
    if not folder.is_dir():
        return Listing([], [])
    found, refused = [], []
    with os.scandir(folder) as scan:
        entries = sorted((e for e in scan if _is_image_name(e.name)), key=lambda e: e.name)
    for entry in entries:
        reason = _entry_outside_reason(entry, within)
        if reason:
            refused.append(f"{_relative(Path(entry.path), root)}: {reason}")
        elif entry.is_file():
            found.append(entry)
    return Listing(found, refused)


def scan_identities(split_dir: Path, root: Path) -> Listing:
    """Sorted names of a split's identity folders that stay inside the data set ``root`` and hold at
    least one image; refused are the folders and images leading outside it."""
    split_dir, within = Path(split_dir), Path(root).resolve()
    reason = outside_reason(split_dir, within)
    if reason:
        return Listing([], [f"{_relative(split_dir, root)}: {reason}"])
    if not split_dir.is_dir():
        return Listing([], [])
    with os.scandir(split_dir) as scan:
        folders = sorted((e for e in scan if e.is_dir() and not e.name.startswith(".")), key=lambda e: e.name)
    names, refused = [], []
    for entry in folders:
        reason = _entry_outside_reason(entry, within)
        if reason:  # not even listed: the folder it leads to is someone else's
            refused.append(f"{_relative(Path(entry.path), root)}: {reason}")
            continue
        images = scan_images(Path(entry.path), root)
        refused += images.refused
        if images.found:
            names.append(entry.name)
    return Listing(names, refused)


def list_images(folder: Path, root: Path | None = None) -> list[os.DirEntry]:
    """The images ``scan_images`` finds; ``root`` defaults to the data set ``folder`` lies in."""
    return scan_images(folder, _dataset_of(folder) if root is None else root).found


def list_identities(split_dir: Path, root: Path | None = None) -> list[str]:
    """The identities ``scan_identities`` finds; ``root`` defaults to the data set ``split_dir`` lies in."""
    return scan_identities(split_dir, _dataset_of(split_dir) if root is None else root).found


# ----------------------------------------------------------------------------- decoding

class NotAnImage(ValueError):
    """The file is not a JPEG or PNG image the decoder can read."""


class ImageRefused(ValueError):
    """The file is not read or not decoded: it leads outside the data set, or it is too large."""


# The formats of IMAGE_SUFFIXES. Their PIL classes read the header only; PIL's Image.open is not
# used because past twice its own limit it raises without telling the size.
_HEADER_READERS = (JpegImageFile, PngImageFile)
_HEADER_ERRORS = (SyntaxError, OSError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error)


def max_image_bytes() -> int:
    """No image within the pixel limit can be larger: 16-bit RGBA stored uncompressed takes 8 bytes a
    pixel, and 1 MiB more leaves room for metadata. A larger file is refused without being read."""
    return config.max_image_pixels() * 8 + 2**20


def _read_bytes(target: Path) -> bytearray:
    """The content of a resolved file. Its last component is opened without following links (one
    swapped in after the check is not followed either), and without blocking on a FIFO."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(target, flags)
    except OSError as error:
        raise NotAnImage(f"cannot be opened ({error.strerror})") from error
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise NotAnImage("not a regular file")
        limit = max_image_bytes()
        content = bytearray(handle.read(limit + 1)) if info.st_size <= limit else None
    if content is None or len(content) > limit:
        size = max(info.st_size, len(content or b""))
        raise ImageRefused(f"a file of {size / 2**20:.1f} MiB, larger than any image within the pixel limit "
                           f"({config.MAX_IMAGE_PIXELS_ENV}); skipped, never read")
    return content


def declared_size(content: bytes) -> tuple[int, int]:
    """(height, width) as the file's header declares them, without decoding a pixel."""
    for reader in _HEADER_READERS:
        try:
            with reader(io.BytesIO(content)) as header:
                width, height = header.size
                return height, width
        except _HEADER_ERRORS:
            continue
    raise NotAnImage("not a JPEG or PNG image")


def _refuse_oversized(height: int, width: int) -> None:
    limit = config.max_image_pixels()
    if height * width > limit:
        raise ImageRefused(f"{height}x{width} pixels, more than the limit of {limit:,} "
                           f"({config.MAX_IMAGE_PIXELS_ENV}); skipped, never decoded")


def load_image(path: Path, root: Path | None = None) -> torch.Tensor:
    """uint8 [3, H, W] (gray and RGBA images become RGB) of an image inside the data set ``root``
    (by default the one ``path`` lies in). ImageRefused when it leads outside the data set or is
    larger than the pixel limit - checked before anything is opened or decoded; NotAnImage when
    it cannot be decoded. Every image FaceLab reads from a data set comes through here."""
    root = _dataset_of(path) if root is None else Path(root)
    target = Path(path).resolve()
    reason = outside_reason(path, root.resolve(), target)
    if reason:
        raise ImageRefused(reason)
    content = _read_bytes(target)
    _refuse_oversized(*declared_size(content))
    try:
        return decode_image(torch.frombuffer(content, dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as error:
        raise NotAnImage(str(error)) from error


def decode_file(path: Path, root: Path | None = None) -> torch.Tensor | None:
    """``load_image``'s picture, or None when it is refused or not a decodable image."""
    try:
        return load_image(path, root)
    except (NotAnImage, ImageRefused):
        return None


class Stacked(NamedTuple):
    images: torch.Tensor  # uint8 [N, 3, H, W]
    kept: list[int]  # indices into the paths asked for
    corrupt: list[str]
    refused: dict[str, str]  # path -> why
    resized: list[str]
    sizes: Counter  # "HxW" -> images of that size on disk


def _decode_all(root: Path, rel_paths: list[str]) -> tuple[list[torch.Tensor], list[int], list[str], dict]:
    decoded, kept, corrupt, refused = [], [], [], {}
    for index, rel in enumerate(rel_paths):
        try:
            decoded.append(load_image(root / rel, root))
            kept.append(index)
        except ImageRefused as why:
            refused[rel] = str(why)
        except NotAnImage:
            corrupt.append(rel)
    return decoded, kept, corrupt, refused


def _stack(root: Path, rel_paths: list[str]) -> Stacked:
    """Decode files into one uint8 [N,3,H,W] tensor at the most common size."""
    decoded, kept, corrupt, refused = _decode_all(root, rel_paths)
    sizes = Counter(f"{im.shape[-2]}x{im.shape[-1]}" for im in decoded)
    if not decoded:
        return Stacked(torch.empty(0, 3, 0, 0, dtype=torch.uint8), kept, corrupt, refused, [], sizes)
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
    return Stacked(images, kept, corrupt, refused, resized, sizes)


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


def load_split(root: str | os.PathLike, split: str) -> ImageSet:
    """Decode ``cls_data/<split>`` once (cached); class order is the sorted train identities."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root).resolve()
    split_dir = root / "cls_data" / split
    if not split_dir.is_dir():
        raise ValueError(f"{root}: no folder cls_data/{split} (expected cls_data/{split}/<identity>/*.jpg)")
    classes = list_identities(root / "cls_data" / "train", root)
    listing = _split_listing(root, split)
    key = (str(root), split, hash((tuple(classes), listing.fingerprint, config.max_image_pixels())))
    with _LOCK:
        if key in _SPLIT_CACHE:
            return _SPLIT_CACHE[key]
        return _remember(_SPLIT_CACHE, key, _decode_split(root, classes, listing))


def _decode_split(root: Path, classes: list[str], listing: SplitListing) -> ImageSet:
    index_of = {name: i for i, name in enumerate(classes)}
    unknown = sorted({name for name in listing.identities if name not in index_of})
    known = [i for i, name in enumerate(listing.identities) if name in index_of]
    paths = [listing.paths[i] for i in known]
    identities = [listing.identities[i] for i in known]
    stacked = _stack(root, paths)
    labels = torch.tensor([index_of[identities[i]] for i in stacked.kept], dtype=torch.int64)
    return ImageSet(images=stacked.images, labels=labels, classes=classes, paths=[paths[i] for i in stacked.kept],
                    corrupt=stacked.corrupt, resized=stacked.resized,
                    refused=listing.refused + [f"{path}: {why}" for path, why in stacked.refused.items()],
                    unknown_classes=unknown, sizes=dict(stacked.sizes))


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
    unusable = _name_problems(root, names)
    # Only files inside the data set are looked at, not even stat()ed otherwise.
    fingerprint = tuple((n, None if n in unusable else (root / n).stat().st_mtime_ns) for n in names)
    key = (str(root), pairs_file, hash((text, fingerprint, config.max_image_pixels())))
    with _LOCK:
        if key in _PAIRS_CACHE:
            return _PAIRS_CACHE[key]
        pair_set = _decode_pairs(root, pairs_file, rows, problems, unusable)
        return _remember(_PAIRS_CACHE, key, pair_set)


def _decode_pairs(root: Path, pairs_file: str, rows: list, problems: list[str], unusable: dict[str, str]) -> PairSet:
    named = {n for row in rows for n in (row.a, row.b)}
    bad = dict(unusable)
    wanted = sorted(named - set(bad))
    images, kept, corrupt, refused, resized, _ = _stack(root, wanted)
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
