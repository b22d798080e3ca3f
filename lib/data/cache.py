"""The data cache: a data set too big for memory, decoded once to disk and memory-mapped.

HW2P2's own data (140,000 training images at 112x112, 30,000 verification images) takes
about 7 GB decoded: more than a laptop, or a class sharing one server, can hold per
process. A split (or the images of a pairs file) whose decoded size is above
``config.in_memory_data_bytes()`` is therefore written once, while it is decoded, to

    <cache folder>/<set>-<files>.npy    uint8 [N, 3, H, W], the numpy format
    <cache folder>/<set>-<files>.json   what the decode found: kept, corrupt, refused,
                                        resized, sizes, per-channel sums; written last

where <set> names the data set folder and part (``cls_data/train``, ``pairs:val_pairs.txt``)
and <files> every file's path, size and modification time: editing a file gives a new
name, and the stale files of that set are deleted once the new ones are written. The
cache folder is ``config.data_cache_dir()`` (.cache/data, or FACELAB_DATA_CACHE_DIR);
deleting it only costs a decode on the next load.

Why memory-mapped numpy rather than, say, an LMDB of JPEGs or HDF5: a batch is then a
fancy index into one array (a copy of the batch only, no decode), the operating system's
page cache holds the images in use and shares them between the app, training jobs and
DataLoader workers, and every consumer keeps seeing a plain uint8 torch tensor
(``torch.from_numpy`` over the mapping). Pages a process has touched count in its RSS
although they are clean and the kernel may drop them at any time (and it may map a file 2 MiB
at a time). So training batches read their rows from the file instead (``gather``: nothing
stays mapped), and for any other pass (evaluation, embedding, hashing) a background thread
unmaps touched pages every RELEASE_EVERY_S (``release_pages``): RSS stays bounded by what is
read between two releases, not by the data set's size.

The build decodes into the mapped file chunk by chunk (never a list of every image plus
the stacked copy), fsyncs it and renames it into place, then writes the index: a crash
leaves no half file that looks finished. On a GPU host the JPEGs are decoded in batches by
nvjpeg (lib/data/jpeg_batch.py; FACELAB_DECODE_DEVICE), into the same slots as the one-file
CPU path would. A lock file lets the app and a training job that ask at once decode it once.
A corrupt image is recorded in the index, so it is listed on every load and never decoded again.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import sys
import tempfile
import threading
import time
import weakref
from collections import Counter
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from lib.base import config
from lib.base.files import atomic_write_json, fsync_file

FORMAT = 1  # bump when the files' layout or meaning changes: older files are then ignored
CHUNK_BYTES = 32 * 2**20  # decoded between two progress reports, and released from this process after each
Progress = Callable[[int, int], None]  # (images done, images in all)
# Decodes a run of files, one image (or None once noted in found) per file in order: the batch decoder
# (lib/data/jpeg_batch.py) a ``Batch`` factory gives for (found, (height, width)), or None for one file at a time.
DecodeRun = Callable[[list[str]], Iterable["torch.Tensor | None"]]
Batch = Callable[[dict, tuple[int, int]], "DecodeRun | None"]

# data pointer of a mapped set -> its numpy memmap (release_pages); weak, so a set nobody holds is unmapped
_MAPPINGS: dict[int, weakref.ref] = {}
_FILES: dict[int, tuple[int, int]] = {}  # data pointer of a mapped set -> (open file, where its pixels start)
_MAPPINGS_LOCK = threading.Lock()
RELEASE_EVERY_S = 0.25  # 4 madvise calls a second; at 20,000 images/s (a GPU) a pass holds ~190 MB between them
_releaser: threading.Thread | None = None


def _after_fork_in_child() -> None:
    """A forked child (a DataLoader worker) gets a fresh lock (the parent's may have been held by the
    releaser at the fork) and no releaser thread (threads do not survive a fork; one starts on demand)."""
    global _MAPPINGS_LOCK, _releaser
    _MAPPINGS_LOCK, _releaser = threading.Lock(), None


os.register_at_fork(after_in_child=_after_fork_in_child)


class Decoded(NamedTuple):
    """What decoding a list of files gave, wherever the images live (memory or the cache)."""

    images: torch.Tensor  # uint8 [N, 3, H, W]
    kept: list[int]  # indices into the paths asked for
    corrupt: list[str]
    refused: dict[str, str]  # path -> why
    resized: list[str]
    sizes: Counter  # "HxW" -> images of that size on disk
    channel_sums: tuple | None = None  # (sums[3], squares[3], values per channel) in [0, 1] units


def stderr_progress(label: str) -> Progress:
    """Progress printed to stderr every CHUNK_BYTES of images: a 7 GB decode takes minutes."""
    def report(done: int, total: int) -> None:
        print(f"decoding {label}: {done:,}/{total:,} images", file=sys.stderr, flush=True)
    return report


# ----------------------------------------------------------------------------- names and locking

def _digest(*parts) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()[:20]


def cache_files(root: Path, part: str, rel_paths: list[str], fingerprint) -> tuple[Path, Path]:
    """(data file, index file) of one decoded part of a data set in its current state on disk."""
    folder = config.data_cache_dir()
    stem = f"{_digest(str(root), part)}-{_digest(FORMAT, rel_paths, fingerprint, config.max_image_pixels())}"
    return folder / f"{stem}.npy", folder / f"{stem}.json"


@contextmanager
def _locked(folder: Path, name: str):
    """One builder at a time per set, across processes (the app and a training job may both load it)."""
    with open(folder / f".{name}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _drop_stale(data_file: Path) -> None:
    """Delete the older files of the same set (same first half of the name)."""
    prefix = data_file.name.split("-")[0] + "-"
    for stale in data_file.parent.glob(prefix + "*"):
        if stale.suffix in (".npy", ".json") and stale.stem != data_file.stem:
            stale.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- reading

def _read(data_file: Path, index_file: Path) -> Decoded | None:
    """The cached set, or None when it is absent or unreadable (it is then built again)."""
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        array = np.load(data_file, mmap_mode="c")  # copy-on-write: writable for torch, never written back
        count = int(index["count"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if array.dtype != np.uint8 or array.ndim != 4 or len(array) < count:
        return None
    images = torch.from_numpy(array[:count] if count < len(array) else array)
    if count:
        _register(images, array, data_file)
    sums = index["channel_sums"]
    return Decoded(images, index["kept"], index["corrupt"], dict(index["refused"]), index["resized"],
                   Counter(index["sizes"]), tuple(sums) if sums else None)


def _register(images: torch.Tensor, array: np.ndarray, data_file: Path) -> None:
    """Remember the mapping behind ``images`` (release_pages) and an open descriptor of its file (gather),
    closed when the array goes; start the releaser thread."""
    descriptor = os.open(data_file, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    weakref.finalize(array, os.close, descriptor)
    pointer = images.untyped_storage().data_ptr()
    with _MAPPINGS_LOCK:
        for gone in [p for p, ref in _MAPPINGS.items() if ref() is None]:
            _MAPPINGS.pop(gone, None)
            _FILES.pop(gone, None)
        _MAPPINGS[pointer] = weakref.ref(array)
        _FILES[pointer] = (descriptor, int(array.offset))
    _start_releaser()


def gather(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``images[index]``. For a memory-mapped set the rows are read from its file (pread, from the page
    cache) instead of through the mapping: the kernel may map a file 2 MiB at a time, so a batch of 64
    random 112x112 faces would leave 128 MiB mapped for 2.4 MiB read; read this way it leaves nothing."""
    with _MAPPINGS_LOCK:
        pointer = images.untyped_storage().data_ptr() if images.numel() else None
        ref, entry = _MAPPINGS.get(pointer), _FILES.get(pointer)
    array = ref() if ref is not None else None
    row = images[0].numel() if len(images) else 0
    usable = (array is not None and entry is not None and images.dim() == 4 and images[0].is_contiguous()
              and index.dim() == 1 and (not len(index) or (int(index.min()) >= 0 and int(index.max()) < len(images))))
    if not usable:
        return images[index]  # in memory, or an index torch should judge
    descriptor, start = entry
    start += images.storage_offset()  # a view of the set (the first classes of a subset) starts further in
    out = torch.empty((len(index), *images.shape[1:]), dtype=torch.uint8)
    rows = out.numpy().reshape(len(index), row)
    for slot, image in enumerate(index.tolist()):
        if os.preadv(descriptor, [rows[slot]], start + image * images.stride(0)) != row:
            return images[index]  # a file cut short under us: the mapping says what it can
    return out


