"""Evaluation: embeddings, verification metrics, identification accuracy, geometry.

Verification compares two faces by the cosine similarity of their normalized
embeddings and calls them the same person when it passes a threshold. Sweeping
the threshold gives the ROC curve; the numbers below summarise it:

- AUC: area under the ROC curve (1 = perfect ranking, 0.5 = chance).
- EER: the error rate where false accepts (FPR) equal false rejects (1 - TPR).
- TPR at FPR f: the share of same-person pairs accepted while at most a share f
  of different-person pairs get through.
- Best accuracy: over all thresholds (optimistic: the threshold saw the labels);
  the LFW 10-fold accuracy picks the threshold on 9 folds and tests on the 10th
  (the folds a pairs file gives in its fold column, else 10 interleaved ones).

scikit-learn computes the ROC curve and its AUC; what it has no function for
(EER, TPR at a target FPR, the best threshold and the k-fold accuracy) is read
off its curve here. How sure AUC and EER are (bootstrap intervals) and which FPR
targets the pairs can resolve: lib.eval.confidence.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from lib.eval import confidence

FPR_TARGETS = (1e-1, 1e-2, 1e-3)
_FPR_NAMES = {1e-1: "1e-1", 1e-2: "1e-2", 1e-3: "1e-3"}


def _prepare(images: torch.Tensor, mean, std, device) -> torch.Tensor:
    """uint8 [N,C,H,W] -> float, scaled to [0, 1] and normalized with the data set's mean/std."""
    x = images.to(device).float().div_(255.0)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def _check_images(images, mean, std) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError("images must be a uint8 tensor [N, C, H, W], got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
    if len(mean) != images.shape[1] or len(std) != images.shape[1]:
        raise ValueError(f"mean and std need one value per channel ({images.shape[1]}), "
                         f"got {len(mean)} and {len(std)}")


def _batched(model, images, mean, std, batch_size, device, fn) -> torch.Tensor:
    """Run ``fn(model, x)`` over the images in eval mode without gradients; restore the mode."""
    _check_images(images, mean, std)
    was_training = model.training
    model.to(device).eval()
    outputs = []
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                x = _prepare(images[start:start + batch_size], mean, std, device)
                outputs.append(fn(model, x).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0)


def embed(model, images, mean, std, batch_size=256, flip=False, device="cpu") -> torch.Tensor:
    """L2-normalized embeddings [N, D]. With ``flip`` the embeddings of the image
    and of its mirror image are summed before normalizing (test-time augmentation)."""
    def fn(net, x):
        e = net.embed(x)
        return e + net.embed(torch.flip(x, dims=[3])) if flip else e

    return F.normalize(_batched(model, images, mean, std, batch_size, device, fn), dim=1)


def classify(model, images, mean, std, batch_size=256, device="cpu") -> torch.Tensor:
    """The model's classifier logits [N, num_classes]."""
    return _batched(model, images, mean, std, batch_size, device, lambda net, x: net(x))


def pair_scores(embeddings, pairs) -> torch.Tensor:
    """Cosine similarity of each pair (rows of ``pairs`` index into ``embeddings``)."""
    embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
    pairs = torch.as_tensor(np.asarray(pairs), dtype=torch.long)
    return F.cosine_similarity(embeddings[pairs[:, 0]], embeddings[pairs[:, 1]], dim=1)


def topk_accuracy(logits, labels, ks=(1, 5)) -> dict:
    """Share of samples whose true class is among the k highest logits, for each k."""
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels)
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return {k: float(hits[:, :k].any(dim=1).float().mean()) for k in ks}


def tpr_key(target_fpr: float) -> str:
    """The metrics key of the TPR at a target FPR ("tpr_at_fpr_1e-3")."""
    return f"tpr_at_fpr_{_FPR_NAMES.get(target_fpr, target_fpr)}"


