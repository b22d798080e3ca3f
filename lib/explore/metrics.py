"""The numbers the Embeddings page compares side by side: verification (ROC, AUC, EER,
TPR@FPR, k-fold accuracy), dev top-1, angles, and TAR/FAR with the errors at a threshold; and
a warning for a checkpoint whose embeddings collapsed (every pair scores the same cosine)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lib.eval.confidence import min_impostor_pairs
from lib.eval.metrics import (
    FPR_TARGETS,
    VerificationResult,
    cosine_spread,
    geometry,
    is_collapsed,
    tpr_key,
    verification_metrics,
)
from lib.explore.identification import identification_accuracy
from lib.explore.models import ExploreModel, ImageChoice, unit
from lib.explore.scope import Scope


@dataclass
class VerificationView:
    scores: np.ndarray       # [P] cosine similarity of each labeled pair
    labels: np.ndarray       # [P] 1 same, 0 different
    pairs: np.ndarray        # [P, 2] image indices of the verification images
    result: VerificationResult


def verification_view(raw: np.ndarray, pairs: np.ndarray, labels: np.ndarray,
                      folds: np.ndarray | None = None) -> VerificationView:
    """Scores of the labeled pairs from the (raw) embeddings of the verification images;
    ``folds``: each pair's fold from the pairs file (None: the default k-fold split)."""
    pairs, labels = np.asarray(pairs), np.asarray(labels)
    keep = labels >= 0
    pairs, labels = pairs[keep], labels[keep]
    folds = None if folds is None else np.asarray(folds)[keep]
    embeddings = unit(raw)
    scores = np.sum(embeddings[pairs[:, 0]] * embeddings[pairs[:, 1]], axis=1)
    return VerificationView(scores, labels, pairs, verification_metrics(scores, labels, folds, True))


def dev_top1(explore_model: ExploreModel, choice: ImageChoice, raw: np.ndarray,
             scope: Scope | None = None) -> float | None:
    """Top-1 identification accuracy on dev images whose identity the model was trained on
    (by name, so a model trained on a subset of the identities is scored on those); None if none,
    and None when ``scope`` says the checkpoint's classes are not this data set's identities."""
    if scope is not None and not scope.closed_set:
        return None
    classes = explore_model.classes or (choice.names if explore_model.num_classes == len(choice.names)
                                        else [])
    index = {name: i for i, name in enumerate(classes)}
    keep = [i for i, label in enumerate(choice.labels) if choice.names[label] in index]
    if not keep:
        return None
    targets = torch.tensor([index[choice.names[choice.labels[i]]] for i in keep])
    return identification_accuracy(explore_model, raw[keep], targets, ks=(1,))[1]


def angles(raw: np.ndarray, labels: np.ndarray) -> dict:
    """Mean intra-class angle, nearest other class center, spread around the center (degrees)."""
    result = geometry(unit(raw), labels)
    return {key: result[key] for key in ("intra_class_angle", "nearest_class_angle",
                                         "inter_class_angle", "mean_center_sample_angle")}


ROWS = (
    ("ROC AUC", "auc", "{:.4f}"), ("ROC AUC, 95% interval (bootstrap)", "auc_ci", "{}"),
    ("EER", "eer", "{:.2%}"), ("EER, 95% interval (bootstrap)", "eer_ci", "{}"),
    ("pairs (same / different)", "pair_counts", "{}"), ("EER threshold (cosine)", "eer_threshold", "{:.3f}"),
    ("TPR @ FPR = 1e-1", "tpr_at_fpr_1e-1", "{:.2%}"), ("TPR @ FPR = 1e-2", "tpr_at_fpr_1e-2", "{:.2%}"),
    ("TPR @ FPR = 1e-3", "tpr_at_fpr_1e-3", "{:.2%}"), ("k-fold accuracy (mean ± std)", "kfold", "{}"),
    ("folds of the k-fold accuracy", "kfold_folds", "{}"),
    ("dev top-1 (closed set)", "dev_top1", "{:.2%}"),
    ("angle within an identity (deg)", "intra_class_angle", "{:.1f}"),
    ("angle to the nearest other identity (deg)", "nearest_class_angle", "{:.1f}"),
)