def _start_releaser() -> None:
    """A thread that releases every mapped set's pages each RELEASE_EVERY_S: a pass over a set by code
    that does not call release_pages (evaluation, embedding, hashing) then holds what it reads in that
    time, not the whole set. Reading a released page again only maps it anew from the page cache; the
    sets are never written, so no content can be lost. (A forked DataLoader worker has no such
    thread, and needs none: its batches are read with gather.)"""
    global _releaser
    with _MAPPINGS_LOCK:
        if _releaser is not None and _releaser.is_alive():
            return
        _releaser = threading.Thread(target=_release_forever, name="facelab-release-pages", daemon=True)
        _releaser.start()


def _release_forever() -> None:
    while True:
        time.sleep(RELEASE_EVERY_S)
        with _MAPPINGS_LOCK:
            arrays = [array for array in (ref() for ref in _MAPPINGS.values()) if array is not None]
        for array in arrays:
            _release(array)
        del arrays


def _release(array: np.ndarray) -> None:
    try:
        array._mmap.madvise(mmap.MADV_DONTNEED)
    except (AttributeError, OSError, ValueError):  # no madvise on this platform: only RSS is at stake
        pass


def release_pages(images: torch.Tensor) -> None:
    """Unmap the pages of a memory-mapped set this process has touched (they stay in the page
    cache, so reading them again costs no disk). A tensor held in memory is left alone."""
    with _MAPPINGS_LOCK:
        ref = _MAPPINGS.get(images.untyped_storage().data_ptr()) if images.numel() else None
    array = ref() if ref is not None else None
    if array is not None:
        _release(array)


