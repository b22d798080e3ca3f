"""lib/data/datasets.py and the data check: the embedded LFW-64 numbers, exact pixels against PIL, and broken copies."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lib.base import config
from lib.data.datasets import channel_stats, find_datasets, load_pairs, load_split, parse_pairs_text, resolve_dataset
from lib.data.report import check_dataset
from tests.synthetic_data import make_dataset, pixels, write

EMBEDDED = config.EMBEDDED_DATA
PYTHON = sys.executable


def data_check(root, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "lib", "data-check", str(root), *extra], cwd=config.PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------------- the embedded data

def test_embedded_check_matches_the_published_counts():
    report = check_dataset(EMBEDDED)
    assert (report.classes, report.train_images, report.dev_images, report.ver_images) == (298, 2802, 691, 1549)
    assert (report.pairs, report.same_pairs, report.different_pairs) == (1000, 500, 500)
    assert report.errors == [] and report.corrupt == [] and report.usable
    assert report.image_sizes == {"64x64": 2802 + 691 + 1549}
    assert sum(report.train_counts.values()) == 2802 and len(report.train_counts) == 298


def test_embedded_splits_labels_follow_folders_and_sorted_train_order():
    train, dev = load_split(EMBEDDED, "train"), load_split(EMBEDDED, "dev")
    assert train.images.shape == (2802, 3, 64, 64) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and dev.images.shape == (691, 3, 64, 64)
    assert train.classes == sorted(os.listdir(EMBEDDED / "cls_data" / "train")) == dev.classes
    for split in (train, dev):
        folders = [path.split("/")[2] for path in split.paths]
        assert folders == [split.classes[i] for i in split.labels.tolist()]
    assert load_split(EMBEDDED, "train") is train  # decoded once, then served from memory


def test_embedded_pixels_match_pil():
    train = load_split(EMBEDDED, "train")
    for index in (0, 1234, 2801):
        reference = np.asarray(Image.open(EMBEDDED / train.paths[index]).convert("RGB"), dtype=np.int16)
        ours = train.images[index].permute(1, 2, 0).numpy().astype(np.int16)
        # Two JPEG decoders may round an IDCT differently by one level, never more.
        assert np.abs(ours - reference).max() <= 2 and np.abs(ours - reference).mean() < 0.2


def test_embedded_pairs_follow_the_file():
    pairs = load_pairs(EMBEDDED)
    lines = (EMBEDDED / "val_pairs.txt").read_text().split("\n")
    assert pairs.pairs.shape == (1000, 2) and int(pairs.labels.sum()) == 500
    for p in (0, 499, 999):
        a, b, label = lines[p].split()
        assert [pairs.paths[i] for i in pairs.pairs[p].tolist()] == [a, b] and pairs.labels[p] == int(label)


def test_cli_json_on_embedded_data():
    result = data_check(EMBEDDED, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key, value in {"classes": 298, "train_images": 2802, "dev_images": 691, "ver_images": 1549,
                       "pairs": 1000, "same_pairs": 500, "corrupt": [], "errors": [], "usable": True}.items():
        assert report[key] == value


# ----------------------------------------------------------------------------- synthetic sets with known pixels

def test_channel_stats_and_pixels_exact_on_png_set(tmp_path):
    written = make_dataset(tmp_path, {"ann": 3, "bob": 2}, {"ann": 1, "bob": 1})
    train = load_split(tmp_path, "train")
    expected = np.stack([written[p] for p in train.paths]).astype(np.float64) / 255.0
    assert torch.equal(train.images, torch.from_numpy(np.stack([written[p] for p in train.paths])).permute(0, 3, 1, 2))
    mean, std = channel_stats(tmp_path)
    np.testing.assert_allclose(mean, expected.mean(axis=(0, 1, 2)), atol=1e-12)
    np.testing.assert_allclose(std, expected.std(axis=(0, 1, 2)), atol=1e-12)
    assert train.labels.tolist() == [0, 0, 0, 1, 1] and train.classes == ["ann", "bob"]


def test_odd_sizes_grayscale_and_changes_on_disk(tmp_path):
    make_dataset(tmp_path, {"ann": 3, "bob": 2}, {"ann": 1, "bob": 1}, size=16)
    write(tmp_path / "cls_data/train/bob/gray.png", pixels(99, 16, mode="L"))
    write(tmp_path / "cls_data/train/bob/big.png", pixels(98, 32))
    train = load_split(tmp_path, "train")
    assert train.images.shape == (7, 3, 16, 16) and train.resized == ["cls_data/train/bob/big.png"]
    gray = train.images[train.paths.index("cls_data/train/bob/gray.png")]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[0], torch.from_numpy(pixels(99, 16, mode="L")))
    report = check_dataset(tmp_path)
    assert report.image_sizes == {"16x16": 6 + 2 + 4, "32x32": 1} and report.usable
    assert any("not 16x16" in message for message in report.errors)
    write(tmp_path / "cls_data/train/ann/new.png", pixels(97, 16))  # the cache notices a new file
    assert len(load_split(tmp_path, "train")) == 8


def test_pairs_problems_keep_the_good_lines(tmp_path):
    text = ("ver_data/v0.png ver_data/v1.png 1\n"
            "only_one_token\n"
            "ver_data/v2.png ver_data/missing.png 0\n"
            "ver_data/v2.png ver_data/v3.png 7\n"
            "ver_data/v2.png ver_data/../../outside.png 1\n"
            "\n# a comment\n"
            "ver_data/v2.png ver_data/v3.png 0\n")
    make_dataset(tmp_path, {"ann": 2, "bob": 2}, {"ann": 1, "bob": 1}, pairs=text)
    pairs = load_pairs(tmp_path)
    assert pairs.labels.tolist() == [1, 0] and pairs.lines == [1, 8]
    assert [p.split(":")[0] for p in pairs.problems] == ["line 2", "line 3", "line 4", "line 5"]
    assert "missing.png' not found" in pairs.problems[1] and "outside" in pairs.problems[3]


def test_pairs_file_without_usable_line_raises_with_line_numbers(tmp_path):
    make_dataset(tmp_path, {"ann": 2, "bob": 2}, {"ann": 1, "bob": 1}, pairs="a b c d\nver_data/x.png ver_data/v1.png 1\n")
    with pytest.raises(ValueError, match=r"no usable pair.*line 1.*line 2"):
        load_pairs(tmp_path)
    with pytest.raises(ValueError, match="not found"):
        load_pairs(tmp_path, "test_pairs.txt")


def test_parse_pairs_text_labels():
    rows, problems = parse_pairs_text("a b 1\nc d\ne f 0\ng h yes\n")
    assert rows == [(1, "a", "b", 1, None), (2, "c", "d", -1, None), (3, "e", "f", 0, None)]
    assert problems[0].startswith("line 4:")


def test_parse_pairs_text_fold_column():
    rows, problems = parse_pairs_text("a b 1 1\n# LFW numbers its folds 1 to 10\nc d 0 10\ne f 1 x\ng h 0 -1\n"
                                      "i j 1 2 3\nk l yes 2\n")
    assert rows == [(1, "a", "b", 1, 1), (3, "c", "d", 0, 10)]
    assert [message.split(":")[0] for message in problems] == ["line 4", "line 5", "line 6", "line 7"]
    assert all("1|0 [fold]" in message for message in problems)


def test_parse_pairs_text_mixed_fold_columns_name_the_line():
    rows, problems = parse_pairs_text("a b 1 1\nc d 0\ne f 1 2\ng h\n")
    assert [row.line for row in rows] == [1, 3] and [row.fold for row in rows] == [1, 2]
    assert problems == ["line 2: no fold column, but line 1 has one (give every line a fold, or none)",
                        "line 4: no fold column, but line 1 has one (give every line a fold, or none)"]
    rows, problems = parse_pairs_text("malformed\na b 1\nc d 0 4\n")
    assert [row.line for row in rows] == [2] and rows[0].fold is None
    assert problems[1] == "line 3: a fold column (4), but line 2 has none (give every line a fold, or none)"


FOLD_PAIRS = ("ver_data/v0.png ver_data/v1.png 1 1\n"
              "ver_data/v2.png ver_data/v3.png 0 1\n"
              "ver_data/v0.png ver_data/v2.png 1 2\n"
              "ver_data/v1.png ver_data/v3.png 0 2\n")


def test_pairs_with_a_fold_column_load_and_pass_the_check(tmp_path):
    make_dataset(tmp_path, {"ann": 2, "bob": 2}, {"ann": 1, "bob": 1}, pairs=FOLD_PAIRS)
    pairs = load_pairs(tmp_path)
    assert pairs.labels.tolist() == [1, 0, 1, 0] and pairs.folds.tolist() == [1, 1, 2, 2]
    assert pairs.folds.dtype == torch.int64 and pairs.problems == []
    report = check_dataset(tmp_path)
    assert report.usable and report.errors == []
    assert (report.pairs, report.same_pairs, report.different_pairs) == (4, 2, 2)
    assert load_pairs(EMBEDDED).folds is None  # three columns: no folds


def test_a_fold_column_keeps_its_folds_when_a_line_is_skipped(tmp_path):
    make_dataset(tmp_path, {"ann": 2, "bob": 2}, {"ann": 1, "bob": 1},
                 pairs=FOLD_PAIRS + "ver_data/v0.png ver_data/missing.png 1 3\nver_data/v3.png ver_data/v0.png 0 3\n")
    pairs = load_pairs(tmp_path)
    assert pairs.lines == [1, 2, 3, 4, 6] and pairs.folds.tolist() == [1, 1, 2, 2, 3]


def test_mixed_fold_columns_are_reported_by_the_check(tmp_path):
    make_dataset(tmp_path, {"ann": 2, "bob": 2}, {"ann": 1, "bob": 1},
                 pairs=FOLD_PAIRS + "ver_data/v3.png ver_data/v0.png 0\n")
    report = check_dataset(tmp_path)
    assert report.usable and report.pairs == 4  # the odd line is skipped, the rest still measure
    assert report.errors == ["val_pairs.txt line 5: no fold column, but line 1 has one "
                             "(give every line a fold, or none)"]
    result = data_check(tmp_path)
    assert result.returncode == 0 and "line 5: no fold column" in result.stdout


def test_a_single_fold_is_reported_by_the_check(tmp_path):
    make_dataset(tmp_path, {"ann": 2, "bob": 2}, {"ann": 1, "bob": 1}, pairs=FOLD_PAIRS.replace(" 2\n", " 1\n"))
    report = check_dataset(tmp_path)
    assert report.usable and report.errors == [
        "val_pairs.txt: the fold column names 1 fold (1); k-fold accuracy needs at least 2, so it is not measured"]


@pytest.mark.parametrize("damage, fatal_words", [
    (lambda root: (root / "val_pairs.txt").unlink(), "no val_pairs.txt"),
    (lambda root: shutil.rmtree(root / "cls_data" / "dev"), "no folder cls_data/dev"),
    (lambda root: shutil.rmtree(root / "cls_data" / "train" / "bob"), "at least 2"),
    (lambda root: (root / "val_pairs.txt").write_text("ver_data/v0.png ver_data/v1.png 1\n"), "both same"),
])
def test_unusable_sets_exit_1(tmp_path, damage, fatal_words):
    make_dataset(tmp_path, {"ann": 2, "bob": 2}, {"ann": 1, "bob": 1})
    damage(tmp_path)
    report = check_dataset(tmp_path)
    assert not report.usable and any(fatal_words in message for message in report.fatal)


def test_cli_exit_codes_for_unusable_and_missing_sets(tmp_path):
    make_dataset(tmp_path, {"ann": 2, "bob": 2}, {"ann": 1, "bob": 1})
    (tmp_path / "val_pairs.txt").unlink()
    result = data_check(tmp_path)
    assert result.returncode == 1 and "Usable: no" in result.stdout and "UNUSABLE - " in result.stdout
    result = data_check(tmp_path / "nowhere")
    assert result.returncode == 2 and "not a folder" in result.stderr


# ----------------------------------------------------------------------------- a broken copy of LFW-64

@pytest.fixture(scope="module")
def broken_copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("broken") / "lfw64"
    shutil.copytree(EMBEDDED, root)
    train_image = root / "cls_data/train/Al_Gore/Al_Gore_0001.jpg"
    train_image.write_bytes(train_image.read_bytes()[:200])  # a truncated JPEG
    (root / "ver_data/AJ_Lamas_0001.jpg").write_bytes(b"not an image at all")
    with open(root / "val_pairs.txt", "a") as pairs:
        pairs.write("ver_data/Abdullah_Gul_0013.jpg\n")  # line 1001: malformed
        pairs.write("ver_data/Abdullah_Gul_0013.jpg ver_data/Nobody_0001.jpg 0\n")  # line 1002: missing file
    stranger = root / "cls_data/dev/Zz_Stranger"
    stranger.mkdir()
    shutil.copy(root / "ver_data/Aaron_Guiel_0001.jpg", stranger / "Zz_Stranger_0001.jpg")
    return root


def test_broken_copy_lists_every_problem_and_loses_nothing_else(broken_copy):
    report = check_dataset(broken_copy)
    assert report.usable  # every problem was worked around
    assert report.corrupt == ["cls_data/train/Al_Gore/Al_Gore_0001.jpg", "ver_data/AJ_Lamas_0001.jpg"]
    assert (report.classes, report.train_images, report.dev_images, report.ver_images) == (298, 2801, 691, 1548)
    assert report.dev_missing_in_train == ["Zz_Stranger"]
    text = "\n".join(report.errors)
    assert "line 1001" in text and "line 1002: 'ver_data/Nobody_0001.jpg' not found" in text
    pairs_with_bad_image = [line for line, row in enumerate((broken_copy / "val_pairs.txt").read_text().split("\n"), 1)
                            if "AJ_Lamas_0001" in row]
    assert all(f"line {n}:" in text for n in pairs_with_bad_image)
    assert report.pairs == 1000 - len(pairs_with_bad_image)


def test_broken_copy_cli_readable_output(broken_copy):
    result = data_check(broken_copy)
    assert result.returncode == 0, result.stderr
    assert "Al_Gore_0001.jpg: not a decodable image (skipped)" in result.stdout and "Usable: yes" in result.stdout


# ----------------------------------------------------------------------------- finding data sets

def test_find_and_resolve_datasets(tmp_path, monkeypatch):
    make_dataset(tmp_path / "mine", {"ann": 2, "bob": 2}, {"ann": 1, "bob": 1})
    (tmp_path / "not_a_dataset").mkdir()
    monkeypatch.setenv(config.DATA_ROOTS_ENV, str(tmp_path))
    found = find_datasets()
    assert found[0] == EMBEDDED.resolve() and (tmp_path / "mine").resolve() in found
    assert (tmp_path / "not_a_dataset").resolve() not in found
    assert resolve_dataset(tmp_path / "mine") == (tmp_path / "mine").resolve()
    with pytest.raises(ValueError, match="not inside a configured data root"):
        resolve_dataset("/etc")
    with pytest.raises(ValueError, match="not inside"):
        resolve_dataset(tmp_path / ".." / "elsewhere")
