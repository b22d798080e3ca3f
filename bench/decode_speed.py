"""Images per second building the data cache: one file at a time on the CPU against JPEG batches.

A data set above the in-memory limit is decoded once into the data cache (lib/data/cache.py).
This builds that cache of every image of a set in the HW2P2 layout (all splits and the
verification images, as one part) in a fresh cache folder each time, three ways:

  one file     the CPU path: each file read, checked and decoded by libjpeg-turbo in turn
  batch cpu    the batch path (lib/data/jpeg_batch.py) with device "cpu": the same checks and
               the same libjpeg-turbo, batches of 256 through torchvision's list decode_jpeg
  batch cuda   the same on the GPU (nvjpeg); only where torch.cuda.is_available()

Every file is read once before timing, so all ways read from the page cache, and the ways
take turns. Prints the median of --repeats builds, the load average (the host may be shared), and the largest
pixel difference of each way's cache from the one-file cache.

    .venv/bin/python bench/decode_speed.py [--root DATA] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.base import config  # noqa: E402
from lib.data import jpeg_batch  # noqa: E402
from lib.data.images import IMAGE_SUFFIXES, stack_images  # noqa: E402

SPEED_SET = Path("/tmp/speed112")  # a 112-px set in the HW2P2 layout (bench/make_large_set.py --size 112)


def image_paths(root: Path) -> list[str]:
    """Every image of the set (cls_data/*/*/*, ver_data/*), relative to it, sorted."""
    found = [p for folder in ("cls_data", "ver_data") for p in (root / folder).rglob("*")
             if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(p.relative_to(root).as_posix() for p in found)


def warm_page_cache(root: Path, rel_paths: list[str]) -> int:
    return sum(len((root / rel).read_bytes()) for rel in rel_paths)


@contextmanager
def fresh_cache():
    """A new, empty data cache folder that every set goes to; the settings as they were afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="facelab-decode-speed-"))
    names = (config.DATA_CACHE_ENV, config.IN_MEMORY_DATA_BYTES_ENV)
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({config.DATA_CACHE_ENV: str(folder), config.IN_MEMORY_DATA_BYTES_ENV: "1"})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


def build_once(root: Path, rel_paths: list[str], device: str | None, repeat: int = 0):
    """(seconds, the cache's set, in memory) of one build of the data cache into a fresh folder."""
    with fresh_cache():
        start = time.perf_counter()
        stacked = stack_images(root, rel_paths, "bench", (device, repeat), batch_device=device)
        seconds = time.perf_counter() - start
        return seconds, stacked._replace(images=stacked.images.clone())  # a copy: the folder goes next


class Comparison(NamedTuple):
    """The batch decoder on ``device`` against the one-file CPU path, over the same files."""

    device: str
    images: int
    one_file_per_s: float
    batched_per_s: float
    max_difference: int  # levels, over every value
    mean_difference: float
    share_over_2: float  # of values differing by more than 2 levels
    same_files: bool  # the same files kept, corrupt and resized, in the same order
    probe: str | None  # why the device's decoder failed its probe, or None

    def problem(self) -> str | None:
        if self.probe is not None:
            return f"the {self.device} JPEG decoder failed its probe: {self.probe}"
        if not self.same_files:
            return f"the {self.device} batch decoder kept or refused other files than the one-file path"
        if self.mean_difference >= jpeg_batch.MEAN_DIFFERENCE_BOUND:
            return (f"the {self.device} batch decoder's pixels differ from the CPU's by {self.mean_difference:.2f} "
                    f"levels on average (bound {jpeg_batch.MEAN_DIFFERENCE_BOUND})")
        return None


def compare_decoders(root: Path, rel_paths: list[str], device: str) -> Comparison:
    """Build the data cache of ``rel_paths`` both ways (the batch one after a probe that also starts its
    decoder, so that start-up is not timed) and compare the images."""
    why = jpeg_batch.probe(device)
    warm_page_cache(Path(root), rel_paths)  # both ways then read the files from memory
    one_s, one = build_once(Path(root), rel_paths, None)
    batch_s, batched = build_once(Path(root), rel_paths, device)
    same = (one.kept, one.corrupt, one.resized) == (batched.kept, batched.corrupt, batched.resized)
    if same and one.images.shape == batched.images.shape:
        difference = (one.images.int() - batched.images.int()).abs()
        worst, mean = int(difference.max()) if difference.numel() else 0, difference.float().mean().item()
        over = (difference > 2).float().mean().item()
    else:
        same, worst, mean, over = False, 255, 255.0, 1.0
    return Comparison(device, len(rel_paths), len(rel_paths) / one_s, len(rel_paths) / batch_s, worst, mean,
                      over, same, why)


def comparison_text(result: Comparison) -> str:
    return (f"data cache of {result.images:,} images: one file at a time on the CPU {result.one_file_per_s:,.0f} "
            f"img/s, batches of {jpeg_batch.BATCH_IMAGES} on {result.device} {result.batched_per_s:,.0f} img/s "
            f"({result.batched_per_s / result.one_file_per_s:.2f}x); pixels against the CPU's: max |diff| "
            f"{result.max_difference}, mean {result.mean_difference:.3f}, {100 * result.share_over_2:.2f}% of values "
            f"off by more than 2 (bound: mean < {jpeg_batch.MEAN_DIFFERENCE_BOUND}, torchvision's own test of its "
            f"GPU decoder); same files kept and corrupt: {'yes' if result.same_files else 'NO'}")


def load_text() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None,
                        help=f"data set in the HW2P2 layout (default {SPEED_SET} when it exists, else the embedded one)")
    parser.add_argument("--repeats", type=int, default=3, help="builds per way; the median is shown")
    args = parser.parse_args()
    root = Path(args.root) if args.root else SPEED_SET if SPEED_SET.is_dir() else config.EMBEDDED_DATA
    rel_paths = image_paths(root)
    if not rel_paths:
        print(f"no images under {root}/cls_data or {root}/ver_data: make a set with bench/make_large_set.py")
        return 2
    size_mb = warm_page_cache(root, rel_paths) / 2**20
    ways = {"one file": None, "batch cpu": "cpu"}
    if torch.cuda.is_available():
        ways["batch cuda"] = "cuda"
    print(f"data: {root} ({len(rel_paths):,} images, {size_mb:.1f} MiB of files), {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, batches of {jpeg_batch.BATCH_IMAGES}")
    print(f"load average before: {load_text()}")
    for device in ways.values():  # start each decoder (CUDA, nvjpeg) before anything is timed
        if device is not None and jpeg_batch.probe(device):
            print(f"the {device} decoder failed its probe: {jpeg_batch.probe(device)}")
            return 1
    seconds, first = {way: [] for way in ways}, {}
    for repeat in range(args.repeats):  # the ways take turns, so a change in the host's load hits them alike
        for way, device in ways.items():
            took, stacked = build_once(root, rel_paths, device, repeat)
            seconds[way].append(took)
            first.setdefault(way, stacked.images)  # the first build's pixels, for the comparison
    reference, rates = None, {}
    print("way            images/s (median)   seconds (each build)           max |diff| vs one file")
    for way in ways:
        images = first[way]
        reference = images if reference is None else reference
        difference = (images.int() - reference.int()).abs().max().item() if images.shape == reference.shape else "shape"
        rates[way] = len(rel_paths) / statistics.median(seconds[way])
        print(f"{way:<14} {rates[way]:10.0f}          {' '.join(f'{s:6.2f}' for s in seconds[way]):<30} {difference}")
    print(f"batch cpu / one file: {rates['batch cpu'] / rates['one file']:.2f}x")
    if "batch cuda" in rates:
        print(f"batch cuda / one file: {rates['batch cuda'] / rates['one file']:.2f}x")
    else:
        print("batch cuda: no GPU here (torch.cuda.is_available() is False); run this on a GPU host for that figure")
    print(f"load average after: {load_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
