"""lib/data/cache.py: a data set above the in-memory limit is decoded once to disk and memory-mapped.

Every test sets the limit to one byte, so tiny synthetic sets take the path HW2P2's 7 GB of
images take; pixels are checked against torchvision's own decoder, counts against the files
written, and memory against /proc in a fresh process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import ImageReadMode, decode_image, read_file

from lib.base import config
from lib.data import images as image_io
from lib.data.cache import gather
from lib.data.datasets import channel_stats, clear_cache, load_pairs, load_split
from lib.data.report import check_dataset, clear_report_cache
from tests.synthetic_data import make_dataset, pixels, write

TRAIN = {"Ann": 3, "Bob": 2, "Cy": 4}
DEV = {"Ann": 1, "Cy": 2}


@pytest.fixture
def on_disk(tmp_path, monkeypatch):
    """A small set, and the settings that send it through the data cache in tmp_path/cache."""
    monkeypatch.setenv(config.IN_MEMORY_DATA_BYTES_ENV, "1")
    monkeypatch.setenv(config.DATA_CACHE_ENV, str(tmp_path / "cache"))
    clear_cache()
    root = tmp_path / "set"
    written = make_dataset(root, TRAIN, DEV, ver=4)
    yield root, written
    clear_cache()


def cache_files(folder: Path, suffix: str) -> list[Path]:
    return sorted(folder.glob(f"*{suffix}"))


def torchvision_decode(path: Path) -> torch.Tensor:
    return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)


def test_cached_images_equal_torchvision_decoding_every_file(on_disk, tmp_path):
    root, written = on_disk
    train, dev, pairs = load_split(root, "train"), load_split(root, "dev"), load_pairs(root)
    assert len(cache_files(tmp_path / "cache", ".npy")) == 3  # train, dev, the pairs' images: all on disk
    for part in (train, dev, pairs):
        assert part.images.dtype == torch.uint8 and len(part.images) == len(part.paths)
        for image, rel in zip(part.images, part.paths):
            assert torch.equal(image, torchvision_decode(root / rel)), rel
            assert np.array_equal(image.permute(1, 2, 0).numpy(), written[rel]), rel  # the pixels written
    assert train.classes == sorted(TRAIN) and train.labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert dev.labels.tolist() == [0, 2, 2]
    assert pairs.pairs.tolist() == [[0, 1], [2, 3]] and pairs.labels.tolist() == [1, 0]
    # Training batches read rows from the file rather than through the mapping: the same pixels.
    index = torch.tensor([8, 0, 3, 3, 5])
    assert torch.equal(gather(train.images, index), train.images[index])
    view = train.images[3:7]  # a subset of the first classes is a view that starts further in
    assert torch.equal(gather(view, torch.tensor([3, 1, 0])), view[torch.tensor([3, 1, 0])])


def test_a_second_load_decodes_nothing_and_rewrites_nothing(on_disk, tmp_path):
    root, _ = on_disk
    first = load_split(root, "train")
    data_file, = cache_files(tmp_path / "cache", ".npy")
    written_at = data_file.stat().st_mtime_ns
    decoded = image_io.decode_count()
    clear_cache()  # as a new process would: only the files on disk remain
    again = load_split(root, "train")
    assert image_io.decode_count() == decoded
    assert data_file.stat().st_mtime_ns == written_at
    assert torch.equal(again.images, first.images) and again.paths == first.paths


def test_a_changed_file_is_decoded_again_and_the_stale_copy_deleted(on_disk, tmp_path):
    root, _ = on_disk
    load_split(root, "train")
    stale, = cache_files(tmp_path / "cache", ".npy")
    rel = "cls_data/train/Bob/Bob_0001.png"
    write(root / rel, pixels(999))
    os.utime(root / rel, ns=(1, 1))  # a new modification time even on a coarse clock
    clear_cache()
    decoded = image_io.decode_count()
    changed = load_split(root, "train")
    assert image_io.decode_count() == decoded + sum(TRAIN.values())
    assert np.array_equal(changed.images[changed.paths.index(rel)].permute(1, 2, 0).numpy(), pixels(999))
    fresh, = cache_files(tmp_path / "cache", ".npy")
    assert fresh != stale and not stale.exists() and len(cache_files(tmp_path / "cache", ".json")) == 1


def test_a_corrupt_image_is_listed_on_every_load_and_decoded_once(on_disk):
    root, _ = on_disk
    bad = "cls_data/train/Cy/Cy_0002.png"
    (root / bad).write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)
    train = load_split(root, "train")
    assert train.corrupt == [bad] and bad not in train.paths and len(train) == sum(TRAIN.values()) - 1
    assert bad in check_dataset(root).corrupt
    clear_cache()  # as a new process would: only the files on disk remain
    clear_report_cache()
    decoded = image_io.decode_count()
    again = load_split(root, "train")
    report = check_dataset(root)
    assert again.corrupt == [bad] and again.labels.tolist() == train.labels.tolist()
    assert bad in report.corrupt and report.train_images == sum(TRAIN.values()) - 1 and report.ver_images == 4
    assert image_io.decode_count() == decoded  # neither the splits, the pairs nor the check decode again


def test_channel_stats_from_the_cache_equal_numpy_over_the_pixels(on_disk):
    root, written = on_disk
    values = np.stack([written[rel] for rel in written if rel.startswith("cls_data/train/")]) / 255.0
    mean, std = channel_stats(root)
    assert np.allclose(mean, values.mean(axis=(0, 1, 2)), atol=1e-12)
    assert np.allclose(std, values.std(axis=(0, 1, 2)), atol=1e-12)


def test_an_unwritable_cache_folder_is_a_clear_error(on_disk, tmp_path, monkeypatch):
    root, _ = on_disk
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(config.DATA_CACHE_ENV, str(blocker / "cache"))
    with pytest.raises(ValueError, match=f"{config.DATA_CACHE_ENV}"):
        load_split(root, "train")


# A set far larger than the memory the loading process gains: big smooth JPEGs decode to
# 768 KiB each. Loading it (building the cache, or reading it back) must raise peak RSS (VmHWM)
# far less than the decoded size, and one pass of training batches over every image must keep
# few of the cache file's pages resident at any time (/proc/self/smaps; the batches' own float
# copies are the same with any data set).
BIG_SIDE, BIG_COUNT = 512, 400
MEASURE = r"""
import json, sys
import torch
from lib.data.datasets import load_split
from lib.train.batches import EpochBatches

