"""What a checkpoint's numbers on a data set mean, said plainly.

A checkpoint records the data set it was trained on and its classes (the identities
of its classifier, lib/store/meta.py). Scored on another data set, its numbers
measure how it transfers, and the pages and the evaluate command say so:

- closed-set numbers (dev top-1/top-5) only where the data set's identities are
  classes of the checkpoint: otherwise no dev image has a right answer it could give;
- "people never seen in training" only when no identity of the pairs is one of its
  classes (by name: LFW files are ``Name_Surname_0001.jpg``), otherwise how many were.

``score_on`` is the evaluate command's path for a data set named on the command line
(any folder: the data roots restrict the browser, not the person at the terminal).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lib.base.config import PROJECT_ROOT
from lib.data.datasets import VERIFICATION_ONLY, PairSet, has_classification, list_identities, load_pairs, load_split
from lib.eval.metrics import cosine_spread, embed, pair_scores, verification_metrics
from lib.explore.identification import identification_accuracy
from lib.explore.models import ExploreModel, cached_embeddings, identity_of, open_model, raw_embeddings
from lib.store.meta import CheckpointMeta, read_meta
from lib.train.evaluation import eval_batch

NO_DEV_REASON = (f"this data set is {VERIFICATION_ONLY} (no cls_data/dev), so only its verification "
                 "images can be shown")


def image_kinds(root) -> tuple[str, ...]:
    """The image choices of the Explore pages this data set offers: "dev" needs a classification split."""
    return ("dev", "verification") if has_classification(root) else ("verification",)


def trained_root(meta: CheckpointMeta | None) -> Path | None:
    """The data set the checkpoint was trained on, resolved; None when its meta records none (or a
    model made elsewhere has no meta). Recipes record it relative to the project (data/lfw64)."""
    recorded = (meta.config or {}).get("data_root") if meta else None
    if not recorded or not isinstance(recorded, str):
        return None
    path = Path(recorded).expanduser()
    return (path if path.is_absolute() else PROJECT_ROOT / path).resolve()


@dataclass(frozen=True)
class Scope:
    """How one checkpoint relates to one data set."""

    label: str
    data_name: str
    trained_on: str | None           # as meta.json records it; None: not recorded
    same_data_set: bool | None       # None: unknown (no recorded data set)
    closed_set: bool                 # dev top-1/top-5 mean something here
    closed_set_reason: str           # why there are none ("" when there are)
    pair_identities: int             # people in the verification images (by file name)
    pair_identities_in_training: int | None  # of those, classes of the checkpoint; None: it records no classes

    @property
    def open_set(self) -> bool | None:
        """True when no pair identity was in training (None: unknown)."""
        known = self.pair_identities_in_training
        return None if known is None else known == 0

    def notes(self) -> list[str]:
        """Plain sentences for the page and the command line (no markdown: labels are user text)."""
        return self.data_notes() + [self.pairs_sentence()]

    def data_notes(self) -> list[str]:
        """What differs from scoring on its own training data: another data set, no closed-set numbers."""
        notes = []
        if self.trained_on is None:
            notes.append(f"{self.label} does not record the data set it was trained on.")
        elif not self.same_data_set:
            notes.append(f"{self.label} was trained on {self.trained_on}, not on this data set "
                         f"({self.data_name}): its numbers here measure how it transfers.")
        if not self.closed_set:
            notes.append(f"No dev top-1/top-5 for {self.label}: {self.closed_set_reason}.")
        return notes

    def pairs_sentence(self) -> str:
        people, known = self.pair_identities, self.pair_identities_in_training
        if known is None:
            return (f"{self.label} records no classes, so whether the {people} people of the pairs were seen "
                    "in training is unknown.")
        if known == 0:
            return f"The pairs show {people} people never seen in training by {self.label}."
        return (f"{known} of the {people} people in the pairs were training identities of {self.label}: "
                "its verification here is not fully open set.")

    def to_dict(self) -> dict:
        return {"trained_on": self.trained_on, "same_data_set": self.same_data_set,
                "closed_set": self.closed_set, "closed_set_reason": self.closed_set_reason or None,
                "pair_identities": self.pair_identities,
                "pair_identities_in_training": self.pair_identities_in_training,
                "open_set": self.open_set, "notes": self.notes()}


def _closed_set(meta: CheckpointMeta | None, num_classes: int, identities: list[str] | None,
                same: bool | None) -> tuple[bool, str]:
    """Whether dev top-1/top-5 mean something, and why not."""
    if identities is None:
        return False, f"the data set is {VERIFICATION_ONLY}"
    classes = set(meta.classes) if meta else set()
    if not classes:  # an old checkpoint: only a classifier of the same size can be read by position
        fits = num_classes == len(identities)
        return fits, "" if fits else (f"it records no class names and has {num_classes} classes, the data set "
                                      f"{len(identities)} identities")
    if same:  # trained here, maybe on the first identities only: those are scored by name
        return True, ""
    known = sum(name in classes for name in identities)
    if known == len(identities):
        return True, ""
    return False, (f"only {known} of the {len(identities)} identities of this data set are classes of the "
                   "checkpoint, so dev images have no right answer it could give")


# Listing HW2P2's 7,000 identity folders (each checked to hold an image inside the data set) takes
# 1.6 s; the page asks once per checkpoint shown, so the answer is kept a minute per folder state.
_IDENTITIES: dict[tuple[str, int], tuple[float, list[str]]] = {}
IDENTITIES_KEPT_S = 60.0


def train_identities(root: Path) -> list[str]:
    """list_identities of the training split, kept IDENTITIES_KEPT_S while its folder is unchanged."""
    split = Path(root) / "cls_data" / "train"
    key = (str(split), split.stat().st_mtime_ns if split.is_dir() else 0)
    kept = _IDENTITIES.get(key)
    if kept is None or time.monotonic() - kept[0] > IDENTITIES_KEPT_S:
        kept = _IDENTITIES[key] = (time.monotonic(), list_identities(split, root))
        for old in [k for k, (at, _) in _IDENTITIES.items() if time.monotonic() - at > IDENTITIES_KEPT_S]:
            _IDENTITIES.pop(old, None)
    return list(kept[1])


def scope_of(label: str, meta: CheckpointMeta | None, num_classes: int, root, pair_paths: list[str]) -> Scope:
    """The Scope of a checkpoint (its meta and classifier size) on the data set at ``root``,
    whose verification images are ``pair_paths``."""
    root = Path(root).resolve()
    trained = trained_root(meta)
    same = None if trained is None else trained == root
    identities = train_identities(root) if has_classification(root) else None
    closed, reason = _closed_set(meta, num_classes, identities, same)
    people = {identity_of(path) for path in pair_paths}
    classes = set(meta.classes) if meta else set()
    in_training = sum(name in classes for name in people) if classes else None
    recorded = (meta.config or {}).get("data_root") if meta else None
    return Scope(label, root.name, str(recorded) if trained is not None else None, same, closed, reason,
                 len(people), in_training)


def model_scope(model: ExploreModel, root, pair_paths: list[str]) -> Scope:
    return scope_of(model.label, model.meta, model.num_classes, root, pair_paths)


def checkpoint_scope(folder, root, pairs_file: str = "val_pairs.txt") -> Scope:
    """The Scope of the checkpoint in ``folder`` (its meta.json only, no weights) on a data set."""
    meta = read_meta(folder)
    return scope_of(Path(folder).name, meta, meta.spec.num_classes, root, load_pairs(root, pairs_file).paths)


def shared_pairs_caption(scopes: list[Scope], pairs_file: str = "val_pairs.txt") -> str:
    """The caption under a verification table: "people never seen in training" only when true of
    every checkpoint shown; otherwise each checkpoint's own sentence."""
    if scopes and all(scope.open_set for scope in scopes):
        return f"Verification numbers use the labeled pairs of {pairs_file} (people never seen in training)."
    return f"Verification numbers use the labeled pairs of {pairs_file}. " + " ".join(
        scope.pairs_sentence() for scope in scopes)


