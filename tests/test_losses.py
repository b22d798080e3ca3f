"""Loss values against hand-computed numbers, brute-force loops and limiting cases."""
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lib.losses.margins import LossOutput, sphereface_lambda, sphereface_psi, target_logit
from lib.losses.registry import LOSSES, build_loss
from lib.train.sampler import PKSampler

EYE2 = torch.eye(2)


def unit(deg: float) -> torch.Tensor:
    rad = math.radians(deg)
    return torch.tensor([math.cos(rad), math.sin(rad)])


def ce_by_hand(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(z) for z in logits))


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_builds_runs_and_backpropagates(name):
    info = LOSSES[name]
    for key, spec in info.params.items():
        assert spec.kind in ("float", "int") and spec.low <= spec.default <= spec.high, key
    assert info.title and info.formula and info.explanation
    torch.manual_seed(0)
    module = build_loss(name, 16, 6)
    embeddings = torch.randn(12, 16, requires_grad=True)
    logits = torch.randn(12, 6, requires_grad=True)
    targets = torch.arange(12) % 6
    out = module(embeddings, logits, targets)
    assert isinstance(out, LossOutput) and out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.logits.shape == (12, 6)
    out.loss.backward()
    # CE learns through the classifier, margin heads through the embedding, joint losses through both.
    uses_embedding, uses_logits = name != "ce", not info.has_class_weights or name == "center"
    for tensor, used in ((embeddings, uses_embedding), (logits, uses_logits)):
        assert (tensor.grad is not None) == used
        if used:
            assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


@pytest.mark.parametrize("name, params, words", [
    ("focal", {}, "unknown loss"),
    ("arcface", {"margin": 0.5}, "no parameter 'margin'"),
    ("arcface", {"margin_rad": 3.0}, "'margin_rad' must be in"),
    ("sphereface", {"m": 2.5}, "'m' must be an integer"),
    ("sphereface", {"m": 5}, "'m' must be in"),
    ("cosface", {"s": "big"}, "must be a number"),
])
def test_build_loss_rejects_bad_input(name, params, words):
    with pytest.raises(ValueError, match=words):
        build_loss(name, 8, 3, **params)


def test_label_smoothing_matches_hand_formula_and_torch():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    targets = torch.tensor([0, 1])
    eps, classes = 0.2, 3
    expected = 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        log_norm = math.log(sum(math.exp(z) for z in row))
        q = [(1 - eps) * (j == y) + eps / classes for j in range(classes)]
        expected += -sum(qj * (zj - log_norm) for qj, zj in zip(q, row))
    expected /= 2
    out = build_loss("ce", 4, 3, label_smoothing=eps)(None, logits, targets)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.loss.item() == pytest.approx(F.cross_entropy(logits, targets, label_smoothing=eps).item(), rel=1e-6)
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5]])  # MixUp-style targets are allowed for CE
    soft_loss = build_loss("ce", 4, 3, label_smoothing=0.0)(None, logits, soft).loss.item()
    by_hand = -sum(sum(q * (z - math.log(sum(math.exp(v) for v in row))) for q, z in zip(qs, row))
                   for qs, row in zip(soft.tolist(), logits.tolist())) / 2
    assert soft_loss == pytest.approx(by_hand, rel=1e-6)


@pytest.mark.parametrize("name, params", [("arcface", {"margin_rad": 0.0}), ("cosface", {"margin_cos": 0.0}),
                                          ("sphereface", {"m": 1, "lambda_base": 0.0, "lambda_min": 0.0})])
def test_zero_margin_is_normalized_softmax(name, params):
    torch.manual_seed(1)
    head = build_loss(name, 8, 5, s=16.0, **params).train()
    embeddings, targets = torch.randn(10, 8), torch.arange(10) % 5
    cos = F.normalize(embeddings, dim=1) @ F.normalize(head.weight.detach(), dim=1).T
    out = head(embeddings, None, targets)
    assert out.loss.item() == pytest.approx(F.cross_entropy(16.0 * cos, targets).item(), rel=1e-5)
    assert torch.allclose(out.logits, 16.0 * cos, atol=1e-5)


def two_class_loss(name: str, deg: float, s: float, **params) -> float:
    head = build_loss(name, 2, 2, s=s, init_weight=EYE2, **params)
    return head(unit(deg)[None], None, torch.tensor([0])).loss.item()


