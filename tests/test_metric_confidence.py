"""Bootstrap intervals of ROC AUC and EER, and which TPR@FPR targets a pair set resolves,
against a plain loop over redraws scored by scikit-learn and against hand counts."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from lib.eval import confidence
from lib.eval.metrics import equal_error_rate, resolution, verification_metrics


def _pairs(n: int, seed: int = 0, separation: float = 1.5, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2 == 0).astype(int)
    scores = rng.normal(labels * separation, 1.0)
    return (np.round(scores, decimals) if decimals is not None else scores), labels


def _reference_bootstrap(scores, labels, resamples, seed):
    """The bootstrap written plainly: redraw the pairs, score the redraw with scikit-learn."""
    rng = np.random.default_rng(seed)
    aucs, eers = [], []
    n = len(scores)
    for _ in range(resamples):
        picked = (rng.random(n) * n).astype(np.int64)  # n pairs drawn with replacement
        s, y = scores[picked], labels[picked]
        if y.min() == y.max():
            continue  # one kind of pair only: no AUC, no EER
        aucs.append(roc_auc_score(y, s))
        fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
        eers.append(equal_error_rate(fpr, tpr, thresholds)[0])
    return np.array(aucs), np.array(eers)


@pytest.mark.parametrize("n, decimals", [(300, 1), (41, None)])  # ties in the scores; a small odd set
def test_bootstrap_matches_a_plain_loop_with_the_same_seed(n, decimals):
    scores, labels = _pairs(n, seed=n, decimals=decimals)
    aucs, eers = confidence.bootstrap_auc_eer(scores, labels, resamples=300, seed=7)
    ref_aucs, ref_eers = _reference_bootstrap(scores, labels, 300, 7)
    kept = np.isfinite(aucs)
    assert kept.sum() == len(ref_aucs)
    np.testing.assert_allclose(aucs[kept], ref_aucs, atol=1e-12)
    np.testing.assert_allclose(eers[kept], ref_eers, atol=1e-12)
    found = confidence.intervals(scores, labels, resamples=300, seed=7)
    assert found.auc == pytest.approx(tuple(np.percentile(ref_aucs, [2.5, 97.5])))
    assert found.eer == pytest.approx(tuple(np.percentile(ref_eers, [2.5, 97.5])))


def test_redraws_with_one_kind_of_pair_are_left_out():
    scores, labels = np.array([0.9, 0.1, 0.2]), np.array([1, 0, 0])
    aucs, _ = confidence.bootstrap_auc_eer(scores, labels, resamples=200, seed=0)
    _, reference = _reference_bootstrap(scores, labels, 200, 0)
    assert 0 < np.isfinite(aucs).sum() == len(reference) < 200


def test_interval_holds_the_estimate_and_narrows_with_more_pairs():
    widths = []
    for n in (200, 2000):
        scores, labels = _pairs(n, seed=1)
        result = verification_metrics(scores, labels)
        (auc_low, auc_high), (eer_low, eer_high) = result.intervals.auc, result.intervals.eer
        assert auc_low <= roc_auc_score(labels, scores) <= auc_high
        assert eer_low <= result.eer <= eer_high
        widths.append((auc_high - auc_low, eer_high - eer_low))
    # Ten times the pairs: about sqrt(10) ~ 3.2 times narrower.
    assert widths[1][0] < widths[0][0] / 2 and widths[1][1] < widths[0][1] / 2


def test_fixed_seed_gives_the_same_interval():
    scores, labels = _pairs(6000, seed=2)  # its speed is measured by bench/confidence_speed.py
    first = confidence.intervals(scores, labels)
    assert confidence.intervals(scores, labels) == first and first.resamples == confidence.RESAMPLES


def test_tpr_targets_need_five_false_accepts_worth_of_impostor_pairs():
    assert [confidence.min_impostor_pairs(f) for f in (1e-1, 1e-2, 1e-3)] == [50, 500, 5000]
    scores, labels = _pairs(1000, seed=3)  # 500 impostor pairs: 1e-3 would allow half a false accept
    summary = verification_metrics(scores, labels).summary()
    assert (summary["genuine_pairs"], summary["impostor_pairs"]) == (500, 500)
    assert resolution(summary)["tpr_needs_impostor_pairs"] == {"tpr_at_fpr_1e-3": 5000}
    assert resolution({**summary, "impostor_pairs": 499})["tpr_needs_impostor_pairs"] == {
        "tpr_at_fpr_1e-2": 500, "tpr_at_fpr_1e-3": 5000}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="one label per score"):
        confidence.bootstrap_auc_eer([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="target FPR"):
        confidence.min_impostor_pairs(0.0)