# ----------------------------------------------------------------------------- the evaluate command

@dataclass
class DataSetReport:
    """evaluate's answer for a data set named on the command line."""

    folder: Path
    data_root: Path
    pairs_file: str
    metrics: dict
    trained_metrics: dict
    scope: Scope


def _pair_metrics(model: ExploreModel, pairs: PairSet, flip: bool, device: str) -> dict:
    if flip or device != "cpu":
        batch = eval_batch(model.model, pairs.images)
        embeddings = embed(model.model.to(device), pairs.images, model.mean, model.std, batch, flip, device)
    else:  # the same float32 numbers, computed once and shared with later runs through the disk cache
        raw = torch.from_numpy(np.array(cached_embeddings(model, pairs.images, precision="reference")))
        embeddings = F.normalize(raw, dim=1)  # as embed normalizes: the scores of a submission, bit for bit
    bad = int((~torch.isfinite(embeddings).all(dim=1)).sum())
    if bad:
        raise ValueError(f"the embeddings of {bad} of {len(embeddings)} verification images are NaN or infinite")
    scores = pair_scores(embeddings, pairs.pairs)
    result = verification_metrics(scores, pairs.labels, pairs.folds)
    metrics = result.summary()
    metrics["kfold_folds"] = int(result.kfold_accuracies.size)
    metrics["cosine_spread"] = cosine_spread(scores)
    return metrics


def _dev_metrics(model: ExploreModel, root: Path) -> dict:
    """Dev top-1/top-5 by class name (called only where the Scope says they mean something), on the
    CPU: the dev split is small, and the classifier reads the same raw embeddings the pages do."""
    dev = load_split(root, "dev")
    index = {name: i for i, name in enumerate(model.classes or dev.classes)}
    keep = [i for i, label in enumerate(dev.labels.tolist()) if dev.classes[label] in index]
    if not keep:
        return {}
    raw = raw_embeddings(model.model, dev.images[keep], model.mean, model.std)
    targets = torch.tensor([index[dev.classes[dev.labels[i]]] for i in keep])
    accuracy = identification_accuracy(model, raw, targets, ks=(1, 5))
    return {"dev_top1": accuracy[1], "dev_top5": accuracy[5]}


@torch.no_grad()
def score_on(folder, data_root, pairs_file: str | None = None, flip: bool = False,
             device: str = "cpu") -> DataSetReport:
    """Verification metrics of a checkpoint on the data set at ``data_root`` (any folder the user
    names; files inside it that lead outside are still refused), dev top-1/top-5 where its classes
    are the data set's identities, and the Scope saying what the numbers mean. ValueError when the
    checkpoint or the data set cannot be used."""
    root = Path(data_root).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"data set {str(data_root)!r} is not a folder")
    model = open_model(folder)
    model.model.eval()
    pairs_file = pairs_file or "val_pairs.txt"
    started = time.perf_counter()
    pairs = load_pairs(root, pairs_file)
    scope = model_scope(model, root, pairs.paths)
    metrics = {}
    if scope.closed_set:  # before the pairs: they may move the model to another device
        metrics.update(_dev_metrics(model, root))
    metrics.update(_pair_metrics(model, pairs, flip, device))
    metrics["eval_s"] = time.perf_counter() - started
    return DataSetReport(Path(folder), root, pairs_file, metrics, dict(model.meta.metrics), scope)
