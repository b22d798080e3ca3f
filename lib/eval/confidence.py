"""How sure a verification number is: percentile bootstrap intervals for ROC AUC and EER,
and which TPR-at-FPR targets a pair set can resolve at all.

A verification metric comes from a few hundred or thousand pairs; another draw of pairs
would give another number. The bootstrap redraws the pairs with replacement many times
and reads the spread of the metric: the middle 95 % of the redrawn values is the interval.

Each redraw is a vector of counts (how often each pair was drawn), so all the redraws of a
chunk are computed at once as weighted ROC sums over the pairs sorted by score once: no
Python loop over redraws. The redraws are ``floor(u * n)`` for uniform doubles ``u`` of
``numpy.random.default_rng(seed)``, one double per drawn pair, so the same seed gives the
same intervals however the work is chunked (and a plain loop reproduces them exactly).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
# A target FPR f is read off the curve only when the different-person pairs allow at least
# this many false accepts at it (f * impostor pairs >= 5): below that the TPR is decided by one
# or two unlucky pairs, and at f < 1 / impostors it is the TPR at zero false accepts.
MIN_FALSE_ACCEPTS = 5
RULE = (f"TPR at a target FPR is shown only when the different-person (impostor) pairs allow at least "
        f"{MIN_FALSE_ACCEPTS} false accepts at it (FPR × impostor pairs ≥ {MIN_FALSE_ACCEPTS}); otherwise it says "
        "how many impostor pairs it needs: with fewer, one or two pairs decide the number. Intervals: "
        f"95% percentile bootstrap over the pairs ({RESAMPLES:,} redraws, fixed seed), the spread another "
        "draw of pairs of the same size would give.")
_CELLS_PER_CHUNK = 1_000_000  # redraws x pairs held in memory at once (16 MB of float64)


def min_impostor_pairs(target_fpr: float) -> int:
    """Different-person pairs needed to read the TPR at ``target_fpr``: MIN_FALSE_ACCEPTS / target."""
    if not 0 < target_fpr <= 1:
        raise ValueError(f"a target FPR lies in (0, 1], got {target_fpr}")
    return math.ceil(MIN_FALSE_ACCEPTS / target_fpr - 1e-9)


def resolves(target_fpr: float, impostor_pairs: int) -> bool:
    """Whether ``impostor_pairs`` different-person pairs can resolve the TPR at ``target_fpr``."""
    return impostor_pairs >= min_impostor_pairs(target_fpr)


@dataclass(frozen=True)
class Intervals:
    auc: tuple[float, float]
    eer: tuple[float, float]
    resamples: int   # redraws with both kinds of pair (the others have no AUC or EER)
    level: float


def redraw_counts(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """[rows, n] counts of each of ``n`` pairs in ``rows`` redraws of ``n`` pairs with replacement."""
    drawn = (rng.random((rows, n)) * n).astype(np.int64)
    offsets = (np.arange(rows) * n)[:, None]
    return np.bincount((drawn + offsets).ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def _weighted_auc_eer(weights_pos: np.ndarray, weights_neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUC and EER of each row of weights over the distinct scores, sorted ascending (columns)."""
    total_pos, total_neg = weights_pos.sum(axis=1), weights_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        below = np.cumsum(weights_neg, axis=1) - weights_neg  # negatives scoring strictly lower
        auc = (weights_pos * (below + 0.5 * weights_neg)).sum(axis=1) / (total_pos * total_neg)
        # The ROC from the highest score down (a point at every distinct score), then the EER
        # interpolated where FNR = 1 - TPR meets FPR, as lib.eval.metrics.equal_error_rate does.
        tpr = np.cumsum(weights_pos[:, ::-1], axis=1) / total_pos[:, None]
        fpr = np.cumsum(weights_neg[:, ::-1], axis=1) / total_neg[:, None]
    zeros = np.zeros((len(tpr), 1))
    tpr, fpr = np.hstack([zeros, tpr]), np.hstack([zeros, fpr])
    gap = (1.0 - tpr) - fpr
    i = np.argmax(gap <= 0, axis=1)
    rows = np.arange(len(gap))
    before = np.maximum(i - 1, 0)
    step = gap[rows, before] - gap[rows, i]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(step > 0, gap[rows, before] / step, 0.0)
    eer = fpr[rows, before] + t * (fpr[rows, i] - fpr[rows, before])
    eer = np.where((gap[rows, i] == 0) | (i == 0), fpr[rows, i], eer)
    usable = (total_pos > 0) & (total_neg > 0)
    return np.where(usable, auc, np.nan), np.where(usable, eer, np.nan)


def bootstrap_auc_eer(scores, labels, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """The AUC and EER of each of ``resamples`` redraws of the pairs (NaN for a redraw that lacks
    same or different pairs). ``labels``: 1 same, 0 different (label the pairs first)."""
    scores, labels = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels).ravel()
    if scores.shape != labels.shape or not scores.size:
        raise ValueError(f"the bootstrap needs one label per score and some pairs; got {scores.size} scores "
                         f"and {labels.size} labels")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    order = np.argsort(scores, kind="stable")
    sorted_scores, positive = scores[order], labels[order] == 1
    starts = np.flatnonzero(np.r_[True, np.diff(sorted_scores) > 0])  # first pair of each distinct score
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // scores.size)
    aucs, eers = [], []
    for done in range(0, resamples, chunk):
        counts = redraw_counts(rng, min(chunk, resamples - done), scores.size)[:, order]
        weights_pos = np.add.reduceat(counts * positive, starts, axis=1)
        weights_neg = np.add.reduceat(counts * ~positive, starts, axis=1)
        auc, eer = _weighted_auc_eer(weights_pos, weights_neg)
        aucs.append(auc)
        eers.append(eer)
    return np.concatenate(aucs), np.concatenate(eers)


def intervals(scores, labels, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> Intervals:
    """Percentile bootstrap intervals (``level``, 95 % by default) of ROC AUC and EER over the pairs."""
    if not 0 < level < 1:
        raise ValueError(f"the confidence level lies in (0, 1), got {level}")
    aucs, eers = bootstrap_auc_eer(scores, labels, resamples, seed)
    kept = np.isfinite(aucs)
    tails = [50 * (1 - level), 50 * (1 + level)]
    if not kept.any():
        nan = (float("nan"), float("nan"))
        return Intervals(nan, nan, 0, level)
    auc_low, auc_high = np.percentile(aucs[kept], tails)
    eer_low, eer_high = np.percentile(eers[kept], tails)
    return Intervals((float(auc_low), float(auc_high)), (float(eer_low), float(eer_high)), int(kept.sum()), level)