def status_kib(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0])

def cache_file_kib():  # resident pages of the mapped data cache files, from /proc/self/smaps
    total, in_cache = 0, False
    for line in open("/proc/self/smaps"):
        if not line[0].isupper():  # a mapping's first line: "start-end perms offset dev inode path"
            in_cache = line.rstrip().endswith(".npy")
        elif in_cache and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total

before = status_kib("VmRSS")
train = load_split(sys.argv[1], "train", progress=lambda done, total: None)
loading = status_kib("VmHWM") - before
flip = [{"name": "RandomHorizontalFlip", "params": {"p": 0.5}}]
batches = EpochBatches(train, flip, (0.5,) * 3, (0.25,) * 3, batch_size=8, seed=0)
batches.set_epoch(0)
seen, mapped = 0, 0
for b in range(len(batches)):  # the set's pages resident while the batches touch every image
    seen += len(batches[b][1])
    mapped = max(mapped, cache_file_kib())
print(json.dumps({"loading_kib": loading, "epoch_kib": mapped, "images": len(train),
                  "seen": seen}))
"""


def write_big_set(root: Path) -> int:
    from PIL import Image
    ramp = np.arange(BIG_SIDE) // 2
    for k in range(BIG_COUNT):  # smooth gradients: small files, quick to write and decode
        face = np.stack([(ramp[:, None] + ramp[None, :] + k) % 256, np.broadcast_to(ramp % 256, (BIG_SIDE, BIG_SIDE)),
                         np.full((BIG_SIDE, BIG_SIDE), k)], axis=-1).astype(np.uint8)
        folder = root / "cls_data" / "train" / f"id{k % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).save(folder / f"{k:04d}.jpg", quality=90)
    return BIG_COUNT * 3 * BIG_SIDE * BIG_SIDE


def test_peak_memory_stays_far_below_a_large_sets_size(tmp_path):
    root = tmp_path / "big"
    data_kib = write_big_set(root) // 1024  # 300 MiB decoded
    env = dict(os.environ, PYTHONPATH=str(config.PROJECT_ROOT), OMP_NUM_THREADS="1",
               **{config.DATA_CACHE_ENV: str(tmp_path / "cache"), config.IN_MEMORY_DATA_BYTES_ENV: str(32 * 2**20)})
    for run in ("building the cache", "reading it back"):
        done = subprocess.run([sys.executable, "-c", MEASURE, str(root)], env=env, capture_output=True, text=True,
                              timeout=180, cwd=config.PROJECT_ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["images"] == BIG_COUNT and result["seen"] == BIG_COUNT, run
        # Without the cache loading grows by twice the data, and batches indexing the mapping would leave
        # the pages they touched resident (the kernel may map the file 2 MiB at a time): all of it.
        assert result["loading_kib"] < data_kib / 4, (run, result, data_kib)
        assert result["epoch_kib"] < data_kib / 4, (run, result, data_kib)
