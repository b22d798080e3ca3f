"""Reading the images of a data set: which files belong to it, and decoding them safely.

Nothing outside the data set folder is read: every folder and image path is
resolved first, and one that leads outside (a symlink, "../..", an absolute path)
is refused with its reason, without being opened. A symlink that stays inside the
data set is followed. An image whose header declares more than
``config.max_image_pixels()`` pixels is refused the same way, before decoding; a
file too large to hold such an image is not even read. Decoded images are stacked
into one uint8 tensor at their most common size: in memory for a small set, memory-mapped
from the data cache (lib/data/cache.py) for one larger than ``config.in_memory_data_bytes()``;
the data cache's JPEGs, read and checked here, may be decoded in batches on a GPU
(lib/data/jpeg_batch.py), every other file one at a time here.

A data set is a folder in the HW2P2 layout (``cls_data/train``) or a verification-only
one (``ver_data/`` and ``val_pairs.txt``, no ``cls_data``): see lib/data/datasets.py.
"""
from __future__ import annotations

import io
import os
import stat
import struct
from collections import Counter
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from PIL.JpegImagePlugin import JpegImageFile
from PIL.PngImagePlugin import PngImageFile
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from lib.base import config
from lib.data import jpeg_batch
from lib.data.cache import Decoded, DecodeRun, Progress, cached_decode

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CACHE_ENTRIES = 6  # a few data sets at once; older ones are dropped
SIZE_SAMPLE = 64  # headers read to tell a set's decoded size before decoding it
FROM_SETTING = "setting"  # stack_images' batch_device: the one FACELAB_DECODE_DEVICE gives (jpeg_batch.batch_device)
_decodes = 0  # images decoded by this process (decode_count): a cached set decodes none


# ----------------------------------------------------------------------------- what a data set looks like

def has_classification(folder: Path) -> bool:
    """The folder holds the classification splits of the HW2P2 layout (``cls_data/train``)."""
    return (Path(folder) / "cls_data" / "train").is_dir()


def is_verification_only(folder: Path) -> bool:
    """Verification images and pairs (``ver_data/``, ``val_pairs.txt``) without any classification
    split, like LFW's View 2: usable for verification, not for training or identification."""
    folder = Path(folder)
    splits = folder / "cls_data"
    return ((folder / "ver_data").is_dir() and (folder / "val_pairs.txt").is_file()
            and not (splits / "train").is_dir() and not (splits / "dev").is_dir())


def has_layout(folder: Path) -> bool:
    """A data set FaceLab can open: the HW2P2 layout, or a verification-only one."""
    return has_classification(folder) or is_verification_only(folder)


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