def metrics_row(view: VerificationView, top1: float | None, angle: dict) -> dict:
    values = view.result.summary()
    folds = view.result.kfold_accuracies.size  # 10, or as many as the pairs file's fold column names
    # Mean and spread in one short cell (four checkpoints share a row); too few pairs: n/a.
    values["kfold"] = f"{view.result.kfold_mean:.2%} ± {view.result.kfold_std:.2%}" if folds else None
    values["kfold_folds"] = folds or None
    values["dev_top1"] = top1
    values["cosine_spread"] = cosine_spread(view.scores)
    values.update(confidence_cells(view.result))
    values.update(angle)
    return values


def confidence_cells(result: VerificationResult) -> dict:
    """Interval cells ("low – high") and, for each FPR target the impostor pairs cannot resolve,
    "needs ≥ N impostors" (impostor pairs) in place of its TPR (lib.eval.confidence states the rule)."""
    cells = {"pair_counts": f"{result.genuine_pairs:,} / {result.impostor_pairs:,}"}
    if result.intervals is not None and result.intervals.resamples:
        cells["auc_ci"] = "{:.4f} – {:.4f}".format(*result.intervals.auc)
        cells["eer_ci"] = "{:.2%} – {:.2%}".format(*result.intervals.eer)
    for target in FPR_TARGETS:
        if not result.resolves(target):
            needed = min_impostor_pairs(target)  # short, so four checkpoints' cells fit at 1280 px
            cells[tpr_key(target)] = f"needs ≥ {needed if needed < 1000 else f'{needed / 1000:g}k'} impostors"
    return cells


def collapse_warnings(rows: Mapping[str, dict], shown: Callable[[str], str] = str) -> list[str]:
    """One warning per checkpoint (label -> metrics_row) whose embeddings collapsed, its label
    passed through ``shown`` (the page escapes it for markdown)."""
    warnings = []
    for label, row in rows.items():
        spread = row.get("cosine_spread")
        if isinstance(spread, float) and is_collapsed(spread):
            warnings.append(f"{shown(label)}: the embeddings collapsed. The cosine similarities of the "
                            f"verification pairs spread by only {spread:.2g} (standard deviation; trained "
                            "models about 0.3), so every face looks alike to this model and no threshold "
                            "separates same from different people. Its training went wrong, typically "
                            "with a learning rate so high the network died, or a triplet margin or "
                            "center_weight that pulled all faces to one point.")
    return warnings


def metrics_table(rows: dict[str, dict]) -> pd.DataFrame:
    """One column per checkpoint, one row per metric, formatted for reading."""
    table = {"metric": [title for title, _, _ in ROWS]}
    for label, values in rows.items():
        column = []
        for _, key, fmt in ROWS:
            value = values.get(key)
            is_number = isinstance(value, (int, float, np.floating))
            if value is None or (is_number and not np.isfinite(value)):
                column.append("n/a")
            else:  # a text cell (an interval, a "needs more pairs" note) is shown as it is
                column.append(fmt.format(value) if is_number else str(value))
        table[label] = column
    return pd.DataFrame(table)


def rates_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Accept a pair when its cosine is >= threshold: TAR (same pairs accepted), FAR
    (different pairs accepted), FRR = 1 - TAR, accuracy."""
    accept = np.asarray(scores) >= threshold
    same, different = labels == 1, labels == 0
    tar = float(accept[same].mean()) if same.any() else float("nan")
    far = float(accept[different].mean()) if different.any() else float("nan")
    accuracy = float((accept == (labels == 1)).mean())
    return {"TAR": tar, "FAR": far, "FRR": 1.0 - tar, "accuracy": accuracy}


def errors_at(scores: np.ndarray, labels: np.ndarray, threshold: float, limit: int = 8) -> tuple[list, list]:
    """(false accepts: different pairs at or above the threshold, most confident first;
    false rejects: same pairs below it, lowest score first) as lists of pair indices."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    false_accepts = np.flatnonzero((labels == 0) & (scores >= threshold))
    false_rejects = np.flatnonzero((labels == 1) & (scores < threshold))
    false_accepts = false_accepts[np.argsort(-scores[false_accepts], kind="stable")][:limit]
    false_rejects = false_rejects[np.argsort(scores[false_rejects], kind="stable")][:limit]
    return false_accepts.tolist(), false_rejects.tolist()
