"""A data set is read only inside itself, and no image is decoded past the pixel limit.

Links, pairs lines and oversized images are what a careless or hostile student on a shared
host can put in a data root. Whether a file outside the data set is opened is watched with
inotify, which sees every open of the file, also the ones made by C++ decoders."""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib.base import config
from lib.data.datasets import decode_file, list_identities, list_images, load_pairs, load_split
from lib.data.report import check_dataset
from tests.synthetic_data import make_dataset, pixels, write, write_flat_png

SECRET = "root:x:0:0:the secret line\n"
IN_ACCESS, IN_OPEN = 0x1, 0x20


@contextlib.contextmanager
def opens_of(*paths: Path):
    """Collects (path, inotify mask) for each of ``paths`` (files, or folders and the files in them)
    opened or read meanwhile."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0, "inotify is needed to watch opens"
    watched = {libc.inotify_add_watch(fd, str(path).encode(), IN_OPEN | IN_ACCESS): path for path in paths}
    assert all(wd >= 0 for wd in watched)
    opened: list[tuple[Path, int]] = []
    try:
        yield opened
    finally:
        try:
            events = os.read(fd, 65536)
        except BlockingIOError:
            events = b""
        os.close(fd)
        offset = 0
        while offset < len(events):
            wd, mask, _cookie, length = struct.unpack_from("iIII", events, offset)
            opened.append((watched[wd], mask))
            offset += 16 + length


def small_set(root: Path, **extra) -> dict:
    return make_dataset(root, {"ann": 3, "bob": 2}, {"ann": 1, "bob": 1}, **extra)


@pytest.fixture
def outside(tmp_path) -> dict[str, Path]:
    """Things beside the data set: a face folder with real pictures and a text file named like a secret."""
    person = tmp_path / "elsewhere" / "zed"
    for k in range(2):
        write(person / f"zed_{k}.png", pixels(500 + k))
    secret = tmp_path / "elsewhere" / "passwd"
    secret.write_text(SECRET)
    return {"person": person, "secret": secret, "folder": tmp_path / "elsewhere"}


def refusals(report, path: str) -> list[str]:
    return [message for message in report.errors if message.startswith(path + ":")]


# ----------------------------------------------------------------------------- links inside cls_data and ver_data

def test_an_identity_folder_linked_outside_is_never_listed_nor_opened(tmp_path, outside):
    root = tmp_path / "set"
    small_set(root)
    (root / "cls_data/train/zed").symlink_to(outside["person"], target_is_directory=True)
    (root / "cls_data/dev/zed").symlink_to(outside["person"], target_is_directory=True)
    with opens_of(outside["person"], *outside["person"].iterdir()) as opened:
        train, dev = load_split(root, "train"), load_split(root, "dev")
        report = check_dataset(root)
        listed = list_identities(root / "cls_data/train")
    assert opened == []
    assert train.classes == ["ann", "bob"] == listed and len(train) == 5 and len(dev) == 2
    assert not any("zed" in path for path in train.paths + dev.paths)
    for split in ("train", "dev"):
        [message] = refusals(report, f"cls_data/{split}/zed")
        assert "outside the data set" in message and str(outside["person"]) in message
    assert report.usable and report.classes == 2 and "zed" not in report.train_counts


def test_image_files_linked_outside_are_never_opened_in_any_folder(tmp_path, outside):
    root = tmp_path / "set"
    small_set(root)
    links = ["cls_data/train/ann/evil.jpg", "cls_data/dev/bob/evil.jpg", "ver_data/evil.jpg",
             "cls_data/test/ann/evil.jpg"]
    (root / "cls_data/test/ann").mkdir(parents=True)
    write(root / "cls_data/test/ann/fine.png", pixels(7))
    for link in links:
        (root / link).symlink_to(outside["secret"])
    with opens_of(outside["secret"]) as opened:
        train, dev = load_split(root, "train"), load_split(root, "dev")
        report = check_dataset(root)
        test_images = [entry.name for entry in list_images(root / "cls_data/test/ann")]
        direct = decode_file(root / "ver_data/evil.jpg")
    assert opened == []
    assert (len(train), len(dev), report.ver_images) == (5, 2, 4) and report.corrupt == []
    assert test_images == ["fine.png"] and direct is None
    for link in links[:3]:
        [message] = refusals(report, link)
        assert "outside the data set" in message and str(outside["secret"]) in message
    assert "secret line" not in json.dumps(report.to_dict())


def test_links_that_stay_inside_the_data_set_are_followed(tmp_path):
    root = tmp_path / "set"
    written = small_set(root)
    (root / "cls_data/dev/ann/again.png").symlink_to("../../train/ann/ann_0000.png")
    (root / "cls_data/train/cara").symlink_to("../dev/bob", target_is_directory=True)
    train, dev = load_split(root, "train"), load_split(root, "dev")
    assert train.classes == ["ann", "bob", "cara"]
    again = dev.images[dev.paths.index("cls_data/dev/ann/again.png")]
    assert torch.equal(again, torch.from_numpy(written["cls_data/train/ann/ann_0000.png"]).permute(2, 0, 1))
    assert check_dataset(root).errors == []


def test_a_split_or_ver_data_folder_linked_outside_is_refused_whole(tmp_path, outside):
    other = tmp_path / "other"
    small_set(other)
    root = tmp_path / "set"
    small_set(root)
    for folder in ("cls_data/dev", "ver_data"):
        os.rename(root / folder, tmp_path / folder.replace("/", "_"))
        (root / folder).symlink_to(other / folder, target_is_directory=True)
    with opens_of(*(other / "cls_data/dev").iterdir(), other / "ver_data") as opened:
        report = check_dataset(root)
    assert opened == []
    assert not report.usable and report.dev_images == 0 and report.ver_images == 0 and report.pairs == 0
    assert all(any("outside the data set" in m for m in refusals(report, folder)) for folder in ("cls_data/dev", "ver_data"))


# ----------------------------------------------------------------------------- pairs files

def test_pairs_lines_leaving_the_data_set_are_never_opened_and_listed(tmp_path, outside):
    root = tmp_path / "set"
    climbing = "ver_data/../../elsewhere/passwd"
    pairs = (f"ver_data/v0.png ver_data/v1.png 1\n"
             f"ver_data/v0.png {climbing} 0\n"
             f"{outside['secret']} ver_data/v2.png 0\n"
             f"ver_data/v2.png ver_data/evil.jpg 1\n"
             f"ver_data/v2.png ver_data/v3.png 0\n")
    small_set(root, pairs=pairs)
    (root / "ver_data/evil.jpg").symlink_to(outside["secret"])
    (root / "test_pairs.txt").symlink_to(outside["secret"])
    with opens_of(outside["secret"]) as opened:
        loaded = load_pairs(root)
        report = check_dataset(root)
    assert opened == []
    assert loaded.lines == [1, 5] and report.pairs == 2
    assert [message.split(":")[0] for message in loaded.problems] == ["line 2", "line 3", "line 4"]
    assert all("outside the data set" in message for message in loaded.problems)
    text = "\n".join(report.errors)
    for line in (2, 3, 4):
        assert f"val_pairs.txt line {line}:" in text
    assert "test_pairs.txt" in text and "secret line" not in text


# ----------------------------------------------------------------------------- the pixel limit

@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    write_flat_png(path, 20000, 20000)
    assert path.stat().st_size < 400_000  # a few hundred KB on disk, 1.2 GB once decoded
    return path


def test_default_pixel_limit_and_its_setting(monkeypatch):
    monkeypatch.delenv(config.MAX_IMAGE_PIXELS_ENV, raising=False)
    assert config.max_image_pixels() == 4096 * 4096
    monkeypatch.setenv(config.MAX_IMAGE_PIXELS_ENV, "250000")
    assert config.max_image_pixels() == 250000
    for wrong in ("lots", "0", "-5"):
        monkeypatch.setenv(config.MAX_IMAGE_PIXELS_ENV, wrong)
        with pytest.raises(ValueError, match=config.MAX_IMAGE_PIXELS_ENV):
            config.max_image_pixels()


def test_an_image_above_the_pixel_limit_is_refused_and_reported(tmp_path, huge_png):
    root = tmp_path / "set"
    small_set(root)
    (root / "cls_data/train/ann/huge.jpg").write_bytes(huge_png.read_bytes())
    (root / "ver_data/huge.jpg").write_bytes(huge_png.read_bytes())
    report = check_dataset(root)
    for path in ("cls_data/train/ann/huge.jpg", "ver_data/huge.jpg"):
        [message] = refusals(report, path)
        assert "20000x20000" in message and f"{4096 * 4096:,}" in message and config.MAX_IMAGE_PIXELS_ENV in message
    assert report.usable and report.train_images == 5 and report.corrupt == []
    assert "20000x20000" not in report.image_sizes


def test_the_limit_applies_to_every_image_it_is_set_to(tmp_path, monkeypatch):
    root = tmp_path / "set"
    small_set(root, size=16)
    write(root / "cls_data/train/bob/big.png", pixels(90, 32))
    monkeypatch.setenv(config.MAX_IMAGE_PIXELS_ENV, str(16 * 16))
    train = load_split(root, "train")
    assert len(train) == 5 and "cls_data/train/bob/big.png" not in train.paths
    assert any("32x32" in message and "big.png" in message for message in train.refused)
    assert decode_file(root / "cls_data/train/bob/big.png") is None
    assert decode_file(root / "cls_data/train/bob/bob_0000.png") is not None


def test_a_file_larger_than_any_image_within_the_limit_is_not_read(tmp_path, monkeypatch):
    root = tmp_path / "set"
    small_set(root)
    (root / "ver_data/filler.jpg").write_bytes(b"\xff" * (3 * 2**20))
    monkeypatch.setenv(config.MAX_IMAGE_PIXELS_ENV, "1000")
    with opens_of(root / "ver_data/filler.jpg") as opened:
        report = check_dataset(root)
    assert not [mask for _, mask in opened if mask & IN_ACCESS]  # opened to learn its size, never read
    [message] = refusals(report, "ver_data/filler.jpg")
    assert "3.0 MiB" in message and report.corrupt == []


MEASURE = """
import json, sys
from pathlib import Path
from lib.data.datasets import decode_file
from lib.data.report import check_dataset

def peak_mb():  # VmHWM: this process's own peak; ru_maxrss would start from the parent's (pytest's) peak
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

root = Path(sys.argv[1])
decode_file(root / "ver_data/v0.png")  # the decoders' libraries load before the baseline
before = peak_mb()
report = check_dataset(root)
direct = decode_file(root / "cls_data/train/ann/huge.jpg")
print(json.dumps({"before_mb": before, "growth_mb": peak_mb() - before, "errors": report.errors,
                  "direct_refused": direct is None}))
"""


def test_a_decompression_bomb_costs_no_memory(tmp_path, huge_png):
    """20000x20000 pixels in a tiny PNG named .jpg: decoding it would take 1.2 GB."""
    root = tmp_path / "set"
    small_set(root)
    (root / "cls_data/train/ann/huge.jpg").write_bytes(huge_png.read_bytes())
    result = subprocess.run([sys.executable, "-c", MEASURE, str(root)], cwd=config.PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    print(f"peak RSS {measured['before_mb']:.0f} MB before the check, growth {measured['growth_mb']:.0f} MB")
    assert measured["growth_mb"] < 300 and measured["direct_refused"]
    assert any("huge.jpg" in message and "20000x20000" in message for message in measured["errors"])