def relative_name(path: Path, root: Path) -> str:
    """``path`` as messages name it: relative to the data set folder when it lies under it."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return str(path)



def _dataset_of(path: Path) -> Path:
    """The data set ``path`` belongs to, for callers that do not say: its nearest enclosing data set
    folder (HW2P2 or verification-only layout), found by name so that a link along the path cannot
    move the boundary. Without one, the folder itself (or a file's folder) is the boundary."""
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
        return Listing([], [f"{relative_name(folder, root)}: {reason}"])
    if not folder.is_dir():
        return Listing([], [])
    found, refused = [], []
    with os.scandir(folder) as scan:
        entries = sorted((e for e in scan if _is_image_name(e.name)), key=lambda e: e.name)
    for entry in entries:
        reason = _entry_outside_reason(entry, within)
        if reason:
            refused.append(f"{relative_name(Path(entry.path), root)}: {reason}")
        elif entry.is_file():
            found.append(entry)
    return Listing(found, refused)


def scan_identities(split_dir: Path, root: Path) -> Listing:
    """Sorted names of a split's identity folders that stay inside the data set ``root`` and hold at
    least one image; refused are the folders and images leading outside it."""
    split_dir, within = Path(split_dir), Path(root).resolve()
    reason = outside_reason(split_dir, within)
    if reason:
        return Listing([], [f"{relative_name(split_dir, root)}: {reason}"])
    if not split_dir.is_dir():
        return Listing([], [])
    with os.scandir(split_dir) as scan:
        folders = sorted((e for e in scan if e.is_dir() and not e.name.startswith(".")), key=lambda e: e.name)
    names, refused = [], []
    for entry in folders:
        reason = _entry_outside_reason(entry, within)
        if reason:  # not even listed: the folder it leads to is someone else's
            refused.append(f"{relative_name(Path(entry.path), root)}: {reason}")
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
    global _decodes
    _decodes += 1
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


def decode_count() -> int:
    """How many images this process has decoded: a set read back from the data cache adds none."""
    return _decodes


def header_size(path: Path, root: Path) -> tuple[int, int] | None:
    """(height, width) the image's header declares, or None when it is refused or unreadable."""
    try:
        target = Path(path).resolve()
        if outside_reason(path, Path(root).resolve(), target):
            return None
        height, width = declared_size(_read_bytes(target))
    except (NotAnImage, ImageRefused):
        return None
    return (height, width) if height * width <= config.max_image_pixels() else None


Stacked = Decoded  # the name callers know: images [N,3,H,W], kept, corrupt, refused, resized, sizes


def _decode_noting(root: Path, rel: str, found: dict) -> torch.Tensor | None:
    """The image, or None after noting it in ``found["refused"]`` or ``found["corrupt"]``."""
    try:
        return load_image(root / rel, root)
    except ImageRefused as why:
        found["refused"][rel] = str(why)
    except NotAnImage:
        found["corrupt"].append(rel)
    return None


def _batch_content(root: Path, within: Path, rel: str, size: tuple[int, int]) -> torch.Tensor | None:
    """The bytes of a file the batch decoder may take - a JPEG inside the data set (``within``: its
    resolved folder), within the size caps, whose header declares the set's ``size`` - or None: the
    file then goes through ``_decode_noting``, which refuses, records or resizes it."""
    path = root / rel
    target = path.resolve()
    if outside_reason(path, within, target):
        return None
    try:
        content = _read_bytes(target)
        with JpegImageFile(io.BytesIO(content)) as header:
            width, height = header.size
            mode = header.mode
    except (NotAnImage, ImageRefused, *_HEADER_ERRORS):
        return None
    if ((height, width) != tuple(size) or height * width > config.max_image_pixels()
            or mode not in jpeg_batch.BATCHABLE_MODES or not jpeg_batch.looks_batchable(content)):
        return None
    return torch.frombuffer(content, dtype=torch.uint8)


def _batch_decoder(root: Path, device: str | None) -> Callable[[dict, tuple[int, int]], DecodeRun | None]:
    """What the data cache asks, once it must build a set, for a decoder of runs of files in batches on
    ``device`` (FROM_SETTING: jpeg_batch.batch_device(); None: one file at a time, no batches)."""
    def start(found: dict, size: tuple[int, int]) -> DecodeRun | None:
        chosen = jpeg_batch.batch_device() if device == FROM_SETTING else device
        if chosen is None:
            return None
        within = root.resolve()
        batched = jpeg_batch.BatchedJpegs(chosen, lambda rel: _batch_content(root, within, rel, size),
                                          lambda rel: _decode_noting(root, rel, found))

        def decode_run(rel_paths: list[str]):
            global _decodes
            before = batched.decoded
            yield from batched(rel_paths)
            _decodes += batched.decoded - before
        return decode_run
    return start


def decoded_bytes_estimate(root: Path, rel_paths: list[str]) -> int:
    """The bytes the files take decoded, from the headers of SIZE_SAMPLE of them spread over the list."""
    step = max(1, len(rel_paths) // SIZE_SAMPLE)
    sizes = Counter(header_size(root / rel, root) for rel in rel_paths[::step])
    sizes.pop(None, None)
    if not sizes:
        return 0
    height, width = sizes.most_common(1)[0][0]
    return len(rel_paths) * 3 * height * width


def stack_images(root: Path, rel_paths: list[str], part: str | None = None, fingerprint=None,
                 progress: Progress | None = None, batch_device: str | None = FROM_SETTING) -> Stacked:
    """Decode files into one uint8 [N,3,H,W] tensor at the most common size (others are resized).

    Named by ``part`` (and ``fingerprint``, the files' sizes and times), a set larger than
    ``config.in_memory_data_bytes()`` comes from the data cache (lib/data/cache.py): decoded
    once, then memory-mapped, its JPEGs in batches on ``batch_device`` (by default the GPU
    when there is a working one: lib/data/jpeg_batch.py; None: one file at a time on the CPU).
    Without a part, or when small, it is decoded into memory, one file at a time."""
    root = Path(root)
    if part is not None and decoded_bytes_estimate(root, rel_paths) > config.in_memory_data_bytes():
        return cached_decode(root, part, rel_paths, fingerprint, _decode_noting, header_size, progress,
                             _batch_decoder(root, batch_device))
    found = {"refused": {}, "corrupt": []}
    decoded, kept = [], []
    for index, rel in enumerate(rel_paths):
        image = _decode_noting(root, rel, found)
        if image is not None:
            decoded.append(image)
            kept.append(index)
    sizes = Counter(f"{im.shape[-2]}x{im.shape[-1]}" for im in decoded)
    if not decoded:
        return Stacked(torch.empty(0, 3, 0, 0, dtype=torch.uint8), kept, found["corrupt"], found["refused"], [], sizes)
    height, width = (int(v) for v in sizes.most_common(1)[0][0].split("x"))
    images = torch.empty(len(decoded), 3, height, width, dtype=torch.uint8)
    slots, resized = images.numpy(), []  # numpy copies one image on this thread: torch's pool spins on a busy host
    for slot, (index, image) in enumerate(zip(kept, decoded)):
        if tuple(image.shape[-2:]) != (height, width):
            # One tensor needs one size; an odd image is resized rather than dropped.
            image = TF.resize(image, [height, width], antialias=True)
            resized.append(rel_paths[index])
        slots[slot] = image.numpy()
        decoded[slot] = None  # held once: each decoded image is let go once stacked
    return Stacked(images, kept, found["corrupt"], found["refused"], resized, sizes)


def remember(cache: dict, key: tuple, value):
    """Keep ``value`` under ``key`` (whose last item fingerprints the files) in a small cache:
    an older entry of the same data set is dropped, and the oldest beyond CACHE_ENTRIES."""
    stale = [k for k in cache if k[:-1] == key[:-1] and k != key]
    for k in stale:  # the same data set changed on disk: drop its old copy
        del cache[k]
    cache[key] = value
    while len(cache) > CACHE_ENTRIES:
        del cache[next(iter(cache))]
    return value
