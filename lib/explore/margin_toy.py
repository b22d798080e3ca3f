"""The live margin toy: a tiny network with 2-D features, trained in about a second.

It repeats the classic A-Softmax pictures on real faces: take the handful of
identities with the most training images, describe each face by a small fixed
vector (its pixels projected on their first principal components), and train a
small MLP that maps that vector to a 2-D feature, with any loss of the
registry. In 2-D one can *see* what a loss does: cross-entropy spreads classes
as long radial petals (separable), margin losses squeeze each class into a
narrow angular sector with empty gaps between them (discriminative).

Two ways to train with a margin loss are offered:
"scratch" (the loss alone from the first step), "joint" (the course's joint training: the
loss plus a weighted center term, trained together from the first step) and "sequential"
(cross-entropy first, then the margin head, initialised from the classifier's weights).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.base.threads import one_thread
from lib.data.datasets import load_split
from lib.losses.registry import LOSSES, build_loss
from lib.train.step import JointLoss

TOY_LOSSES = ("ce", "sphereface", "cosface", "arcface", "center", "triplet")
SCHEDULES = ("scratch", "joint", "sequential")
JOINT_WEIGHT = 0.3  # the course's example: 0.7 x the loss + 0.3 x the center term
MARGIN_HEADS = ("sphereface", "cosface", "arcface")

# In two dimensions a scale of 30 makes the softmax saturate at once; 10 trains
# smoothly. SphereFace's lambda must anneal within a few hundred steps here
# (the registry's default is paced for full training runs).
TOY_DEFAULTS: dict[str, dict] = {
    "ce": {"label_smoothing": 0.0},
    "sphereface": {"s": 10.0, "m": 4, "lambda_base": 50.0, "lambda_gamma": 0.5, "lambda_min": 0.0},
    "cosface": {"s": 10.0, "margin_cos": 0.35},
    "arcface": {"s": 10.0, "margin_rad": 0.5},
    "center": {"center_weight": 0.05},
    "triplet": {"margin": 0.3, "triplet_weight": 1.0},
}
INPUT_DIM = 32
HIDDEN = 64
BATCH = 64


@dataclass
class ToyData:
    """Fixed input vectors of the chosen identities (train and held-out dev images)."""
    train_x: torch.Tensor  # float [N, INPUT_DIM]
    train_y: torch.Tensor  # int64 [N], 0..K-1
    dev_x: torch.Tensor
    dev_y: torch.Tensor
    names: list[str]


@dataclass
class ToyRun:
    loss: str
    params: dict
    schedule: str
    features: np.ndarray      # [N, 2] train features
    labels: np.ndarray        # [N]
    dev_features: np.ndarray  # [M, 2] held-out images of the same identities
    dev_labels: np.ndarray
    directions: np.ndarray    # [K, 2] unit vector of each class's weight (what decides the class)
    train_acc: float
    dev_acc: float
    intra_angle_deg: float    # mean angle between a train feature and its class's mean direction
    min_gap_deg: float        # smallest empty angle between two neighbouring classes' sectors
    seconds: float
    losses: list[float] = field(default_factory=list)


def toy_data(root, identities: int = 6) -> ToyData:
    """The ``identities`` people with the most training images (ties broken by name)."""
    if not 2 <= identities <= 10:
        raise ValueError(f"identities: choose 2 to 10, got {identities}")
    train, dev = load_split(root, "train"), load_split(root, "dev")
    counts = torch.bincount(train.labels, minlength=len(train.classes))
    order = sorted(range(len(counts)), key=lambda c: (-int(counts[c]), train.classes[c]))
    chosen = torch.tensor(sorted(order[:identities]))
    train_x, train_y = _pixels_of(train, chosen)
    dev_x, dev_y = _pixels_of(dev, chosen)
    mean = train_x.mean(0)
    # Principal directions of the train pixels: a fixed, cheap description of each face
    # (an exact SVD, so the same data always gives the same toy).
    _, _, vh = torch.linalg.svd(train_x - mean, full_matrices=False)
    basis = vh[:min(INPUT_DIM, len(train_x) - 1)].T
    train_z = (train_x - mean) @ basis
    scale = train_z.std(0).clamp_min(1e-6)
    return ToyData(train_z / scale, train_y, ((dev_x - mean) @ basis) / scale, dev_y,
                   [train.classes[int(c)] for c in chosen])


def _pixels_of(image_set, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.isin(image_set.labels, chosen)
    pixels = F.avg_pool2d(image_set.images[mask].float() / 255.0, 4).flatten(1)  # 16x16 color
    return pixels, torch.searchsorted(chosen, image_set.labels[mask])


class ToyNet(nn.Module):
    """MLP -> 2-D feature -> linear classifier (the classifier only matters for CE-based losses)."""

    def __init__(self, input_dim: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(input_dim, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                                  nn.Linear(HIDDEN, 2))
        self.classifier = nn.Linear(2, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.classifier(features)


def toy_params(loss: str, overrides: dict | None = None) -> dict:
    if loss not in TOY_LOSSES:
        raise ValueError(f"loss: the toy trains {', '.join(TOY_LOSSES)}; got {loss!r}")
    params = {**TOY_DEFAULTS[loss], **(overrides or {})}
    unknown = sorted(set(params) - set(LOSSES[loss].params))
    if unknown:
        raise ValueError(f"loss {loss!r} has no parameter {unknown[0]!r}")
    return params


def _steps(net, loss_module, data, steps, generator, record) -> None:
    """``steps`` AdamW steps on random mini-batches, cosine learning-rate decay."""
    params = list(net.parameters()) + list(loss_module.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    loss_module.train()
    for _ in range(steps):
        index = torch.randint(0, len(data.train_x), (BATCH,), generator=generator)
        features, logits = net(data.train_x[index])
        out = loss_module(features, logits, data.train_y[index])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        schedule.step()
        record.append(float(out.loss.detach()))


def train_toy(data: ToyData, loss: str, params: dict | None = None, steps: int = 300,
              schedule: str = "scratch", seed: int = 0) -> ToyRun:
    """Train a ToyNet on ``data`` with ``loss``; "sequential" spends the first half on CE and
    then switches to the loss, its class weights started from the CE classifier."""
    params = toy_params(loss, params)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: choose one of {SCHEDULES}, got {schedule!r}")
    if schedule == "joint" and loss in ("center", "triplet"):
        raise ValueError(f"schedule: the {loss!r} loss is already CE plus a metric term; train it 'scratch'")
    if not 10 <= steps <= 5000:
        raise ValueError(f"steps: choose 10 to 5000, got {steps}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    classes = len(data.names)
    net, record = ToyNet(data.train_x.shape[1], classes), []
    start = time.perf_counter()
    first = steps // 2 if schedule == "sequential" and loss != "ce" else 0
    with _tiny_work():
        if first:
            _steps(net, build_loss("ce", 2, classes, **TOY_DEFAULTS["ce"]), data, first, generator, record)
        # Only a margin head's class weights live where the classifier's do (class directions).
        init = net.classifier.weight.detach().clone() if first and loss in MARGIN_HEADS else None
        loss_module = build_loss(loss, 2, classes, init_weight=init, **params)
        if schedule == "joint":  # the engine's own joint objective (lib/train/step.py), at the course's weight
            loss_module = JointLoss(loss_module, JOINT_WEIGHT, 2, classes)
        _steps(net, loss_module, data, steps - first, generator, record)
    seconds = time.perf_counter() - start
    return _summarize(net, loss_module, data, loss, params, schedule, seconds, record)


@contextmanager
def _tiny_work():
    """Tensors of 64 x 64 gain nothing from several threads, and on a busy machine the
    threads' hand-offs make training ten times slower: one thread while the toy trains.
    Once the loss is near zero its gradients are denormal floats, which the CPU handles
    a hundred times slower: flush them to zero meanwhile (this thread only)."""
    with one_thread():
        torch.set_flush_denormal(True)
        try:
            yield
        finally:
            torch.set_flush_denormal(False)


def class_directions(net: ToyNet, loss_module: nn.Module) -> np.ndarray:
    """Unit vector of each class's deciding weight: the margin head's own, else the classifier's."""
    head = getattr(loss_module, "main", loss_module)  # a joint objective decides with the loss it wraps
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor):
        weight = net.classifier.weight
    return F.normalize(weight.detach().float(), dim=1).numpy()


