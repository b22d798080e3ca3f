"""The competition's submission file, and the course's cut-offs.

The scores in the file are compared with scores computed independently: the pairs file parsed
here, its images decoded with torchvision, embedded with the evaluate command's ``embed`` and
scored with its ``pair_scores``."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import ImageReadMode, decode_image

from lib.__main__ import main
from lib.base import config
from lib.eval import cutoffs
from lib.eval.metrics import classify, embed, pair_scores
from lib.eval.submission import read_rows, read_verification, to_csv, verification_rows, write_submission
from lib.explore.models import open_model
from lib.explore.submission import NoTestData, load_test_pairs, submission_csv, verification_scores
from lib.model.net import FaceNet
from lib.store.checkpoint import load_checkpoint, save_checkpoint
from lib.ui import runs as runs_ui
from tests.explore_models import _like_trained, make_mini_dataset, small_spec

NORMALIZE = {"mean": [0.5, 0.42, 0.38], "std": [0.27, 0.24, 0.24]}


def make_checkpoint(folder: Path, classes: list[str], seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = _like_trained(FaceNet(small_spec(classes=len(classes)))).eval()
    meta = {"classes": classes, "loss": "ce", "epoch": 1, "normalize": NORMALIZE,
            "metrics": {"dev_top1": 0.06, "auc": 0.74}}
    return save_checkpoint(folder, model, meta)


def add_test_files(root: Path) -> tuple[list[str], list[int]]:
    """test_pairs.txt: the validation pairs in another order, without labels; cls_data/test: the
    dev images under flat names. Returns the test lines and their hidden labels."""
    rows = [line.split() for line in (root / "val_pairs.txt").read_text().splitlines()]
    order = np.random.default_rng(0).permutation(len(rows))
    lines = [f"{rows[i][0]} {rows[i][1]}" for i in order]
    (root / "test_pairs.txt").write_text("\n".join(lines) + "\n")
    test = root / "cls_data" / "test"
    test.mkdir(parents=True)
    for index, image in enumerate(sorted((root / "cls_data" / "dev").glob("*/*.jpg"))):
        shutil.copy(image, test / f"{index:05d}.jpg")
    return lines, [int(rows[i][2]) for i in order]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = make_mini_dataset(tmp_path_factory.mktemp("sets") / "mini", identities=6, pairs=30)
    lines, labels = add_test_files(root)
    classes = sorted(p.name for p in (root / "cls_data" / "train").iterdir())
    folder = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best", classes)
    return root, folder, lines, labels


def independent_scores(root: Path, folder: Path, lines: list[str]) -> np.ndarray:
    """The evaluate path: FaceLab's loader left out, torchvision decodes, ``embed`` + ``pair_scores``."""
    names = sorted({name for line in lines for name in line.split()})
    images = torch.stack([decode_image(str(root / name), mode=ImageReadMode.RGB) for name in names])
    loaded = load_checkpoint(folder)
    embeddings = embed(loaded.model, images, NORMALIZE["mean"], NORMALIZE["std"])
    index = {name: i for i, name in enumerate(names)}
    pairs = [[index[a], index[b]] for a, b in (line.split() for line in lines)]
    return pair_scores(embeddings, pairs).numpy()


