"""Margin heads: normalized class weights + a margin on the target-class cosine.

Each head turns an embedding into cosines with its L2-normalized class weights,
applies a margin to the target class only, multiplies by the scale ``s`` and
hands the result to cross-entropy. Margins are in their own paper's units:

- ArcFace (Deng et al. 2019): additive angular margin, ``cos(theta + margin_rad)``.
- CosFace (Wang et al. 2018): additive cosine margin, ``cos(theta) - margin_cos``.
- SphereFace (Liu et al. 2017): multiplicative angular margin, ``cos(m * theta)``
  made monotonic as ``psi(theta) = (-1)^k cos(m theta) - 2k``, blended with the
  plain cosine by the annealed ``lambda`` so training can start.

All three are used here on normalized embeddings with a scale ``s`` (SphereFace's
original multiplies by the feature norm instead; the normalized form lets the
three be compared on the same axis, and ``m = 1`` with ``lambda = 0`` is then
exactly the normalized softmax).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class LossOutput:
    """What every loss module returns: the scalar to minimise, and the logits to
    measure accuracy with (for margin heads: s*cos(theta), without the margin)."""

    loss: torch.Tensor
    logits: torch.Tensor


# acos and sqrt have infinite slope at +-1; keeping cosines a hair inside avoids NaN gradients.
_COS_EPS = 1e-6


def arcface_margin(cos: torch.Tensor, margin_rad: float, eps: float = _COS_EPS) -> torch.Tensor:
    """cos(theta + m) where theta + m stays below pi; beyond, a linear fallback.

    cos(theta + m) stops decreasing once theta + m passes pi, so a sample far
    from its class would be pushed the wrong way. As in the ArcFace authors'
    implementation (the "threshold" variant, not "easy margin"), for
    theta > pi - m we use cos(theta) - m * sin(m), which continues the curve
    downward and keeps the target logit monotonic in theta. ``eps`` keeps cosines
    off +-1 where sin's slope is infinite (training); 0 gives exact values (plots).
    """
    cos = cos.clamp(-1 + eps, 1 - eps)
    sin = torch.sqrt((1.0 - cos * cos).clamp_min(0.0))
    shifted = cos * math.cos(margin_rad) - sin * math.sin(margin_rad)
    threshold = math.cos(math.pi - margin_rad)
    fallback = cos - margin_rad * math.sin(margin_rad)
    return torch.where(cos > threshold, shifted, fallback)


def cosface_margin(cos: torch.Tensor, margin_cos: float) -> torch.Tensor:
    """cos(theta) - m."""
    return cos - margin_cos


def _chebyshev_cos_m(cos: torch.Tensor, m: int) -> torch.Tensor:
    """cos(m * theta) as a polynomial in cos(theta) (no acos in the gradient path)."""
    if m == 1:
        return cos
    if m == 2:
        return 2 * cos**2 - 1
    if m == 3:
        return 4 * cos**3 - 3 * cos
    return 8 * cos**4 - 8 * cos**2 + 1


def sphereface_psi(cos: torch.Tensor, m: int) -> torch.Tensor:
    """psi(theta) = (-1)^k cos(m theta) - 2k for theta in [k pi/m, (k+1) pi/m].

    Decreases monotonically from 1 at theta = 0 to 1 - 2m at theta = pi.
    """
    if m not in (1, 2, 3, 4):
        raise ValueError(f"m must be an integer from 1 to 4, got {m!r}")
    # The polynomial has a finite slope everywhere; only the branch index needs acos.
    theta = torch.acos(cos.detach().clamp(-1.0, 1.0))
    k = torch.floor(m * theta / math.pi).clamp(0, m - 1)
    sign = 1.0 - 2.0 * torch.remainder(k, 2)
    return sign * _chebyshev_cos_m(cos, m) - 2.0 * k


def sphereface_lambda(step: int, lambda_base: float, lambda_gamma: float,
                      lambda_power: float, lambda_min: float) -> float:
    """lambda = max(lambda_min, base * (1 + gamma * step) ** -power): starts near plain softmax."""
    return max(lambda_min, lambda_base * (1.0 + lambda_gamma * step) ** (-lambda_power))


def target_logit(name: str, theta, s: float, m: float):
    """The target-class logit as a function of the angle theta (radians).

    ``name``: "softmax" (or "ce"), "arcface", "cosface", "sphereface" (m an
    integer, lambda = 0). Accepts a tensor or a NumPy array and returns the
    same kind and shape.
    """
    is_numpy = not isinstance(theta, torch.Tensor)
    angles = torch.as_tensor(np.asarray(theta, dtype=np.float64) if is_numpy else theta)
    cos = torch.cos(angles)
    if name in ("softmax", "ce"):
        value = cos
    elif name == "arcface":
        value = arcface_margin(cos, float(m), eps=0.0)
    elif name == "cosface":
        value = cosface_margin(cos, float(m))
    elif name == "sphereface":
        if float(m) != int(m):
            raise ValueError(f"sphereface m must be an integer from 1 to 4, got {m!r}")
        value = sphereface_psi(cos, int(m))
    else:
        raise ValueError(f"unknown margin {name!r}; choose softmax, arcface, cosface or sphereface")
    value = s * value
    return value.numpy() if is_numpy else value


def hard_targets(targets: torch.Tensor, title: str) -> torch.Tensor:
    """Class indices; soft (MixUp/CutMix) targets have no single class to put a margin on."""
    if targets.dim() != 1 or targets.dtype.is_floating_point:
        raise ValueError(f"{title} needs hard labels (class indices); turn off MixUp/CutMix")
    return targets


class MarginHead(nn.Module):
    """Cosine classifier with L2-normalized class weights; subclasses define the margin."""

    title = "margin head"

    def __init__(self, embedding_dim: int, num_classes: int, s: float,
                 label_smoothing: float = 0.0, init_weight: torch.Tensor | None = None):
        super().__init__()
        self.s = float(s)
        self.label_smoothing = float(label_smoothing)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        if init_weight is None:
            nn.init.xavier_uniform_(self.weight)
        else:
            init_weight = torch.as_tensor(init_weight, dtype=torch.float32)
            if tuple(init_weight.shape) != (num_classes, embedding_dim):
                raise ValueError(f"init_weight must have shape {(num_classes, embedding_dim)}, "
                                 f"got {tuple(init_weight.shape)}")
            with torch.no_grad():
                self.weight.copy_(init_weight)

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight, dim=1))

    def margin(self, cos_target: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def margin_logits(self, embeddings: torch.Tensor, targets: torch.Tensor):
        """(logits with the margin on each target class, plain s*cos logits)."""
        labels = hard_targets(targets, self.title)
        cos = self.cosines(embeddings)
        cos_target = cos.gather(1, labels[:, None])
        with_margin = cos.scatter(1, labels[:, None], self.margin(cos_target))
        return self.s * with_margin, self.s * cos

    def forward(self, embeddings, logits, targets):
        margin_logits, plain = self.margin_logits(embeddings, targets)
        loss = F.cross_entropy(margin_logits, targets, label_smoothing=self.label_smoothing)
        return LossOutput(loss=loss, logits=plain.detach())


class ArcFaceHead(MarginHead):
    title = "ArcFace"

    def __init__(self, embedding_dim, num_classes, s=30.0, margin_rad=0.5, label_smoothing=0.0,
                 init_weight=None):
        super().__init__(embedding_dim, num_classes, s, label_smoothing, init_weight)
        self.margin_rad = float(margin_rad)

    def margin(self, cos_target):
        return arcface_margin(cos_target, self.margin_rad)


class CosFaceHead(MarginHead):
    title = "CosFace"

    def __init__(self, embedding_dim, num_classes, s=30.0, margin_cos=0.35, label_smoothing=0.0,
                 init_weight=None):
        super().__init__(embedding_dim, num_classes, s, label_smoothing, init_weight)
        self.margin_cos = float(margin_cos)

    def margin(self, cos_target):
        return cosface_margin(cos_target, self.margin_cos)


class SphereFaceHead(MarginHead):
    """Target logit s * (lambda cos + psi) / (1 + lambda), lambda annealed per training step."""

    title = "SphereFace"

    def __init__(self, embedding_dim, num_classes, s=30.0, m=4, lambda_base=1000.0,
                 lambda_gamma=0.12, lambda_power=1.0, lambda_min=5.0, label_smoothing=0.0,
                 init_weight=None):
        super().__init__(embedding_dim, num_classes, s, label_smoothing, init_weight)
        if int(m) != m or not 1 <= int(m) <= 4:
            raise ValueError(f"m must be an integer from 1 to 4, got {m!r}")
        self.m = int(m)
        self.lambda_base, self.lambda_gamma = float(lambda_base), float(lambda_gamma)
        self.lambda_power, self.lambda_min = float(lambda_power), float(lambda_min)
        # A buffer, so the annealing position is saved in state_dict and resume is exact.
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def current_lambda(self) -> float:
        return sphereface_lambda(int(self.step), self.lambda_base, self.lambda_gamma,
                                 self.lambda_power, self.lambda_min)

    def margin(self, cos_target):
        lam = self.current_lambda()
        return (lam * cos_target.clamp(-1, 1) + sphereface_psi(cos_target, self.m)) / (1.0 + lam)

    def forward(self, embeddings, logits, targets):
        if self.training:
            self.step += 1
        return super().forward(embeddings, logits, targets)