@dataclass
class VerificationResult:
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float
    eer: float
    eer_threshold: float
    tpr_at_fpr: dict
    best_accuracy: float
    best_threshold: float
    kfold_mean: float
    kfold_std: float
    kfold_accuracies: np.ndarray = field(default_factory=lambda: np.empty(0))
    genuine_pairs: int = 0    # labeled same-person pairs
    impostor_pairs: int = 0   # labeled different-person pairs: they decide which FPR targets mean anything
    intervals: confidence.Intervals | None = None  # bootstrap intervals of AUC and EER, when computed

    def resolves(self, target_fpr: float) -> bool:
        """Whether the impostor pairs allow enough false accepts at ``target_fpr`` to read its TPR."""
        return confidence.resolves(target_fpr, self.impostor_pairs)

    def summary(self) -> dict:
        """Scalars only (JSON-ready), with the key names used in checkpoint metrics."""
        out = {"auc": self.auc, "eer": self.eer, "eer_threshold": self.eer_threshold}
        out.update({tpr_key(f): v for f, v in self.tpr_at_fpr.items()})
        out.update(best_accuracy=self.best_accuracy, best_threshold=self.best_threshold,
                   kfold_mean=self.kfold_mean, kfold_std=self.kfold_std)
        if self.intervals is not None:
            out.update(auc_ci_low=self.intervals.auc[0], auc_ci_high=self.intervals.auc[1],
                       eer_ci_low=self.intervals.eer[0], eer_ci_high=self.intervals.eer[1])
        out.update(genuine_pairs=self.genuine_pairs, impostor_pairs=self.impostor_pairs)
        return {k: float(v) for k, v in out.items()}


def _flat(values, dtype) -> np.ndarray:
    """A 1-D numpy copy of a tensor, array or list (a list of floats stays float64, not torch's float32)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype).ravel()


def _labeled(scores, labels, pair_folds=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Pairs labeled 0/1, with their folds if given (unlabeled pairs, label -1, are left out)."""
    scores, labels = _flat(scores, np.float64), _flat(labels, np.int64)
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in length: {scores.size} vs {labels.size}")
    keep = labels >= 0
    scores, labels = scores[keep], labels[keep]
    if np.any(labels > 1) or not np.isfinite(scores).all():
        raise ValueError("labels must be 1 (same), 0 (different) or -1 (unlabeled), and scores finite")
    if pair_folds is None:
        return scores, labels, None
    pair_folds = _flat(pair_folds, np.int64)
    if pair_folds.size != keep.size:
        raise ValueError(f"pair folds and labels differ in length: {pair_folds.size} vs {keep.size}")
    return scores, labels, pair_folds[keep]


def _require_both_kinds(labels: np.ndarray) -> None:
    positives, negatives = int(labels.sum()), int((labels == 0).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"verification needs both same and different pairs; got {positives} same, "
                         f"{negatives} different")


def _roc_curve(scores: np.ndarray, labels: np.ndarray):
    """scikit-learn's ROC curve with a point at every distinct score (EER interpolation and the
    best threshold need them all). On a one-kind subset (a k-fold training set can be one) the
    missing kind's rate is NaN: its warning is silenced, ``_accepted_counts`` reads it as zero."""
    # Imported here: scikit-learn's metrics add most of a second to every process importing lib.
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import roc_curve

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return roc_curve(labels, scores, pos_label=1, drop_intermediate=False)


def roc(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), one point per distinct score, starting at (0, 0) with threshold inf."""
    scores, labels, _ = _labeled(scores, labels)
    _require_both_kinds(labels)
    return _roc_curve(scores, labels)


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve: the chance that a same pair scores above a different pair
    (a tie counts half)."""
    from sklearn.metrics import roc_auc_score

    scores, labels, _ = _labeled(scores, labels)
    _require_both_kinds(labels)
    return float(roc_auc_score(labels, scores))


def equal_error_rate(fpr, tpr, thresholds) -> tuple[float, float]:
    """EER by linear interpolation where FPR meets FNR = 1 - TPR, and the threshold of
    the first ROC point at which FPR >= FNR."""
    gap = (1.0 - tpr) - fpr  # falls from 1 to -1 along the curve
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0 or i == 0:
        return float(fpr[i]), float(thresholds[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1])), float(thresholds[i])


def tpr_at_fpr(fpr, tpr, target: float) -> float:
    """The highest TPR of an ROC point whose FPR is at most ``target`` (the curve starts at (0, 0))."""
    return float(tpr[fpr <= target].max())


