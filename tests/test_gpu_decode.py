"""lib/data/jpeg_batch.py: the data cache's JPEGs decoded in batches (nvjpeg on a GPU host).

The batch decoder takes its device as an argument, so here it runs on "cpu", where
torchvision's list decode_jpeg uses the same libjpeg-turbo as the one-file path
(decode_image): the two caches must then be equal pixel for pixel, and both equal to
torchvision decoding each file. Corrupt files, a PNG and an odd-sized JPEG must leave the
batch for the one-file path and be recorded exactly as it records them. A GPU test runs
only where CUDA is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF

from lib.base import config
from lib.data import images as image_io
from lib.data import jpeg_batch
from tests.synthetic_data import pixels, write

SIZE = 24
MISSING_TABLE = "cls_data/train/b/03.jpg"  # a sound header, no quantization table: the batch call fails
PNG = "cls_data/train/b/04.png"
TRUNCATED = "cls_data/train/b/05.jpg"  # cut inside its pixels: kept out of batches (nvjpeg may decode it)
GRAY = "cls_data/train/a/02.jpg"
LARGER = "cls_data/train/c/01.jpg"  # 40x40: one-file path, then resized like every odd size
CORRUPT = [MISSING_TABLE, TRUNCATED]


def smooth_face(seed: int, size: int = SIZE) -> np.ndarray:
    """Noise blown up into blobs: photo-like content that uses every colour channel."""
    small = Image.fromarray(pixels(seed, size // 4)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(small)


def without_segment(content: bytes, marker: int) -> bytes:
    """The JPEG with every header segment of ``marker`` (0xDB: quantization tables) left out."""
    kept, at = content[:2], 2
    while content[at + 1] != 0xDA:  # up to the start of the scan
        length = int.from_bytes(content[at + 2:at + 4], "big")
        if content[at + 1] != marker:
            kept += content[at:at + 2 + length]
        at += 2 + length
    return kept + content[at:]


def write_set(root: Path) -> list[str]:
    """13 files in three identities, the special ones above among them; relative paths in load order."""
    rels = [f"cls_data/train/{identity}/{k:02d}.jpg" for identity, count in (("a", 4), ("b", 6), ("c", 3))
            for k in range(count)]
    rels[rels.index(PNG.replace(".png", ".jpg"))] = PNG
    for seed, rel in enumerate(rels):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        face = smooth_face(seed, 40 if rel == LARGER else SIZE)
        if rel == PNG:
            write(root / rel, pixels(77, SIZE))
        else:
            Image.fromarray(face).convert("L" if rel == GRAY else "RGB").save(root / rel, quality=90)
    (root / MISSING_TABLE).write_bytes(without_segment((root / MISSING_TABLE).read_bytes(), 0xDB))
    (root / TRUNCATED).write_bytes((root / TRUNCATED).read_bytes()[:-100])
    return rels


@pytest.fixture
def jpeg_set(tmp_path, monkeypatch):
    monkeypatch.setenv(config.IN_MEMORY_DATA_BYTES_ENV, "1")  # every set goes to the data cache
    monkeypatch.setenv(config.DATA_CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(jpeg_batch, "BATCH_IMAGES", 5)  # several batches, with corrupt files inside them
    root = tmp_path / "set"
    return root, write_set(root)


def torchvision_decode(path: Path) -> torch.Tensor:
    return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)


def test_the_batched_cache_equals_the_one_file_cache_pixel_for_pixel(jpeg_set):
    root, rels = jpeg_set
    one_file = image_io.stack_images(root, rels, "one-file", 1, batch_device=None)
    batched = image_io.stack_images(root, rels, "batched", 1, batch_device="cpu")
    assert batched.corrupt == one_file.corrupt == CORRUPT
    assert batched.kept == one_file.kept and len(batched.kept) == len(rels) - 2
    assert batched.resized == one_file.resized == [LARGER]
    assert batched.refused == one_file.refused == {}
    assert batched.sizes == one_file.sizes and batched.channel_sums == one_file.channel_sums
    assert torch.equal(batched.images, one_file.images)  # libjpeg-turbo both ways: no difference at all
    for image, index in zip(batched.images, batched.kept):  # and each equals torchvision decoding its file
        expected = torchvision_decode(root / rels[index])
        if rels[index] == LARGER:
            expected = TF.resize(expected, [SIZE, SIZE], antialias=True)
        assert torch.equal(image, expected), rels[index]
    assert np.array_equal(batched.images[batched.kept.index(rels.index(PNG))].permute(1, 2, 0).numpy(),
                          pixels(77, SIZE))  # the PNG's lossless pixels


def cpu_batches(root):
    """The batch decoder on the CPU over ``root``, with what it found and the files it sent to the
    per-file path (in order)."""
    found, one_file = {"refused": {}, "corrupt": []}, []

    def fallback(rel):
        one_file.append(rel)
        return image_io._decode_noting(root, rel, found)

    batched = jpeg_batch.BatchedJpegs(
        "cpu", lambda rel: image_io._batch_content(root, root.resolve(), rel, (SIZE, SIZE)), fallback)
    return batched, found, one_file


def test_only_batchable_jpegs_enter_a_batch_and_a_corrupt_one_spoils_none_of_the_others(jpeg_set):
    root, rels = jpeg_set
    batched, found, one_file = cpu_batches(root)
    images = list(batched(rels))
    assert len(images) == len(rels)
    assert one_file == [MISSING_TABLE, PNG, TRUNCATED, LARGER]  # in load order: the batch keeps the files' order
    assert found["corrupt"] == CORRUPT and batched.decoded == len(rels) - 4
    assert images[rels.index(MISSING_TABLE)] is None and images[rels.index(TRUNCATED)] is None
    # The second batch of 5 JPEGs (b/01, b/02, the broken b/03, c/00, c/02; the others are not batchable):
    # the failed call is decoded again one image at a time, and the broken one alone leaves the batch.
    for rel in ("cls_data/train/b/01.jpg", "cls_data/train/b/02.jpg", "cls_data/train/c/00.jpg",
                "cls_data/train/c/02.jpg"):
        assert torch.equal(images[rels.index(rel)], torchvision_decode(root / rel)), rel
    assert torch.equal(images[rels.index(GRAY)], torchvision_decode(root / GRAY))  # gray to RGB as libjpeg-turbo does


def test_the_batch_decoder_answers_none_only_for_the_file_it_refuses(jpeg_set):
    root, rels = jpeg_set
    names = [rels[0], MISSING_TABLE, rels[1]]
    contents = [read_file(str(root / rel)) for rel in names]
    first, bad, last = jpeg_batch.decode_jpegs(contents, "cpu")
    assert bad is None
    assert torch.equal(first, torchvision_decode(root / names[0]))
    assert torch.equal(last, torchvision_decode(root / names[2]))
    assert jpeg_batch.decode_jpegs([], "cpu") == []
    whole = (root / rels[0]).read_bytes()
    assert jpeg_batch.looks_batchable(whole) and not jpeg_batch.looks_batchable(whole[:-100])


def test_files_that_leave_the_data_set_or_break_the_caps_never_enter_a_batch(jpeg_set, tmp_path, monkeypatch):
    root, rels = jpeg_set
    outside = tmp_path / "outside.jpg"
    outside.write_bytes((root / rels[0]).read_bytes())
    (root / "cls_data/train/a/zz.jpg").symlink_to(outside)
    assert image_io._batch_content(root, root.resolve(), "cls_data/train/a/zz.jpg", (SIZE, SIZE)) is None
    assert image_io._batch_content(root, root.resolve(), rels[0], (SIZE, SIZE)) is not None
    monkeypatch.setenv(config.MAX_IMAGE_PIXELS_ENV, str(SIZE * SIZE - 1))
    assert image_io._batch_content(root, root.resolve(), rels[0], (SIZE, SIZE)) is None
    batched = image_io.stack_images(root, [rels[0], "cls_data/train/a/zz.jpg"], "capped", 1, batch_device="cpu")
    one_file = image_io.stack_images(root, [rels[0], "cls_data/train/a/zz.jpg"], "capped-1", 1, batch_device=None)
    assert batched.refused == one_file.refused and set(batched.refused) == {rels[0], "cls_data/train/a/zz.jpg"}
    assert "leads outside the data set" in batched.refused["cls_data/train/a/zz.jpg"]


def test_the_decode_device_setting_refuses_a_bad_value_clearly(jpeg_set, monkeypatch):
    root, rels = jpeg_set
    monkeypatch.setenv(config.DECODE_DEVICE_ENV, "gpu")
    with pytest.raises(ValueError, match="FACELAB_DECODE_DEVICE must be one of auto, cpu, cuda, got 'gpu'"):
        config.decode_device()
    with pytest.raises(ValueError, match="FACELAB_DECODE_DEVICE"):
        jpeg_batch.batch_device()
    with pytest.raises(ValueError, match="FACELAB_DECODE_DEVICE"):  # what loading a large set then says
        image_io.stack_images(root, rels, "setting", 1)
    monkeypatch.setenv(config.DECODE_DEVICE_ENV, " CPU ")
    assert config.decode_device() == "cpu" and jpeg_batch.batch_device() is None
    monkeypatch.delenv(config.DECODE_DEVICE_ENV)
    assert config.decode_device() == "auto"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fall-back of a host without CUDA")
def test_without_cuda_the_cache_is_decoded_on_the_cpu_and_asking_for_cuda_says_why(monkeypatch, capsys):
    monkeypatch.setenv(config.DECODE_DEVICE_ENV, "auto")
    assert jpeg_batch.batch_device() is None
    monkeypatch.setenv(config.DECODE_DEVICE_ENV, "cuda")
    monkeypatch.setattr(jpeg_batch, "_warned", set())
    assert jpeg_batch.batch_device() is None
    said = capsys.readouterr().err
    assert "FACELAB_DECODE_DEVICE=cuda, but the GPU JPEG decoder is not usable (no CUDA device)" in said
    assert jpeg_batch.probe("cpu") is None  # the probe itself passes where the decoder works


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_batched_cache_matches_the_cpu_cache_within_torchvisions_bound(jpeg_set):
    root, rels = jpeg_set
    one_file = image_io.stack_images(root, rels, "one-file", 1, batch_device=None)
    batched = image_io.stack_images(root, rels, "cuda", 1, batch_device="cuda")
    assert batched.corrupt == one_file.corrupt and batched.kept == one_file.kept
    difference = (batched.images.float() - one_file.images.float()).abs()
    assert difference.mean().item() < jpeg_batch.MEAN_DIFFERENCE_BOUND, difference.max().item()


def test_a_batch_that_fails_whole_stops_the_batches_and_the_one_file_path_decodes_the_rest(jpeg_set, monkeypatch):
    root, rels = jpeg_set
    monkeypatch.setattr(jpeg_batch, "BATCH_IMAGES", jpeg_batch.BROKEN_AFTER)
    spoilt = without_segment((root / rels[0]).read_bytes(), 0xDB)
    for k in range(jpeg_batch.BROKEN_AFTER):
        (root / f"cls_data/train/d/{k:02d}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (root / f"cls_data/train/d/{k:02d}.jpg").write_bytes(spoilt)
    run = [f"cls_data/train/d/{k:02d}.jpg" for k in range(jpeg_batch.BROKEN_AFTER)] + rels[:3]
    batched, found, one_file = cpu_batches(root)
    images = list(batched(run))
    assert batched.broken and batched.decoded == 0 and one_file == run  # nothing batched after the failed batch
    assert found["corrupt"] == run[:jpeg_batch.BROKEN_AFTER]
    for image, rel in zip(images[jpeg_batch.BROKEN_AFTER:], rels[:3]):
        assert torch.equal(image, torchvision_decode(root / rel)), rel
