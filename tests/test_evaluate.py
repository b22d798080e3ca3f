"""Verification metrics against sklearn, brute force, hand-computed cases and known distributions;
the folds a pairs file gives; embeddings on a real FaceNet."""
import math
import warnings
from dataclasses import replace
from statistics import NormalDist

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch.nn import functional as F

from lib.base import config
from lib.data.datasets import PairSet
from lib.eval.metrics import (
    best_threshold,
    classify,
    embed,
    geometry,
    kfold_accuracy,
    pair_scores,
    roc,
    topk_accuracy,
    verification_metrics,
    verify,
)
from lib.explore.metrics import metrics_row, verification_view
from lib.model.net import FaceNet
from lib.model.presets import PRESETS
from lib.model.spec import HeadSpec, StageSpec
from lib.train.batches import load_train_data
from tests.synthetic_data import make_dataset

PHI = NormalDist()


def gaussian_pairs(d: float, n: int = 20000, seed: int = 0):
    """Same-pair scores ~ N(d, 1), different-pair scores ~ N(0, 1): EER = Phi(-d/2)."""
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(d, 1.0, n), rng.normal(0.0, 1.0, n)]
    labels = np.r_[np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)]
    return scores, labels


def test_roc_and_auc_match_sklearn_with_ties():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # rounding makes many ties
    fpr, tpr, thresholds = roc(scores, labels)
    ref_fpr, ref_tpr, ref_thr = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    np.testing.assert_allclose(thresholds[1:], ref_thr[1:])
    assert verification_metrics(scores, labels).auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_every_number_of_a_small_case_computed_by_hand():
    # Distinct scores .9 .8 .6 .3 .1 accept (same, different) = (1,0) (2,1) (3,1) (4,2) (4,3) of (4, 3).
    scores = [0.9, 0.8, 0.8, 0.6, 0.3, 0.3, 0.1]
    labels = [1, 1, 0, 1, 0, 1, 0]
    result = verification_metrics(scores, labels)
    np.testing.assert_allclose(result.fpr, [0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(result.tpr, [0, 1 / 4, 2 / 4, 3 / 4, 1, 1])
    np.testing.assert_array_equal(result.thresholds, [np.inf, 0.9, 0.8, 0.6, 0.3, 0.1])
    # Of the 12 (same, different) pairs the same one scores higher in 8, and ties (.8/.8, .3/.3) count half.
    assert result.auc == pytest.approx(9 / 12)
    # At threshold .6: FPR 1/3 (.8 accepted), FNR 1/4; one point earlier FNR is 1/2: they cross at 1/3.
    assert (result.eer, result.eer_threshold) == (pytest.approx(1 / 3), 0.6)
    assert result.tpr_at_fpr == pytest.approx({1e-1: 0.25, 1e-2: 0.25, 1e-3: 0.25})
    # 5 of 7 right when accepting from .6 (and from .3): the higher cut wins, halfway to the next score.
    assert (result.best_accuracy, result.best_threshold) == (pytest.approx(5 / 7), pytest.approx(0.45))


def mann_whitney_auc(scores, labels):
    """P(a same pair scores above a different pair), ties counted half: the AUC without any curve."""
    same, different = scores[labels == 1][:, None], scores[labels == 0][None, :]
    return float(np.mean((same > different) + 0.5 * (same == different)))


def brute_force_tpr_at_fpr(scores, labels, target):
    rates = [(np.mean(scores[labels == 0] >= t), np.mean(scores[labels == 1] >= t))
             for t in np.r_[np.inf, np.unique(scores)]]
    return max(tpr for fpr, tpr in rates if fpr <= target)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_auc_and_tpr_at_fpr_match_independent_counts_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 400)
    scores = np.round(rng.normal(labels * 1.1, 1.0), 1)
    result = verification_metrics(scores, labels)
    assert result.auc == pytest.approx(mann_whitney_auc(scores, labels), abs=1e-12)
    assert result.auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    for f in (1e-1, 1e-2, 1e-3):
        assert result.tpr_at_fpr[f] == pytest.approx(brute_force_tpr_at_fpr(scores, labels, f))


@pytest.mark.parametrize("d", [1.0, 2.0, 3.0])
def test_eer_and_tpr_at_fpr_on_gaussians_with_known_values(d):
    scores, labels = gaussian_pairs(d)
    result = verification_metrics(scores, labels)
    assert result.eer == pytest.approx(PHI.cdf(-d / 2), abs=0.008)
    assert result.eer_threshold == pytest.approx(d / 2, abs=0.05)
    assert result.auc == pytest.approx(PHI.cdf(d / math.sqrt(2)), abs=0.005)  # P(same score > different score)
    for f in (1e-1, 1e-2):
        assert result.tpr_at_fpr[f] == pytest.approx(PHI.cdf(d - PHI.inv_cdf(1 - f)), abs=0.02)
    assert result.best_accuracy == pytest.approx(PHI.cdf(d / 2), abs=0.008)
    assert result.best_threshold == pytest.approx(d / 2, abs=0.1)
    assert result.kfold_mean == pytest.approx(PHI.cdf(d / 2), abs=0.01)


def test_tpr_at_fpr_matches_sklearn_curve():
    scores, labels = gaussian_pairs(1.5, n=3000, seed=4)
    result = verification_metrics(scores, labels)
    ref_fpr, ref_tpr, _ = roc_curve(labels, scores)
    for f in (1e-1, 1e-2, 1e-3):
        assert result.tpr_at_fpr[f] == pytest.approx(ref_tpr[ref_fpr <= f].max())


def test_best_accuracy_matches_brute_force_over_thresholds():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(labels, 1.0)
    best = max(((np.mean((scores >= t) == labels), t) for t in np.sort(scores)[::-1]), key=lambda p: p[0])
    threshold, accuracy = best_threshold(scores, labels)
    assert accuracy == pytest.approx(best[0])
    assert np.mean((scores >= threshold) == labels) == pytest.approx(accuracy)


def brute_force_kfold(scores, labels, folds=10, fold_of=None):
    fold_of = np.arange(len(labels)) % folds if fold_of is None else np.asarray(fold_of)
    accuracies = []
    for fold in sorted(set(fold_of.tolist())):
        test = fold_of == fold
        best_acc, best_t = -1.0, None
        distinct = sorted(set(scores[~test]), reverse=True)
        cuts = [(a + b) / 2 for a, b in zip(distinct, distinct[1:])] + distinct[-1:]
        for t in cuts:  # halfway between neighbouring scores; the highest wins ties
            acc = np.mean((scores[~test] >= t) == labels[~test])
            if acc > best_acc:
                best_acc, best_t = acc, t
        accuracies.append(np.mean((scores[test] >= best_t) == labels[test]))
    return np.array(accuracies)


def test_lfw_ten_fold_protocol_matches_brute_force_and_is_deterministic():
    rng = np.random.default_rng(3)
    labels = np.sort(rng.integers(0, 2, 240))  # sorted by label, as some pair files are
    scores = rng.normal(labels * 1.2, 1.0)
    folds = kfold_accuracy(scores, labels)
    np.testing.assert_allclose(folds, brute_force_kfold(scores, labels))
    result = verification_metrics(scores, labels)
    assert result.kfold_mean == pytest.approx(folds.mean()) and result.kfold_std == pytest.approx(folds.std())
    np.testing.assert_array_equal(kfold_accuracy(scores, labels), folds)
    separable = verification_metrics(np.r_[np.linspace(0.6, 0.9, 50), np.linspace(-0.5, 0.4, 50)],
                                     np.r_[np.ones(50), np.zeros(50)].astype(int))
    assert (separable.kfold_mean, separable.kfold_std, separable.auc, separable.eer) == (1.0, 0.0, 1.0, 0.0)


# Two folds of five pairs whose score scales differ: each fold alone is separable, but the threshold
# learnt on one fold is wrong for the other. Pooled (the default folds: one pair each here) they are
# separable too, so leave-one-out is always right.
SHIFTED_SCORES = np.array([0.95, 0.85, 0.12, 0.05, -0.05, 0.35, 0.25, -0.45, -0.55, -0.65])
SHIFTED_LABELS = np.array([1, 1, 0, 0, 0, 1, 1, 0, 0, 0])
SHIFTED_FOLDS = np.array([1, 1, 1, 1, 1, 2, 2, 2, 2, 2])  # 1-based, as LFW numbers them


def test_the_given_folds_are_the_k_folds():
    np.testing.assert_array_equal(kfold_accuracy(SHIFTED_SCORES, SHIFTED_LABELS), np.ones(10))
    # Fold 1 tested with fold 2's threshold (-0.45 + 0.25) / 2 = -0.1: all five accepted, 2 right.
    # Fold 2 tested with fold 1's threshold (0.85 + 0.12) / 2: all five rejected, 3 right.
    given = kfold_accuracy(SHIFTED_SCORES, SHIFTED_LABELS, pair_folds=SHIFTED_FOLDS)
    np.testing.assert_allclose(given, [0.4, 0.6])
    # An unlabeled pair (and its fold) is left out, wherever it sits.
    result = verification_metrics(np.r_[9.0, SHIFTED_SCORES], np.r_[-1, SHIFTED_LABELS], np.r_[7, SHIFTED_FOLDS])
    np.testing.assert_allclose(result.kfold_accuracies, [0.4, 0.6])
    assert (result.kfold_mean, result.kfold_std) == (pytest.approx(0.5), pytest.approx(0.1))
    assert verification_metrics(SHIFTED_SCORES, SHIFTED_LABELS).kfold_mean == 1.0
    with pytest.raises(ValueError, match="folds and labels differ in length"):
        kfold_accuracy(SHIFTED_SCORES, SHIFTED_LABELS, pair_folds=SHIFTED_FOLDS[:-1])
    assert kfold_accuracy(SHIFTED_SCORES, SHIFTED_LABELS, pair_folds=np.ones(10)).size == 0  # one fold: nothing


def test_given_folds_match_brute_force_even_with_one_kind_training_sets():
    rng = np.random.default_rng(8)
    labels = (rng.random(150) < 0.06).astype(np.int64)  # few same pairs: some training sets have none
    labels[:2] = 1, 0
    scores = rng.normal(labels * 1.5, 1.0)
    for fold_of in (rng.integers(1, 11, labels.size), np.r_[np.zeros(140, int), np.ones(10, int)], None):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # scikit-learn's warning about a one-kind curve stays inside
            folds = kfold_accuracy(scores, labels, pair_folds=fold_of)
        np.testing.assert_allclose(folds, brute_force_kfold(scores, labels, fold_of=fold_of))
    only_different = np.zeros(5, dtype=np.int64)
    assert best_threshold([0.9, 0.7, 0.5, 0.3, 0.1], only_different) == (pytest.approx(0.8), pytest.approx(0.8))


def test_unlabeled_pairs_are_ignored_and_one_class_is_refused():
    scores, labels = gaussian_pairs(1.0, n=200)
    with_unlabeled = verification_metrics(np.r_[scores, [5.0, -5.0]], np.r_[labels, [-1, -1]])
    assert with_unlabeled.auc == pytest.approx(verification_metrics(scores, labels).auc)
    with pytest.raises(ValueError, match="both same and different"):
        verification_metrics([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="both same and different"):
        verification_metrics([0.1, 0.2, 0.3], [0, 0, -1])
    with pytest.raises(ValueError, match="scores finite"):
        verification_metrics([0.1, float("nan")], [1, 0])
    summary = with_unlabeled.summary()
    assert {"auc", "eer", "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3", "kfold_mean"} <= set(summary)
    assert all(isinstance(v, float) for v in summary.values())


def test_pair_scores_are_cosines():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    scores = pair_scores(embeddings, torch.tensor([[0, 1], [0, 2], [2, 2]]))
    assert scores.tolist() == pytest.approx([0.0, math.sqrt(0.5), 1.0], abs=1e-6)


def test_topk_accuracy_against_a_manual_count():
    torch.manual_seed(0)
    logits, labels = torch.randn(40, 7), torch.randint(0, 7, (40,))
    expected = {}
    for k in (1, 3, 5):
        ranked = [sorted(range(7), key=lambda c: -row[c])[:k] for row in logits.tolist()]
        expected[k] = sum(y in r for y, r in zip(labels.tolist(), ranked)) / 40
    assert topk_accuracy(logits, labels, ks=(1, 3, 5)) == pytest.approx(expected)
    assert topk_accuracy(logits[:, :3], labels.clamp(max=2), ks=(1, 5))[5] == 1.0  # k past the class count


@pytest.fixture(scope="module")
def tiny_net():
    spec = replace(PRESETS["face_resnet"], num_classes=5,
                   stages=(StageSpec(block="basic", out_chs=8, stride=2), StageSpec(block="basic", out_chs=16, stride=2)),
                   head=HeadSpec(embedding_dim=12))
    torch.manual_seed(0)
    net = FaceNet(spec)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode differs from train mode
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    images = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8)
    return net, images


MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def by_hand(net, images):
    x = (images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return net.embed(x), net.embed(x.flip(3)), net(x)


def test_embed_normalizes_and_flip_sums_mirror(tiny_net):
    net, images = tiny_net
    net.train()
    plain = embed(net, images, MEAN, STD, batch_size=4)
    flipped = embed(net, images, MEAN, STD, batch_size=4, flip=True)
    assert net.training  # the caller's mode is restored
    net.eval()
    e, e_mirror, logits = by_hand(net, images)
    net.train()
    torch.testing.assert_close(plain, F.normalize(e, dim=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flipped, F.normalize(e + e_mirror, dim=1), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain, flipped, atol=1e-3)
    torch.testing.assert_close(plain.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(classify(net, images, MEAN, STD, batch_size=5), logits, rtol=1e-5, atol=1e-5)


def test_verify_takes_the_folds_of_its_pair_set(tiny_net):
    net, images = tiny_net
    pairs = torch.tensor([[i % 6, (i * 5 + 1) % 6] for i in range(12)])
    labels = torch.tensor([1, 0] * 6)
    folds = torch.tensor([3, 1, 2] * 4)
    pair_set = PairSet(images=images, paths=[f"ver_data/{i}.png" for i in range(6)], pairs=pairs, labels=labels,
                       folds=folds)
    result, scores = verify(net, pair_set, MEAN, STD)
    assert result.kfold_accuracies.size == 3  # the default split would give 10 folds
    np.testing.assert_array_equal(result.kfold_accuracies, kfold_accuracy(scores, labels, pair_folds=folds))
    plain, _ = verify(net, replace(pair_set, folds=None), MEAN, STD)
    assert plain.kfold_accuracies.size == 10


def test_embeddings_page_numbers_use_the_given_folds():
    rng = np.random.default_rng(9)
    raw = rng.normal(size=(20, 4))
    pairs = np.c_[np.arange(10), np.arange(10, 20)]
    labels = np.r_[SHIFTED_LABELS[:9], -1]
    folds = np.r_[SHIFTED_FOLDS[:9], 5]  # the unlabeled pair's fold goes with it
    view = verification_view(raw, pairs, labels, folds)
    expected = kfold_accuracy(view.scores, view.labels, pair_folds=SHIFTED_FOLDS[:9])
    np.testing.assert_array_equal(view.result.kfold_accuracies, expected)
    row = metrics_row(view, None, {})
    assert row["kfold"] == f"{expected.mean():.2%} ± {expected.std():.2%}" and row["kfold_folds"] == 2
    assert metrics_row(verification_view(raw, pairs, labels), None, {})["kfold"] is None  # 9 pairs: too few for 10


def test_a_training_subset_of_pairs_keeps_each_pair_s_fold(tmp_path, monkeypatch):
    lines = [f"ver_data/v{i % 4}.png ver_data/v{(i + 1) % 4}.png {i % 2} {i // 2 + 1}" for i in range(8)]
    make_dataset(tmp_path / "folds", {"ann": 2, "bob": 2}, {"ann": 1, "bob": 1}, pairs="\n".join(lines) + "\n")
    monkeypatch.setenv(config.DATA_ROOTS_ENV, str(tmp_path))
    full = load_train_data(tmp_path / "folds").pairs
    assert full.folds.tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    subset = load_train_data(tmp_path / "folds", subset={"pairs": 4}).pairs
    assert subset.lines == [1, 2, 3, 4] and subset.folds.tolist() == [1, 1, 2, 2]


def test_embed_rejects_float_images(tiny_net):
    net, images = tiny_net
    with pytest.raises(ValueError, match="uint8"):
        embed(net, images.float(), MEAN, STD)
    with pytest.raises(ValueError, match="one value per channel"):
        embed(net, images, (0.5,), (0.2,))


def test_geometry_on_a_hand_made_configuration():
    def at(deg):
        return [math.cos(math.radians(deg)), math.sin(math.radians(deg)), 0.0]

    # Class 0 at -10 and +10 degrees (center 0), class 1 at 70 and 110 (center 90),
    # class 2 a single sample at 180 (scaled: norms must not matter).
    embeddings = torch.tensor([at(-10), at(10), at(70), at(110), [-3.0, 0.0, 0.0]])
    g = geometry(embeddings, torch.tensor([0, 0, 1, 1, 2]))
    assert g["intra_class_angle"] == pytest.approx((20 + 40) / 2)
    assert g["center_sample_angle"] == pytest.approx({0: 10.0, 1: 20.0, 2: 0.0})
    assert g["mean_center_sample_angle"] == pytest.approx(10.0)
    assert g["inter_class_angle"] == pytest.approx((90 + 180 + 90) / 3)
    assert g["nearest_class_angle"] == pytest.approx(90.0)


def test_geometry_of_many_classes_samples_the_centers_and_groups_in_one_pass(monkeypatch):
    from lib.eval import metrics

    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(60), 3))  # shuffled: grouping must not assume order
    embeddings = rng.normal(size=(len(labels), 8))
    full = geometry(embeddings, labels)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    by_hand = [np.degrees(np.arccos(np.clip(unit[labels == c] @ unit[labels == c].T, -1, 1)))[np.triu_indices(3, 1)]
               .mean() for c in range(60)]
    assert full["intra_class_angle"] == pytest.approx(np.mean(by_hand))
    monkeypatch.setattr(metrics, "MAX_CENTERS", 20)
    sampled = geometry(embeddings, labels)
    assert sampled["intra_class_angle"] == pytest.approx(full["intra_class_angle"])  # every class, as before
    chosen = np.sort(np.random.default_rng(0).choice(60, 20, replace=False))
    subset = np.isin(labels, chosen)
    assert sampled["inter_class_angle"] == pytest.approx(geometry(embeddings[subset], labels[subset])["inter_class_angle"])