def _accepted_counts(scores: np.ndarray, labels: np.ndarray):
    """(thresholds, same pairs accepted, different pairs accepted) at each distinct score, descending,
    read back from scikit-learn's rates. A kind with no pair has no rate: none of it is accepted."""
    fpr, tpr, thresholds = _roc_curve(scores, labels)
    positives, negatives = int(labels.sum()), int((labels == 0).sum())
    same = np.rint(tpr[1:] * positives) if positives else np.zeros(thresholds.size - 1)
    different = np.rint(fpr[1:] * negatives) if negatives else np.zeros(thresholds.size - 1)
    return thresholds[1:], same, different


def best_threshold(scores, labels) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of "same if score >= threshold".

    Among equally good cuts the highest is taken; the threshold sits halfway between
    the last accepted score and the next lower one, so unseen pairs (the k-fold test
    fold) are not rejected just for falling a hair below a training score.
    """
    scores, labels, _ = _labeled(scores, labels)
    thresholds, same, different = _accepted_counts(scores, labels)
    correct = same + (int((labels == 0).sum()) - different)
    j = int(np.argmax(correct))
    cut = (thresholds[j] + thresholds[j + 1]) / 2 if j + 1 < thresholds.size else thresholds[j]
    return float(cut), float(correct[j] / labels.size)


def kfold_accuracy(scores, labels, folds=10, pair_folds=None) -> np.ndarray:
    """LFW protocol: for each fold, the best threshold on the other folds, accuracy on this one.

    ``pair_folds`` gives each pair's fold (as the fold column of a pairs file does), one per
    score, unlabeled pairs included. Without it there are ``folds`` fixed interleaved folds
    (pair i belongs to fold i mod folds), so a pairs file sorted by label still gives folds
    with both kinds of pair. Empty when there are too few pairs or fewer than two folds.
    """
    scores, labels, fold_of = _labeled(scores, labels, pair_folds)
    if fold_of is None:
        if labels.size < folds:
            return np.full(0, np.nan)
        fold_of = np.arange(labels.size) % folds
    names = np.unique(fold_of)
    if names.size < 2:
        return np.full(0, np.nan)
    accuracies = []
    for fold in names:
        test = fold_of == fold
        threshold, _ = best_threshold(scores[~test], labels[~test])
        accuracies.append(np.mean((scores[test] >= threshold) == labels[test]))
    return np.asarray(accuracies)


# Up to this many labeled pairs the bootstrap intervals come with the metrics by default (about
# 0.1 s per 1,000 pairs); above it only when asked for (confidence_intervals=True).
CONFIDENCE_MAX_PAIRS = 10_000


def verification_metrics(scores, labels, pair_folds=None, confidence_intervals: bool | None = None
                         ) -> VerificationResult:
    """All verification numbers from pair scores and 0/1 labels (-1 = unlabeled, ignored);
    ``pair_folds``: each pair's fold for the k-fold accuracy (None: 10 interleaved folds);
    ``confidence_intervals``: bootstrap AUC and EER (None: when there are at most CONFIDENCE_MAX_PAIRS)."""
    labeled_scores, labeled, _ = _labeled(scores, labels)
    if confidence_intervals is None:
        confidence_intervals = labeled.size <= CONFIDENCE_MAX_PAIRS
    fpr, tpr, thresholds = roc(scores, labels)
    eer, eer_threshold = equal_error_rate(fpr, tpr, thresholds)
    threshold, accuracy = best_threshold(scores, labels)
    folds = kfold_accuracy(scores, labels, pair_folds=pair_folds)
    return VerificationResult(
        fpr=fpr, tpr=tpr, thresholds=thresholds, auc=roc_auc(scores, labels), eer=eer,
        eer_threshold=eer_threshold, tpr_at_fpr={f: tpr_at_fpr(fpr, tpr, f) for f in FPR_TARGETS},
        best_accuracy=accuracy, best_threshold=threshold,
        kfold_mean=float(folds.mean()) if folds.size else float("nan"),
        kfold_std=float(folds.std()) if folds.size else float("nan"), kfold_accuracies=folds,
        genuine_pairs=int(labeled.sum()), impostor_pairs=int((labeled == 0).sum()),
        intervals=confidence.intervals(labeled_scores, labeled) if confidence_intervals else None)


def resolution(metrics: dict) -> dict:
    """For a metrics dict (VerificationResult.summary()): the rule, the pair counts, and each TPR
    target its impostor pairs cannot resolve with the impostor pairs it needs."""
    impostors = int(metrics.get("impostor_pairs", 0))
    unresolved = {tpr_key(f): confidence.min_impostor_pairs(f) for f in FPR_TARGETS
                  if tpr_key(f) in metrics and not confidence.resolves(f, impostors)}
    return {"rule": confidence.RULE, "genuine_pairs": int(metrics.get("genuine_pairs", 0)),
            "impostor_pairs": impostors, "tpr_needs_impostor_pairs": unresolved}


def verify(model, pair_set, mean, std, flip=False, batch_size=256, device="cpu"):
    """(VerificationResult, scores) for a PairSet: embed its images once, score its pairs
    (its own folds, when its file has a fold column, for the k-fold accuracy)."""
    embeddings = embed(model, pair_set.images, mean, std, batch_size, flip, device)
    scores = pair_scores(embeddings, pair_set.pairs)
    return verification_metrics(scores, pair_set.labels, pair_set.folds), scores


def _angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(a @ b.T, -1.0, 1.0)))


MAX_CENTERS = 2000  # class centers compared pairwise; more are sampled (7,000 would take 400 MB)


def geometry(embeddings, labels) -> dict:
    """Angles (degrees) on the unit sphere that show how compact and how far apart classes are.

    - intra_class_angle: per class, the mean angle between two of its samples; then the mean over
      classes with at least two samples (every class counts the same, however many images it has).
    - inter_class_angle: mean angle between two class centers (normalized mean of a class's unit embeddings).
    - nearest_class_angle: per class, the angle to the nearest other center; mean over classes.
    - center_sample_angle: {class: mean angle between its center and its samples};
      mean_center_sample_angle: its mean over classes.

    Classes are grouped by one sort (linear in the images); with more than MAX_CENTERS classes the
    two center-to-center angles are measured among a fixed sample of MAX_CENTERS of them, so
    nothing grows with the square of the class count.
    """
    unit = F.normalize(torch.as_tensor(embeddings, dtype=torch.float64), dim=1).numpy()
    labels = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64)
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    ends = list(starts[1:]) + [len(order)]
    centers, intra, center_sample = [], [], {}
    for c, start, end in zip(classes, starts, ends):
        members = unit[order[start:end]]
        center = members.mean(axis=0)
        center = center / max(np.linalg.norm(center), 1e-12)
        centers.append(center)
        center_sample[int(c)] = float(_angles_deg(members, center[None]).mean())
        if len(members) >= 2:
            pairwise = _angles_deg(members, members)[np.triu_indices(len(members), 1)]
            intra.append(pairwise.mean())
    centers = np.stack(centers)
    if len(centers) > MAX_CENTERS:
        centers = centers[np.sort(np.random.default_rng(0).choice(len(centers), MAX_CENTERS, replace=False))]
    between = _angles_deg(centers, centers)
    off_diagonal = between[np.triu_indices(len(centers), 1)]
    np.fill_diagonal(between, np.inf)
    nan = float("nan")
    return {
        "intra_class_angle": float(np.mean(intra)) if intra else nan,
        "inter_class_angle": float(off_diagonal.mean()) if off_diagonal.size else nan,
        "nearest_class_angle": float(between.min(axis=1).mean()) if len(centers) > 1 else nan,
        "center_sample_angle": center_sample,
        "mean_center_sample_angle": float(np.mean(list(center_sample.values()))),
    }


# Pair cosines of a model whose embeddings collapsed (every face mapped to one direction, or to
# zero) all agree to within float rounding; a network that has not learned anything yet still
# spreads them: randomly initialised face presets by a standard deviation of 0.02 to 0.04 (the
# least spread, face_resnet, 0.019), trained models by about 0.3. Below 0.005, a quarter of the
# least spread untrained network, no threshold can tell same from different pairs.
COLLAPSE_SPREAD = 0.005


def cosine_spread(scores) -> float:
    """Standard deviation of the pairs' cosine similarities (the non-finite ones left out); NaN
    when fewer than two are finite."""
    values = _flat(scores, np.float64)
    values = values[np.isfinite(values)]
    return float(values.std()) if values.size >= 2 else float("nan")


def is_collapsed(spread: float) -> bool:
    """Whether a cosine_spread says the embeddings collapsed (a NaN spread says nothing)."""
    return bool(spread < COLLAPSE_SPREAD)