def test_cli_writes_one_row_per_test_pair_in_file_order(setup, tmp_path, capsys):
    root, folder, lines, _ = setup
    out = tmp_path / "submission.csv"
    assert main(["submit", str(folder), "--data", str(root), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and f"wrote {len(lines)} rows" in captured.err  # progress on stderr
    text = out.read_text()
    assert text.splitlines()[0] == "ID,Label"
    rows = read_rows(text)
    assert [row_id for row_id, _ in rows] == [str(i) for i in range(len(lines))]
    scores = read_verification(text)
    assert np.array_equal(scores.astype(np.float32), independent_scores(root, folder, lines))  # bit for bit


def test_scores_read_back_exactly(setup):
    root, folder, _, _ = setup
    computed = verification_scores(open_model(folder), load_test_pairs(root))
    text = submission_csv(open_model(folder), root)
    assert np.array_equal(read_verification(text).astype(np.float32), computed)


def test_classification_names_the_classifier_choice(setup, tmp_path, capsys):
    root, folder, _, _ = setup
    out = tmp_path / "classes.csv"
    assert main(["submit", str(folder), "--data", str(root), "--out", str(out), "--task", "classification"]) == 0
    rows = read_rows(out.read_text())
    files = sorted(p.name for p in (root / "cls_data" / "test").iterdir())
    assert [name for name, _ in rows] == files
    images = torch.stack([decode_image(str(root / "cls_data" / "test" / f), mode=ImageReadMode.RGB) for f in files])
    loaded = load_checkpoint(folder)
    best = classify(loaded.model, images, NORMALIZE["mean"], NORMALIZE["std"]).argmax(dim=1).tolist()
    assert [label for _, label in rows] == [loaded.meta.classes[i] for i in best]


def test_a_large_test_folder_is_decoded_once_into_the_data_cache(setup, tmp_path, monkeypatch):
    from lib.data.images import decode_count
    from lib.explore.submission import load_test_images

    root, _, _, _ = setup
    monkeypatch.setenv("FACELAB_IN_MEMORY_DATA_BYTES", "1")  # every set counts as large
    monkeypatch.setenv("FACELAB_DATA_CACHE_DIR", str(tmp_path / "cache"))
    names, first = load_test_images(root)
    decoded = decode_count()
    again_names, again = load_test_images(root)
    assert decode_count() == decoded and again_names == names  # read back, nothing decoded twice
    assert list((tmp_path / "cache").glob("*.npy")) and torch.equal(torch.as_tensor(np.asarray(again)), first)
    files = [root / "cls_data" / "test" / name for name in names]
    reference = torch.stack([decode_image(str(f), mode=ImageReadMode.RGB) for f in files])
    assert torch.equal(torch.as_tensor(np.asarray(first)), reference)


def test_a_data_set_without_test_pairs_says_so(setup, tmp_path, capsys):
    _, folder, _, _ = setup
    root = make_mini_dataset(tmp_path / "no-test", identities=3, pairs=4)
    assert main(["submit", str(folder), "--data", str(root), "--out", str(tmp_path / "x.csv")]) == 2
    error = capsys.readouterr().err
    assert "has no test_pairs.txt, so there is nothing to submit" in error and "Traceback" not in error
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(NoTestData, match="no cls_data/test folder"):
        submission_csv(open_model(folder), root, "classification")


def test_a_test_pair_that_cannot_be_scored_is_named(setup, tmp_path):
    root, folder, lines, _ = setup
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    (broken / "test_pairs.txt").write_text("\n".join(lines[:3] + ["ver_data/nobody.jpg " + lines[3].split()[1]]))
    with pytest.raises(ValueError, match="line 4: 'ver_data/nobody.jpg' not found"):
        submission_csv(open_model(folder), broken)


def test_format_round_trip_and_bad_files(tmp_path):
    scores = np.array([0.1, -0.25, 1.0, 0.3333333], dtype=np.float32)
    path = write_submission(tmp_path / "s.csv", verification_rows(scores))
    assert path.read_text() == "ID,Label\n0,0.1\n1,-0.25\n2,1\n3,0.3333333\n"
    assert np.array_equal(read_verification(path.read_text()).astype(np.float32), scores)
    with pytest.raises(ValueError, match="header 'ID,Label'"):
        read_rows("id,score\n0,0.5\n")
    with pytest.raises(ValueError, match="row 2: ID '3', expected 1"):
        read_verification(to_csv([("0", "0.5"), ("3", "0.1")]))
    with pytest.raises(ValueError, match="not finite"):
        verification_rows([float("nan")])


# ----------------------------------------------------------------------------- cut-offs

@pytest.mark.parametrize("top1, auc, early", [
    (0.055, 0.75, True),                     # exactly at both cut-offs: "at least" passes
    (np.nextafter(0.055, 0), 0.75, False),   # a hair below 5.5%
    (0.055, np.nextafter(0.75, 0), False),   # a hair below 0.75 AUC
    (0.9, None, None),                       # no AUC measured: cannot tell
])
def test_early_cutoff_at_its_boundaries(top1, auc, early):
    found = cutoffs.verdicts({"dev_top1": top1, "auc": auc}, cutoffs.load_settings())
    assert cutoffs.level_passed(found, "early") is early
    assert cutoffs.level_passed(found, "final") is None  # the course notes give no final numbers


def test_an_instructors_file_sets_the_final_cutoff(tmp_path, monkeypatch):
    (tmp_path / "course.toml").write_text("[final]\nclassification_accuracy = 0.9\nverification_auc = 0.95\n")
    monkeypatch.setenv(config.CUTOFFS_ENV, str(tmp_path / "course.toml"))
    settings = cutoffs.load_settings()
    assert settings.cutoffs["early"] == {"classification": 0.055, "verification": 0.75}  # kept from the defaults
    found = cutoffs.verdicts({"dev_top1": 0.9, "auc": 0.9499}, settings)
    assert cutoffs.short_text(found) == "early ✓ · final ✗"
    assert "verification AUC 0.950 (needs 0.950) ✗" in cutoffs.long_text(found)[1]  # 0.9499 rounds up: still misses


def test_a_bad_cutoffs_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "course.toml").write_text("[early]\nclassification_accuracy = 5.5\n")
    monkeypatch.setenv(config.CUTOFFS_ENV, str(tmp_path / "course.toml"))
    with pytest.raises(ValueError, match=r"early.classification_accuracy: expected a number from 0 to 1 .*5.5"):
        cutoffs.load_settings()
    assert runs_ui.cutoff_cell([{"epoch": 1, "auc": 0.8}]) == "?"  # the Runs table keeps working


def test_runs_table_judges_the_best_checkpoints_epoch(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1, "dev_top1": 0.2, "auc": 0.8}\n'
                                       '{"epoch": 2, "dev_top1": 0.04, "auc": 0.7}\n')
    row = runs_ui.compare_rows([("r", run)])[0]
    assert row["cut-offs"] == "early ✓ · final –"  # epoch 1 (best AUC), not the last one, which misses
