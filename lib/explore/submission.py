"""A model's submission for the course's competition: its scores of the test pairs
(verification) and its identities for the unlabelled test images (classification).

The scores are those every other FaceLab number comes from: the model's embeddings
(cached on disk per checkpoint, lib.explore.models) and ``lib.eval.metrics.pair_scores``,
the function `python -m lib evaluate` and training score the validation pairs with.
The file format belongs to lib.eval.submission.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lib.data.datasets import PairSet, load_pairs, scan_images, stack_images
from lib.eval.metrics import pair_scores
from lib.eval.submission import classification_rows, to_csv, verification_rows
from lib.explore.identification import best_classes
from lib.explore.models import ExploreModel, cached_embeddings

TEST_PAIRS = "test_pairs.txt"
TEST_IMAGES = "cls_data/test"
Progress = Callable[[float], None] | None


class NoTestData(ValueError):
    """The data set has no test pairs (or no test images) to submit for."""


def has_test_pairs(root) -> bool:
    return (Path(root) / TEST_PAIRS).is_file()


def has_test_images(root) -> bool:
    return (Path(root) / TEST_IMAGES).is_dir()


def no_test_pairs_message(root) -> str:
    return (f"the data set {Path(root).resolve().name} has no {TEST_PAIRS}, so there is nothing to submit: "
            f"its val_pairs.txt has labels and is for validation. Pick the data set that holds the "
            f"course's {TEST_PAIRS} (two image paths a line, no label)")


def load_test_pairs(root) -> PairSet:
    """The test pairs with their images; NoTestData without test_pairs.txt, ValueError when a line
    cannot be scored (the competition needs a score for every pair, in order)."""
    root = Path(root).resolve()
    if not has_test_pairs(root):
        raise NoTestData(no_test_pairs_message(root))
    pair_set = load_pairs(root, TEST_PAIRS)
    if pair_set.problems:
        listed = "; ".join(pair_set.problems[:3]) + (" ..." if len(pair_set.problems) > 3 else "")
        raise ValueError(f"{TEST_PAIRS}: {len(pair_set.problems)} line(s) cannot be scored ({listed}); a submission "
                         "needs a score for every pair, so fix or restore those lines and images")
    return pair_set


def pair_lines(root, pair_set: PairSet) -> list[str]:
    """The text of each test pair's line (the public/private split hashes it)."""
    text = (Path(root).resolve() / TEST_PAIRS).read_text(encoding="utf-8", errors="replace").splitlines()
    return [text[number - 1] for number in pair_set.lines]


def verification_scores(model: ExploreModel, pair_set: PairSet, progress: Progress = None) -> np.ndarray:
    """float32 [P]: each pair's cosine similarity, in the pairs' order. Normalized first, as
    ``lib.eval.metrics.embed`` does, so the scores equal the evaluate command's bit for bit."""
    # float32 exactly as evaluate computes it; a copy: the cached array is read-only
    raw = torch.from_numpy(np.array(cached_embeddings(model, pair_set.images, progress, precision="reference")))
    return pair_scores(F.normalize(raw, dim=1), pair_set.pairs).numpy()


def verification_csv(model: ExploreModel, root, progress: Progress = None) -> str:
    return to_csv(verification_rows(verification_scores(model, load_test_pairs(root), progress)))


def load_test_images(root) -> tuple[list[str], torch.Tensor]:
    """(file names, uint8 images) of cls_data/test, sorted by name; NoTestData without the folder,
    ValueError when an image cannot be read (every one needs a prediction)."""
    root = Path(root).resolve()
    if not has_test_images(root):
        raise NoTestData(f"the data set {root.name} has no {TEST_IMAGES} folder of unlabelled images, so there is "
                         "no classification to submit")
    listing = scan_images(root / TEST_IMAGES, root)
    names = [entry.name for entry in listing.found]
    if listing.refused:
        raise ValueError(f"{TEST_IMAGES}: {len(listing.refused)} file(s) refused ({listing.refused[0]})")
    if not names:
        raise NoTestData(f"{TEST_IMAGES} holds no .jpg or .png image")
    # Named, so a large test folder goes through the data cache (decoded once, memory-mapped) like
    # the splits; the files' sizes and times key it, so a changed folder is decoded again.
    stats = [entry.stat() for entry in listing.found]
    fingerprint = tuple((name, st.st_size, st.st_mtime_ns) for name, st in zip(names, stats))
    stacked = stack_images(root, [f"{TEST_IMAGES}/{name}" for name in names], TEST_IMAGES, fingerprint)
    unreadable = list(stacked.corrupt) + list(stacked.refused)
    if unreadable:
        raise ValueError(f"{TEST_IMAGES}: {len(unreadable)} image(s) cannot be decoded ({unreadable[0]}); "
                         "every test image needs a prediction")
    return names, stacked.images


def predicted_identities(model: ExploreModel, images: torch.Tensor, progress: Progress = None) -> list[str]:
    """The identity each image is classified as (the margin head's cosines or the classifier)."""
    if not model.classes:
        raise ValueError("this checkpoint records no identity names, so its class numbers cannot be named; "
                         "retrain it with this version of FaceLab")
    raw = cached_embeddings(model, images, progress, precision="reference")
    best = best_classes(model, np.array(raw))  # a copy: the cached array is read-only
    return [model.classes[index] for index in best]


def classification_csv(model: ExploreModel, root, progress: Progress = None) -> str:
    names, images = load_test_images(root)
    return to_csv(classification_rows(names, predicted_identities(model, images, progress)))


def submission_csv(model: ExploreModel, root, task: str = "verification", progress: Progress = None) -> str:
    if task == "verification":
        return verification_csv(model, root, progress)
    if task == "classification":
        return classification_csv(model, root, progress)
    raise ValueError(f"task: choose 'verification' or 'classification', got {task!r}")


def submission_name(label: str, task: str) -> str:
    """A file name for the download: "<checkpoint>-<task>.csv" with only safe characters."""
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in label).strip("-.") or "checkpoint"
    return f"{stem[:60]}-{task}.csv"
