"""Loss registry: cross-entropy, margin heads, and joint CE + metric losses.

Every loss module is called the same way,
``loss_module(embeddings [B, D], logits [B, C], targets) -> LossOutput``, where
``embeddings`` are the model's unnormalized embeddings, ``logits`` its plain
classifier's output and ``targets`` class indices ``[B]`` (or soft targets
``[B, C]`` where a loss allows them). A loss may own parameters (class weights,
centers): the trainer optimizes and saves them with the model.

Two ways of using a metric loss: joint (``center``/``triplet`` add a weighted
metric term to CE) and sequential (start from a CE checkpoint and fine-tune
with a margin head, optionally initialised from the classifier's weights
through ``init_weight``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lib.losses.margins import ArcFaceHead, CosFaceHead, LossOutput, SphereFaceHead, hard_targets


@dataclass(frozen=True)
class ParamSpec:
    kind: str  # "float" | "int"
    low: float
    high: float
    default: float
    help: str = ""


@dataclass(frozen=True)
class LossInfo:
    cls: type
    params: dict[str, ParamSpec]
    title: str
    formula: str
    explanation: str
    # Soft (MixUp/CutMix) targets are refused by losses that need one class per sample.
    needs_hard_labels: bool = True
    # The trainer feeds such a loss batches of P identities x K images (lib/train/sampler.py): its
    # metric term compares images of one identity within the batch, so each needs company there.
    needs_pk_batches: bool = False
    # Whether ``init_weight`` ([num_classes, embedding_dim]) is used.
    has_class_weights: bool = False


class CrossEntropy(nn.Module):
    """Cross-entropy on the model's own classifier logits, with label smoothing."""

    def __init__(self, embedding_dim: int, num_classes: int, label_smoothing: float = 0.1):
        super().__init__()
        self.label_smoothing = float(label_smoothing)

    def forward(self, embeddings, logits, targets):
        loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        return LossOutput(loss=loss, logits=logits.detach())