def test_arcface_two_class_toy_by_hand():
    # Embedding at 30 degrees: theta_0 = 30 deg to class 0, theta_1 = 60 deg to class 1.
    s, m = 10.0, 0.3
    expected = ce_by_hand([s * math.cos(math.radians(30) + m), s * math.cos(math.radians(60))], 0)
    assert two_class_loss("arcface", 30, s, margin_rad=m) == pytest.approx(expected, rel=1e-5)
    head = build_loss("arcface", 2, 2, s=s, margin_rad=m, init_weight=EYE2)
    out = head(unit(30)[None], None, torch.tensor([0]))
    # Logits for accuracy carry no margin.
    assert out.logits[0].tolist() == pytest.approx([s * math.cos(math.radians(30)), s * math.cos(math.radians(60))], rel=1e-5)


def test_arcface_past_pi_uses_linear_fallback_and_stays_monotonic():
    s, m = 1.0, 0.5
    theta = np.array([0.0, 1.0, math.pi - m - 0.01, math.pi - m + 0.01, 3.0, math.pi])
    values = target_logit("arcface", theta, s, m)
    below = theta < math.pi - m
    assert values[below] == pytest.approx(np.cos(theta[below] + m), abs=1e-9)
    assert values[~below] == pytest.approx(np.cos(theta[~below]) - m * math.sin(m), abs=1e-9)
    grid = target_logit("arcface", np.linspace(0, math.pi, 2001), s, m)
    assert np.all(np.diff(grid) < 0)


def test_cosface_and_softmax_target_logits():
    theta = torch.linspace(0, math.pi, 7)
    assert torch.allclose(target_logit("cosface", theta, 30.0, 0.35), 30.0 * (torch.cos(theta) - 0.35))
    assert torch.allclose(target_logit("softmax", theta, 2.0, 0.0), 2.0 * torch.cos(theta))
    s, m = 8.0, 0.4
    expected = ce_by_hand([s * (math.cos(math.radians(20)) - m), s * math.cos(math.radians(70))], 0)
    assert two_class_loss("cosface", 20, s, margin_cos=m) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="unknown margin"):
        target_logit("angular", theta, 1.0, 0.1)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_sphereface_psi_matches_definition_and_decreases(m):
    theta = np.linspace(0, math.pi, 4001)
    psi = target_logit("sphereface", theta, 1.0, m)
    k = np.minimum(np.floor(m * theta / math.pi), m - 1)
    assert psi == pytest.approx((-1.0) ** k * np.cos(m * theta) - 2 * k, abs=1e-9)
    assert np.all(np.diff(psi) < 0)
    assert psi[0] == pytest.approx(1.0) and psi[-1] == pytest.approx(1 - 2 * m)


def test_sphereface_annealing_by_hand_and_resume_from_state_dict():
    params = dict(m=2, s=5.0, lambda_base=100.0, lambda_gamma=0.5, lambda_power=1.0, lambda_min=2.0)
    head = build_loss("sphereface", 2, 2, init_weight=EYE2, **params).train()
    x, y = unit(40)[None], torch.tensor([0])
    head(x, None, y)
    head(x, None, y)
    assert int(head.step) == 2
    lam = max(2.0, 100.0 * (1 + 0.5 * 3) ** -1.0)  # the third call anneals with step 3: lambda = 40
    c = math.cos(math.radians(40))
    psi = 2 * c * c - 1  # k = 0 for theta < 90 degrees with m = 2
    expected = ce_by_hand([5.0 * (lam * c + psi) / (1 + lam), 5.0 * math.cos(math.radians(50))], 0)
    resumed = build_loss("sphereface", 2, 2, **params).train()
    resumed.load_state_dict(head.state_dict())
    assert resumed(x, None, y).loss.item() == pytest.approx(expected, rel=1e-5)
    assert head(x, None, y).loss.item() == pytest.approx(expected, rel=1e-5)
    head.eval()
    head(x, None, y)
    assert int(head.step) == 3  # evaluation does not advance the schedule
    assert sphereface_lambda(10**9, 100.0, 0.5, 1.0, 2.0) == 2.0


