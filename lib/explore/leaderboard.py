"""The class leaderboard's data: every run's best checkpoint scored on the hidden test labels.

A run's test-pair scores are computed once per checkpoint *content* (the weights' hash) and
kept in ``.cache/embeddings/leaderboard``; the AUCs are recomputed from them on every refresh,
which takes milliseconds, so the page stays fast while jobs finish and a changed labels file
or split applies at once. The hash of a weights file is itself remembered by the file's
size and modification time: hashing hundreds of MB on every refresh would not be fast.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.base import config
from lib.base.files import atomic_save_npy, file_fingerprint
from lib.eval.cutoffs import Settings
from lib.eval.leaderboard import Entry, board_score, load_hidden_labels, public_mask
from lib.explore.models import cache_dir, images_fingerprint, open_model
from lib.explore.submission import load_test_pairs, pair_lines, verification_scores
from lib.jobs.queue import acting_names, job_users
from lib.store.checkpoint import MODEL_FILE, is_checkpoint
from lib.store.run_folder import run_folders

_LOCK = threading.Lock()
_FINGERPRINTS: dict[tuple, str] = {}


@dataclass(frozen=True)
class HeldOutSet:
    """The configured test pairs with their hidden labels and public/private marks."""
    root: Path
    pair_set: object    # lib.data.pairs.PairSet
    labels: np.ndarray  # int64 [P], 1 same, 0 different
    public: np.ndarray  # bool [P]
    key: str            # fingerprint of the pairs and their pixels: part of every cache key


class NotConfigured(ValueError):
    """No hidden labels are configured on this host (the usual case outside a class server)."""


def load_test_set(settings: Settings) -> HeldOutSet:
    """The leaderboard's test set; NotConfigured without FACELAB_TEST_LABELS, ValueError when
    the labels file is refused or does not fit the data set's test_pairs.txt."""
    if config.test_labels_file() is None:
        raise NotConfigured(f"it needs the hidden test labels, which an instructor names with {config.TEST_LABELS_ENV} "
                            f"and {config.LEADERBOARD_DATA_ENV} (see the README)")
    root = config.leaderboard_data()
    if root is None or not root.is_dir():
        raise ValueError(f"{config.LEADERBOARD_DATA_ENV} must name the data set folder whose test_pairs.txt the "
                         f"hidden labels belong to, got {str(root or '') or 'nothing'}")
    pair_set = load_test_pairs(root)
    labels = load_hidden_labels(len(pair_set))
    public = public_mask(pair_lines(root, pair_set), settings.seed, settings.public_share)
    key = hashlib.sha256(f"{images_fingerprint(pair_set.images)}|{pair_set.pairs.numpy().tobytes().hex()}"
                         .encode()).hexdigest()[:32]
    return HeldOutSet(root, pair_set, labels, public, key)


def weights_fingerprint(folder: Path) -> str:
    """The hash of a checkpoint's weights, hashed again only when the file changed."""
    path = Path(folder) / MODEL_FILE
    info = path.stat()
    memo = (str(path.resolve()), info.st_size, info.st_mtime_ns)
    with _LOCK:
        if memo in _FINGERPRINTS:
            return _FINGERPRINTS[memo]
    fingerprint = file_fingerprint(path)
    with _LOCK:
        _FINGERPRINTS[memo] = fingerprint
    return fingerprint


def _scores_file(fingerprint: str, test_set: HeldOutSet) -> Path:
    name = hashlib.sha256(f"{fingerprint}|{test_set.key}".encode()).hexdigest()[:40]
    return cache_dir() / "leaderboard" / f"{name}.npy"


def checkpoint_test_scores(folder: Path, test_set: HeldOutSet) -> np.ndarray:
    """A checkpoint's scores of the test pairs: from the disk cache, else computed and kept."""
    path = _scores_file(weights_fingerprint(folder), test_set)
    try:
        cached = np.load(path, allow_pickle=False)
        if cached.shape == (len(test_set.labels),):
            return cached
    except (OSError, ValueError):
        pass  # not computed yet, or a damaged file: compute it again
    scores = verification_scores(open_model(folder), test_set.pair_set)
    try:
        atomic_save_npy(path, scores)
    except OSError:
        pass  # a read-only or full disk costs the cache only
    return scores


@dataclass(frozen=True)
class BoardData:
    entries: list[Entry]
    skipped: list[str]  # runs that could not be scored, with why (for instructors)


def board_entries(runs_dir: Path, test_set: HeldOutSet) -> BoardData:
    """One entry per run with a best checkpoint and a named owner; runs launched without a name
    (or with the command line, outside the queue) belong to no one and are not ranked."""
    users = job_users(runs_dir)
    entries, skipped = [], []
    for run in run_folders(runs_dir):
        user = users.get(run.id, "")
        if not acting_names(user) or not is_checkpoint(run.best):
            continue
        try:
            scores = checkpoint_test_scores(run.best, test_set)
        except (ValueError, OSError) as err:  # a checkpoint being written, or a diverged model
            skipped.append(f"{run.id}: {err}")
            continue
        score = board_score(scores, test_set.labels, test_set.public)
        entries.append(Entry(user, run.run_name() or run.id, score.public_auc, score.private_auc))
    return BoardData(entries, skipped)