class CenterLoss(nn.Module):
    """CE + center_weight * (1/2B) sum_i ||x_i - c_{y_i}||^2 with learnable centers c.

    The centers are ordinary parameters updated by the optimizer (rather than the
    paper's separate moving-average rule), so they are saved and resumed with the rest.
    """

    title = "Center loss"

    def __init__(self, embedding_dim: int, num_classes: int, center_weight: float = 0.01,
                 label_smoothing: float = 0.0, init_weight: torch.Tensor | None = None):
        super().__init__()
        self.center_weight = float(center_weight)
        self.label_smoothing = float(label_smoothing)
        self.centers = nn.Parameter(torch.randn(num_classes, embedding_dim))
        if init_weight is not None:
            _copy_init(self.centers, init_weight)

    def center_term(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        diff = embeddings.float() - self.centers[labels]
        return 0.5 * diff.pow(2).sum(dim=1).mean()

    def forward(self, embeddings, logits, targets):
        labels = hard_targets(targets, self.title)
        ce = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        loss = ce + self.center_weight * self.center_term(embeddings, labels)
        return LossOutput(loss=loss, logits=logits.detach())


def batch_hard_triplet(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """mean over anchors of relu(hardest positive distance - hardest negative distance + margin).

    Distances are Euclidean between L2-normalized embeddings (as in FaceNet, so the
    margin is on the unit sphere's scale: at most 2). Anchors without a positive or
    without a negative in the batch are left out; with none left the term is 0.
    """
    unit = F.normalize(embeddings.float(), dim=1)
    # ||a - b||^2 = 2 - 2 a.b for unit vectors: one matrix product instead of a [B, B, D] difference.
    squared = (2.0 - 2.0 * unit @ unit.T).clamp_min(0.0)
    dist = squared.clamp_min(1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive, negative = same & ~eye, ~same
    hardest_pos = dist.masked_fill(~positive, float("-inf")).amax(dim=1)
    hardest_neg = dist.masked_fill(~negative, float("inf")).amin(dim=1)
    valid = positive.any(dim=1) & negative.any(dim=1)
    if not bool(valid.any()):
        return embeddings.sum() * 0.0
    return F.relu(hardest_pos[valid] - hardest_neg[valid] + margin).mean()


class TripletLoss(nn.Module):
    """CE + triplet_weight * batch-hard triplet loss (needs P x K batches)."""

    title = "Triplet loss"

    def __init__(self, embedding_dim: int, num_classes: int, margin: float = 0.2,
                 triplet_weight: float = 1.0, label_smoothing: float = 0.0):
        super().__init__()
        self.margin = float(margin)
        self.triplet_weight = float(triplet_weight)
        self.label_smoothing = float(label_smoothing)

    def forward(self, embeddings, logits, targets):
        labels = hard_targets(targets, self.title)
        ce = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        loss = ce + self.triplet_weight * batch_hard_triplet(embeddings, labels, self.margin)
        return LossOutput(loss=loss, logits=logits.detach())


def _copy_init(param: nn.Parameter, init_weight) -> None:
    init_weight = torch.as_tensor(init_weight, dtype=param.dtype)
    if init_weight.shape != param.shape:
        raise ValueError(f"init_weight must have shape {tuple(param.shape)}, got {tuple(init_weight.shape)}")
    with torch.no_grad():
        param.copy_(init_weight)


_SMOOTHING = ParamSpec("float", 0.0, 0.5, 0.0, "Label smoothing of the cross-entropy (0 = off).")
_SCALE = ParamSpec("float", 1.0, 128.0, 30.0,
                   "Scale s: cosines lie in [-1, 1], so s sets how peaked the softmax can get.")

LOSSES: dict[str, LossInfo] = {
    "ce": LossInfo(
        cls=CrossEntropy,
        params={"label_smoothing": ParamSpec("float", 0.0, 0.5, 0.1, _SMOOTHING.help)},
        title="Cross-entropy",
        formula=r"L = -\sum_j q_j \log \frac{e^{z_j}}{\sum_k e^{z_k}},\quad "
                r"q = (1-\varepsilon)\,\mathrm{onehot}(y) + \varepsilon / C",
        explanation="Plain softmax classification on the model's classifier. Its features separate "
                    "the training identities but are not pulled tight, so unseen faces can overlap. "
                    "Label smoothing spreads a little target mass over all classes, which discourages "
                    "over-confident logits.",
        needs_hard_labels=False),
    "arcface": LossInfo(
        cls=ArcFaceHead,
        params={"s": _SCALE,
                "margin_rad": ParamSpec("float", 0.0, 1.0, 0.5,
                                        "Additive angular margin m in radians (0.5 rad = 28.6 degrees)."),
                "label_smoothing": _SMOOTHING},
        title="ArcFace (additive angular margin)",
        formula=r"L = -\log \frac{e^{s\cos(\theta_y + m)}}{e^{s\cos(\theta_y + m)} "
                r"+ \sum_{j \ne y} e^{s \cos\theta_j}}",
        explanation="Embeddings and class weights are normalized, so only the angle theta matters. "
                    "The true class must win even after its angle is increased by m, which pulls each "
                    "class into a tight cone on the sphere: a constant geodesic margin between classes.",
        has_class_weights=True),
    "cosface": LossInfo(
        cls=CosFaceHead,
        params={"s": _SCALE,
                "margin_cos": ParamSpec("float", 0.0, 1.0, 0.35,
                                        "Additive cosine margin m subtracted from the target cosine."),
                "label_smoothing": _SMOOTHING},
        title="CosFace (additive cosine margin)",
        formula=r"L = -\log \frac{e^{s(\cos\theta_y - m)}}{e^{s(\cos\theta_y - m)} "
                r"+ \sum_{j \ne y} e^{s \cos\theta_j}}",
        explanation="Like ArcFace on the sphere, but the margin is subtracted from the cosine itself. "
                    "The true class must beat the others by m in cosine, a margin that is constant in "
                    "cosine space rather than in angle.",
        has_class_weights=True),
    "sphereface": LossInfo(
        cls=SphereFaceHead,
        params={"s": _SCALE,
                "m": ParamSpec("int", 1, 4, 4, "Multiplicative angular margin: the target angle is multiplied by m."),
                "lambda_base": ParamSpec("float", 0.0, 1e5, 1000.0, "Starting lambda: large = plain softmax at first."),
                "lambda_gamma": ParamSpec("float", 0.0, 10.0, 0.12, "How fast lambda decays per step."),
                "lambda_power": ParamSpec("float", 0.0, 10.0, 1.0, "Power of the lambda decay."),
                "lambda_min": ParamSpec("float", 0.0, 1e5, 5.0, "Lambda never falls below this."),
                "label_smoothing": _SMOOTHING},
        title="SphereFace (multiplicative angular margin, A-Softmax)",
        formula=r"f_y = \frac{\lambda\cos\theta_y + \psi(\theta_y)}{1+\lambda},\ "
                r"\psi(\theta) = (-1)^k \cos(m\theta) - 2k,\ \theta \in [\tfrac{k\pi}{m}, \tfrac{(k+1)\pi}{m}],\ "
                r"\lambda = \max(\lambda_{min}, \lambda_0 (1+\gamma t)^{-p})",
        explanation="The true class must win with its angle multiplied by m, so the margin grows with "
                    "the angle. That is hard to train from scratch, so the target logit is blended with "
                    "the plain cosine by lambda, which starts large and decays with each step.",
        has_class_weights=True),
    "center": LossInfo(
        cls=CenterLoss,
        params={"center_weight": ParamSpec("float", 0.0, 1.0, 0.01, "Weight of the center term beside CE."),
                "label_smoothing": _SMOOTHING},
        title="Center loss (joint with CE)",
        formula=r"L = L_{CE} + \lambda_c \frac{1}{2B}\sum_i \lVert x_i - c_{y_i} \rVert^2",
        explanation="CE keeps classes apart; the center term pulls each embedding toward a learnable "
                    "center of its identity, shrinking the spread within a class. Together they give "
                    "features that are both separable and compact. Batches of P identities x K images "
                    "pull several images of each identity toward its center in every step.",
        has_class_weights=True, needs_pk_batches=True),
    "triplet": LossInfo(
        cls=TripletLoss,
        params={"margin": ParamSpec("float", 0.0, 2.0, 0.2, "Distance margin between positive and negative."),
                "triplet_weight": ParamSpec("float", 0.0, 10.0, 1.0, "Weight of the triplet term beside CE."),
                "label_smoothing": _SMOOTHING},
        title="Triplet loss, batch-hard (joint with CE)",
        formula=r"L = L_{CE} + w \frac{1}{B} \sum_a \big[\max_p d(a,p) - \min_n d(a,n) + \alpha\big]_+",
        explanation="Each image (anchor) should be closer to its farthest same-identity image than to "
                    "the nearest other identity, by a margin alpha. Batches of P identities x K images "
                    "make sure every anchor has positives to compare with.",
        needs_pk_batches=True),
}


def validate_params(name: str, params: dict) -> dict:
    """Defaults filled in, each value checked against its ParamSpec; ValueError names the problem."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    specs = LOSSES[name].params
    unknown = sorted(set(params) - set(specs))
    if unknown:
        raise ValueError(f"loss {name!r} has no parameter {unknown[0]!r}; its parameters are {', '.join(specs)}")
    values = {}
    for key, spec in specs.items():
        value = params.get(key, spec.default)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"loss {name!r} parameter {key!r} must be a number, got {value!r}")
        if spec.kind == "int" and float(value) != int(value):
            raise ValueError(f"loss {name!r} parameter {key!r} must be an integer, got {value!r}")
        if not spec.low <= value <= spec.high:
            raise ValueError(f"loss {name!r} parameter {key!r} must be in [{spec.low}, {spec.high}], got {value!r}")
        values[key] = int(value) if spec.kind == "int" else float(value)
    return values


def build_loss(name: str, embedding_dim: int, num_classes: int, *, init_weight=None, **params) -> nn.Module:
    """The loss module ``name`` with ``params`` (defaults for the rest).

    ``init_weight`` ([num_classes, embedding_dim], e.g. the CE classifier's weight or
    class centers of a trained model) initialises a margin head's class weights or
    the center loss's centers; losses without class weights ignore it.
    """
    values = validate_params(name, params)
    info = LOSSES[name]
    if info.has_class_weights and init_weight is not None:
        values["init_weight"] = init_weight
    return info.cls(int(embedding_dim), int(num_classes), **values)