@pytest.mark.parametrize("name, key", [("arcface", "margin_rad"), ("cosface", "margin_cos"), ("sphereface", "m")])
def test_larger_margin_gives_larger_loss(name, key):
    extra = {"lambda_base": 0.0, "lambda_min": 0.0} if name == "sphereface" else {}
    margins = [1, 2, 3, 4] if name == "sphereface" else [0.0, 0.2, 0.4, 0.6]
    losses = [two_class_loss(name, 25, 10.0, **{key: m}, **extra) for m in margins]
    assert all(a < b for a, b in zip(losses, losses[1:]))


@pytest.mark.parametrize("name", ["arcface", "cosface", "sphereface", "center", "triplet"])
def test_soft_targets_are_refused_with_a_hint(name):
    module = build_loss(name, 4, 3)
    soft = torch.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="hard labels.*MixUp"):
        module(torch.randn(2, 4), torch.randn(2, 3), soft)


def test_margin_head_gradient_is_finite_when_embedding_equals_its_weight():
    head = build_loss("arcface", 2, 2, init_weight=EYE2)
    x = unit(0)[None].clone().requires_grad_(True)
    head(x, None, torch.tensor([0])).loss.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


def test_init_weight_shape_is_checked():
    with pytest.raises(ValueError, match="init_weight must have shape"):
        build_loss("cosface", 4, 3, init_weight=torch.zeros(3, 5))


def test_center_loss_by_hand():
    centers = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    module = build_loss("center", 2, 2, center_weight=0.1, init_weight=centers)
    embeddings = torch.tensor([[2.0, 1.0], [0.0, -1.0]])
    logits = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    targets = torch.tensor([0, 1])
    # ||(2,1)-(1,0)||^2 = 2 and ||(0,-1)-(0,2)||^2 = 9: center term = (2 + 9) / (2 * 2).
    ce = (ce_by_hand([1.0, 0.0], 0) + ce_by_hand([0.5, 0.5], 1)) / 2
    loss = module(embeddings, logits, targets).loss.item()
    assert loss == pytest.approx(ce + 0.1 * 11 / 4, rel=1e-6)
    assert [n for n, _ in module.named_parameters()] == ["centers"]


def brute_force_batch_hard(embeddings, labels, margin):
    unit_emb = F.normalize(embeddings, dim=1).tolist()
    labels = labels.tolist()
    terms = []
    for a in range(len(labels)):
        dist = [math.dist(unit_emb[a], unit_emb[j]) for j in range(len(labels))]
        pos = [dist[j] for j in range(len(labels)) if j != a and labels[j] == labels[a]]
        neg = [dist[j] for j in range(len(labels)) if labels[j] != labels[a]]
        if pos and neg:
            terms.append(max(0.0, max(pos) - min(neg) + margin))
    return sum(terms) / len(terms)


def test_batch_hard_triplet_matches_brute_force_loop():
    torch.manual_seed(3)
    embeddings = torch.randn(12, 5)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4])  # identity 4 has no positive
    logits = torch.zeros(12, 5)
    module = build_loss("triplet", 5, 5, margin=0.3, triplet_weight=2.0)
    loss = module(embeddings, logits, labels).loss.item()
    assert loss == pytest.approx(math.log(5) + 2.0 * brute_force_batch_hard(embeddings, labels, 0.3), rel=1e-5)


def test_pk_sampler_batches_hold_p_identities_of_k_images():
    labels = torch.tensor([i // 5 for i in range(50)] + [10, 11, 11])  # 10 has one image, 11 two
    sampler = PKSampler(labels, p=4, k=3, seed=7)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 53 // 12
    for batch in batches:
        ids = labels[batch].tolist()
        assert len(batch) == 12 and len(set(ids)) == 4
        assert all(ids.count(i) == 3 for i in set(ids))
        assert 10 not in ids  # a lone image has no positive: left out when enough others exist
    assert [list(b) for b in PKSampler(labels, 4, 3, seed=7)] == batches
    assert list(sampler) != batches  # the next epoch draws differently
    sampler.set_epoch(0)
    assert list(sampler) == batches
    with pytest.raises(ValueError, match="identities"):
        PKSampler(labels, p=20, k=2)


def test_target_logit_keeps_numpy_and_shape():
    theta = np.linspace(0, 1, 6).reshape(2, 3)
    out = target_logit("arcface", theta, 30.0, 0.5)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3)
    assert out[0, 0] == pytest.approx(30.0 * math.cos(0.5))
    assert sphereface_psi(torch.tensor([1.0]), 4).item() == pytest.approx(1.0)