# ----------------------------------------------------------------------------- building

def _common_size(root: Path, rel_paths: list[str], header_size) -> tuple[int, int]:
    """The most common (height, width) the files' headers declare: the stacked tensor's size."""
    sizes = Counter()
    for rel in rel_paths:
        size = header_size(root / rel, root)
        if size is not None:
            sizes[size] += 1
    return sizes.most_common(1)[0][0] if sizes else (0, 0)


def _decode_into(array: np.ndarray, root: Path, rel_paths: list[str], decode, progress: Progress | None,
                 batch: Batch | None = None) -> dict:
    """Decode every file into the next free slot of ``array`` (in batches when ``batch`` gives a decoder);
    the index's content."""
    height, width = array.shape[-2:]
    found = {"kept": [], "corrupt": [], "refused": {}, "resized": [], "sizes": Counter()}
    decode_run = batch(found, (height, width)) if batch is not None else None
    if decode_run is None:  # one file at a time
        decode_run = partial(_one_by_one, decode, root, found)
    sums, squares = np.zeros(3, dtype=np.uint64), np.zeros(3, dtype=np.uint64)  # exact, in 0..255 units
    chunk = max(1, CHUNK_BYTES // max(1, array[0].nbytes if len(array) else 1))
    for start in range(0, len(rel_paths), chunk):
        first = len(found["kept"])
        for index, image in enumerate(decode_run(rel_paths[start:start + chunk]), start):
            if image is None:
                continue
            found["sizes"][f"{image.shape[-2]}x{image.shape[-1]}"] += 1
            if tuple(image.shape[-2:]) != (height, width):
                image = TF.resize(image, [height, width], antialias=True)
                found["resized"].append(rel_paths[index])
            array[len(found["kept"])] = image.numpy()
            found["kept"].append(index)
        _add_sums(array[first:len(found["kept"])], sums, squares)
        array._mmap.madvise(mmap.MADV_DONTNEED)  # written pages wait in the page cache, not in this process
        if progress is not None:
            progress(min(start + chunk, len(rel_paths)), len(rel_paths))
    values = len(found["kept"]) * height * width
    found["channel_sums"] = ((sums / 255.0).tolist(), (squares / 255.0**2).tolist(), values)
    found["count"] = len(found["kept"])
    return found


def _one_by_one(decode, root: Path, found: dict, rel_paths: list[str]) -> Iterable[torch.Tensor | None]:
    return (decode(root, rel, found) for rel in rel_paths)


def _add_sums(chunk: np.ndarray, sums: np.ndarray, squares: np.ndarray) -> None:
    """Add the chunk's per-channel sums of values and squares, 4 MiB of images at a time (the squares
    are a uint32 copy: 4x what they square)."""
    step = max(1, 4 * 2**20 // max(1, chunk[0].nbytes if len(chunk) else 1))
    for start in range(0, len(chunk), step):
        part = chunk[start:start + step]
        sums += part.sum(axis=(0, 2, 3), dtype=np.uint64)
        squares += np.square(part, dtype=np.uint32).sum(axis=(0, 2, 3), dtype=np.uint64)


def _write_data(data_file: Path, shape: tuple, fill: Callable[[np.ndarray], dict]) -> dict:
    """Create the .npy beside its final name, let ``fill`` decode into it, fsync, rename."""
    handle, name = tempfile.mkstemp(prefix=f".{data_file.name}.", suffix=".tmp", dir=data_file.parent)
    os.close(handle)
    temp = Path(name)
    try:
        array = np.lib.format.open_memmap(temp, mode="w+", dtype=np.uint8, shape=shape)
        index = fill(array)
        array.flush()
        del array
        fsync_file(temp)
        os.chmod(temp, 0o644)
        os.replace(temp, data_file)
    finally:
        temp.unlink(missing_ok=True)
    return index


def cached_decode(root: Path, part: str, rel_paths: list[str], fingerprint, decode, header_size,
                  progress: Progress | None = None, batch: Batch | None = None) -> Decoded:
    """The files decoded into the data cache (built now if absent or stale), memory-mapped.

    ``decode(root, rel, found)`` returns the uint8 image or None after noting the file in
    ``found["corrupt"]`` or ``found["refused"]``; ``header_size(path, root)`` the declared
    (height, width) or None; ``batch``, asked only when the cache is built, a batch decoder
    that writes the same images into the same slots. ValueError naming the cache folder when
    it cannot be written."""
    data_file, index_file = cache_files(root, part, rel_paths, fingerprint)
    cached = _read(data_file, index_file)
    if cached is not None:
        return cached
    try:
        data_file.parent.mkdir(parents=True, exist_ok=True)
        with _locked(data_file.parent, data_file.name.split("-")[0]):
            cached = _read(data_file, index_file)  # another process may have built it meanwhile
            if cached is not None:
                return cached
            height, width = _common_size(root, rel_paths, header_size)
            shape = (len(rel_paths), 3, height, width)
            index = _write_data(data_file, shape,
                                lambda array: _decode_into(array, root, rel_paths, decode, progress, batch))
            index["sizes"] = dict(index["sizes"])
            atomic_write_json(index_file, index)
            _drop_stale(data_file)
    except OSError as error:
        raise ValueError(f"{root}: cannot write the decoded images of {part} to the data cache "
                         f"{data_file.parent} ({error.strerror or error}); free some disk space there or set "
                         f"{config.DATA_CACHE_ENV} to a folder with room") from error
    cached = _read(data_file, index_file)
    if cached is None:
        raise ValueError(f"{root}: the data cache file {data_file} could not be read back; delete the folder "
                         f"{data_file.parent} and load the data set again")
    return cached


def cached_result(root: Path, part: str, rel_paths: list[str], fingerprint, compute: Callable[[], dict]) -> dict:
    """``compute()``'s JSON-able answer about the files, kept in the data cache beside the decoded sets:
    for a check that must decode every file (the data check's verification folder), once per state."""
    _, index_file = cache_files(root, part, rel_paths, fingerprint)
    try:
        return json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    result = compute()
    try:
        atomic_write_json(index_file, result)
        _drop_stale(index_file)
    except OSError:  # a cache that cannot be written only costs the decode next time
        pass
    return result