def _summarize(net, loss_module, data, loss, params, schedule, seconds, record) -> ToyRun:
    net.eval()
    loss_module.eval()
    with torch.no_grad():
        features, logits = net(data.train_x)
        dev_features, dev_logits = net(data.dev_x)
        train_scores = loss_module(features, logits, data.train_y).logits
        dev_scores = loss_module(dev_features, dev_logits, data.dev_y).logits if len(data.dev_y) else dev_logits
    labels = data.train_y.numpy()
    intra, gap = angular_spread(features.numpy(), labels, len(data.names))
    return ToyRun(loss=loss, params=dict(params), schedule=schedule, features=features.numpy(), labels=labels,
                  dev_features=dev_features.numpy(), dev_labels=data.dev_y.numpy(),
                  directions=class_directions(net, loss_module),
                  train_acc=_accuracy(train_scores, data.train_y), dev_acc=_accuracy(dev_scores, data.dev_y),
                  intra_angle_deg=intra, min_gap_deg=gap, seconds=seconds, losses=record)


def _accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return float((scores.argmax(1) == labels).float().mean()) if len(labels) else float("nan")


def angular_spread(features: np.ndarray, labels: np.ndarray, classes: int) -> tuple[float, float]:
    """(mean angle in degrees between each feature and its class's mean direction,
    smallest empty angle between the angular sectors of two neighbouring classes).

    A class's sector runs from its smallest to its largest feature angle around the
    class's mean direction; a negative gap means neighbouring sectors overlap.
    """
    angles = np.arctan2(features[:, 1], features[:, 0])
    sectors, intra = [], []
    for c in range(classes):
        own = angles[labels == c]
        if own.size == 0:
            continue
        center = math.atan2(np.sin(own).mean(), np.cos(own).mean())
        offset = np.angle(np.exp(1j * (own - center)))  # wrapped to (-pi, pi]
        intra.extend(np.abs(offset).tolist())
        sectors.append((center + offset.min(), center + offset.max()))
    if len(sectors) < 2:
        return float(np.degrees(np.mean(intra))) if intra else 0.0, 0.0
    sectors.sort(key=lambda s: (s[0] + s[1]) / 2)
    gaps = []
    for index, (low, high) in enumerate(sectors):
        next_low = sectors[(index + 1) % len(sectors)][0] + (2 * math.pi if index == len(sectors) - 1 else 0.0)
        gaps.append(next_low - high)
    return float(np.degrees(np.mean(intra))), float(np.degrees(min(gaps)))
