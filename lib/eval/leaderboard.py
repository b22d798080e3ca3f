"""The class leaderboard's arithmetic: the public/private split of the test pairs, the hidden
labels file, each part's AUC and the ranking by user.

Like Kaggle's, the board shows everyone a *public* score on part of the test pairs and keeps
the *private* score of the rest for the final ranking, so tuning against the public board
does not pay. A pair is public when a hash of its line and the seed falls below the public
share: the split is the same in every process and after every restart (Python's ``hash`` and
``random`` are not), and editing one line moves only that pair.

The hidden labels never belong in a data root: everything there can be listed, loaded and
echoed by the pages. ``hidden_labels_path`` refuses a file placed inside one.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.base import config

# lib.eval.metrics and lib.eval.submission are imported where they are used: both pull in torch
# (seconds), and computing the split needs neither.

_HASH_SPAN = float(2**64)


def pair_key(line: str) -> str:
    """The part of a pairs line that names the pair ("a.jpg b.jpg"), whatever the spacing or labels."""
    return " ".join(line.split()[:2])


def is_public(line: str, seed: int, public_share: float) -> bool:
    """Whether the pair of ``line`` counts on the public board (stable: a hash, not a random draw)."""
    digest = hashlib.sha256(f"{seed}\n{pair_key(line)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SPAN < public_share


def public_mask(lines: Sequence[str], seed: int, public_share: float) -> np.ndarray:
    return np.array([is_public(line, seed, public_share) for line in lines], dtype=bool)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def hidden_labels_path() -> Path | None:
    """The configured hidden labels file, None when none is configured; ValueError when it lies
    inside a data root or the runs folder (where pages could list or read it) or is missing."""
    path = config.test_labels_file()
    if path is None:
        return None
    for folder in [*config.data_roots(), config.runs_dir()]:
        # Where the name lies and where its links lead: either one inside a root is within the pages' reach.
        if any(_inside(candidate, Path(folder).resolve()) or _inside(candidate, Path(os.path.abspath(folder)))
               for candidate in (path, path.resolve())):
            raise ValueError(f"{config.TEST_LABELS_ENV} names a file inside {folder}, where FaceLab's pages "
                             "can reach it; refused. Move the labels file outside every data root and the "
                             "runs folder (e.g. /etc/facelab/test_labels.csv)")
    if not path.is_file():
        raise ValueError(f"{config.TEST_LABELS_ENV}: no file {path}; point it to the test labels CSV (ID,Label)")
    return path


def load_hidden_labels(expected_pairs: int) -> np.ndarray | None:
    """The hidden labels (int64 [P]), None when none are configured; ValueError when the file is
    refused, unreadable, or does not have one label per test pair."""
    path = hidden_labels_path()
    if path is None:
        return None
    from lib.eval.submission import read_labels
    labels = read_labels(path.read_text(encoding="utf-8", errors="replace"))
    if len(labels) != expected_pairs:
        raise ValueError(f"the hidden labels file has {len(labels)} labels but test_pairs.txt has "
                         f"{expected_pairs} pairs; they must match line for line")
    return labels


@dataclass(frozen=True)
class BoardScore:
    public_auc: float | None   # None: that part has no pair of one kind (same or different)
    private_auc: float | None


def _part_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    from lib.eval.metrics import roc_auc
    if len(set(labels.tolist())) < 2:
        return None
    return roc_auc(scores, labels)


def board_score(scores, labels, public: np.ndarray) -> BoardScore:
    """ROC AUC of the public pairs and of the private ones (scikit-learn's, as the competition's)."""
    scores, labels, public = np.asarray(scores, dtype=np.float64), np.asarray(labels), np.asarray(public, bool)
    if not len(scores) == len(labels) == len(public):
        raise ValueError(f"{len(scores)} scores, {len(labels)} labels and {len(public)} split marks: one each per pair")
    return BoardScore(_part_auc(scores[public], labels[public]), _part_auc(scores[~public], labels[~public]))


@dataclass(frozen=True)
class Entry:
    """One run's standing: who launched it, which run, its scores."""
    user: str
    run: str
    public_auc: float | None
    private_auc: float | None


@dataclass(frozen=True)
class Standing:
    rank: int
    user: str
    run: str
    public_auc: float | None
    private_auc: float | None


def _order(value: float | None) -> float:
    return -value if value is not None else float("inf")


def rank_users(entries: Sequence[Entry], by: str = "public_auc") -> list[Standing]:
    """Each user's best run (by ``by``: "public_auc" or "private_auc"), ranked best first.
    Equal scores share a rank (1, 2, 2, 4), as on Kaggle; a user without a score comes last."""
    if by not in ("public_auc", "private_auc"):
        raise ValueError(f"rank by 'public_auc' or 'private_auc', got {by!r}")
    best: dict[str, Entry] = {}
    for entry in entries:
        held = best.get(entry.user)
        if held is None or _order(getattr(entry, by)) < _order(getattr(held, by)):
            best[entry.user] = entry
    ordered = sorted(best.values(), key=lambda e: (_order(getattr(e, by)), e.user.casefold()))
    standings, rank = [], 0
    for position, entry in enumerate(ordered, start=1):
        if position == 1 or getattr(entry, by) != getattr(ordered[position - 2], by):
            rank = position
        standings.append(Standing(rank, entry.user, entry.run, entry.public_auc, entry.private_auc))
    return standings
