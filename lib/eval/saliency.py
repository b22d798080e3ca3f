"""Saliency maps with Captum: which pixels drive a class score, or a pair's similarity.

Every method explains a scalar output of a FaceNet with respect to the input
pixels in [0, 1] units (normalization happens inside the explained function, so
a map lines up with the picture the user sees):

- class mode: the logit of a target class (predicted, true or chosen),
- pair mode: the cosine similarity of two embeddings, attributed to each image
  in turn while the other one's embedding is held fixed.

Methods (one registry, ``METHODS``): Saliency (plain gradient), Integrated
Gradients, SmoothGrad (NoiseTunnel over Saliency), GradCAM on a chosen stage,
and Occlusion. Work is batched with Captum's internal batch sizes, so IG on a
64x64 image is one forward/backward over all its interpolation steps.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Occlusion, Saliency
from torch import nn

from lib.base.threads import one_thread
from lib.model.limits import batch_size_within, usage_of
from lib.model.net import FaceNet
from lib.model.spec import ModelSpec, stage_output_sizes

DEFAULT_SIZE = 112  # the course's image side, for a model made elsewhere asked without one

# Captum's internal batch (interpolation steps, noisy copies, occlusion windows per pass) when it fits.
ATTRIBUTION_BATCH = 64


@dataclass(frozen=True)
class MethodInfo:
    title: str
    explanation: str
    uses_stage: bool = False
    # How a map is shown: "magnitude" (|attribution|) or "positive" (only what raises the score).
    display: str = "magnitude"


METHODS: dict[str, MethodInfo] = {
    "saliency": MethodInfo(
        "Saliency (gradient)",
        "The gradient of the score with respect to each pixel: how much a tiny change of that pixel "
        "would move the score. Fast but noisy."),
    "integrated_gradients": MethodInfo(
        "Integrated Gradients",
        "Averages the gradient along a straight path from a baseline image (the mean color) to the "
        "face; the attributions add up to score(face) - score(baseline)."),
    "smoothgrad": MethodInfo(
        "SmoothGrad",
        "The gradient averaged over several noisy copies of the face: the noise of plain saliency "
        "cancels out and the stable structure stays."),
    "gradcam": MethodInfo(
        "GradCAM",
        "Weights the feature maps of one stage by their average gradient: a coarse map (one cell "
        "per feature-map position) of where that stage sees evidence. Early stages are sharper, "
        "late stages more semantic.", uses_stage=True, display="positive"),
    "occlusion": MethodInfo(
        "Occlusion",
        "Covers the face with a gray square at every position and records how much the score drops. "
        "No gradients: slow but easy to trust.", display="positive"),
}

TARGET_KINDS = ("predicted", "true", "chosen")

# Captum registers hooks on the model (GradCAM) and the model is shared between
# sessions through the app's cache, so attributions on one model never overlap.
_LOCK = threading.Lock()


@dataclass
class Attribution:
    """One map per image (signed, summed over color channels) and the score it explains."""
    method: str
    maps: np.ndarray          # [N, H, W] float32
    scores: np.ndarray        # [N] the explained output before attribution
    targets: list[int] | None  # class targets (class mode) or None (pair mode)


class PixelClassifier(nn.Module):
    """Class scores as a function of [0, 1] pixels.

    Without ``class_weights`` these are the logits of the model's own classifier
    (a CE model). A margin-loss model (ArcFace, CosFace, SphereFace) is trained
    through the loss head's class weights instead, so its class scores are the
    cosines between the embedding and those weights.
    """

    def __init__(self, model: FaceNet, mean: Sequence[float], std: Sequence[float],
                 class_weights: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        weights = None if class_weights is None else F.normalize(class_weights.detach().float(), dim=1)
        self.register_buffer("class_weights", weights)

    def normalized(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.class_weights is None:
            return self.model(self.normalized(pixels))
        embedding = F.normalize(self.model.embed(self.normalized(pixels)), dim=1)
        return embedding @ self.class_weights.t()


class PixelPairCosine(PixelClassifier):
    """Cosine similarity between each input's embedding and a fixed reference embedding, as [N, 1]."""

    def __init__(self, model: FaceNet, mean, std, reference: torch.Tensor):
        super().__init__(model, mean, std)
        self.register_buffer("reference", F.normalize(reference.detach().reshape(1, -1), dim=1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        embedding = F.normalize(self.model.embed(self.normalized(pixels)), dim=1)
        return (embedding * self.reference).sum(dim=1, keepdim=True)


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N,C,H,W] or [C,H,W] -> float [N,C,H,W] in [0, 1]."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float()


def stage_choices(model: nn.Module, image_size: int | None = None) -> list[tuple[str, int]]:
    """(label, index) of every stage GradCAM can look at, e.g. ("stage 3: 128 ch, 14x14", 2) for
    112 px images. The network runs at any image size, so the map sizes are those of ``image_size``
    (the images being explained), not of the size the model was built for; without it a FaceLab
    model's label gives the stage's downsampling, true at any size ("stage 3: 128 ch, 1/8 of the
    image side"). A model made elsewhere offers its top-level blocks that output feature maps."""
    if image_size is None and isinstance(getattr(model, "spec", None), ModelSpec):
        sizes = stage_output_sizes(model.spec)[1:]  # the first entry is the stem's output
        factors = [model.spec.input_size / max(size, 1) for size in sizes]
        where = ["the image's own size" if factor == 1 else f"1/{factor:g} of the image side" for factor in factors]
        return [(f"stage {index + 1}: {stage.out_chs} ch, {text}", index)
                for index, (stage, text) in enumerate(zip(model.spec.stages, where))]
    size = int(image_size or getattr(getattr(model, "spec", None), "input_size", 0) or DEFAULT_SIZE)
    return [(f"{name}: {shape[0]} ch, {shape[1]}x{shape[2]}", index)
            for index, (name, _, shape) in enumerate(model.spatial_blocks(size))]


def stage_modules(model: nn.Module, image_size: int) -> list[nn.Module]:
    """The modules GradCAM can hook, in order (FaceLab: the stages)."""
    return [module for _, module, _ in model.spatial_blocks(int(image_size))]


def _check(method: str, stage: int | None, model: nn.Module, image_size: int) -> None:
    if method not in METHODS:
        raise ValueError(f"method: unknown saliency method {method!r}; choose one of {sorted(METHODS)}")
    count = len(stage_modules(model, image_size)) if METHODS[method].uses_stage else 0
    if METHODS[method].uses_stage and stage is not None and not 0 <= stage < count:
        raise ValueError(f"stage: {stage} is out of range; the model has {count} stages (0-based)")
    if METHODS[method].uses_stage and count == 0:
        raise ValueError("gradcam: the model has no block that outputs a feature map; choose another method")


def attribution_batch(model: nn.Module, pixels: torch.Tensor, wanted: int = ATTRIBUTION_BATCH) -> int:
    """Inputs per forward/backward pass of Captum: ``wanted``, fewer when their activations would pass
    this host's limit (lib.model.limits), at least 1."""
    return batch_size_within(usage_of(model, tuple(pixels.shape[1:])), cap=max(1, wanted))


def _attribute(forward: PixelClassifier, pixels: torch.Tensor, method: str, target, stage: int | None,
               options: dict) -> torch.Tensor:
    """Raw Captum attribution with the input's shape [N,C,H,W] (GradCAM: [N,1,H,W])."""
    batch = attribution_batch(forward.model, pixels, int(options.get("internal_batch_size", ATTRIBUTION_BATCH)))
    baseline = forward.mean.expand_as(pixels).contiguous()  # the mean color: zero after normalization
    if method == "saliency":
        return Saliency(forward).attribute(pixels, target=target, abs=True)
    if method == "integrated_gradients":
        steps = int(options.get("n_steps", 32))
        return IntegratedGradients(forward).attribute(
            pixels, baselines=baseline, target=target, n_steps=steps, internal_batch_size=max(batch, 1))
    if method == "smoothgrad":
        samples = int(options.get("nt_samples", 16))
        return NoiseTunnel(Saliency(forward)).attribute(
            pixels, nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=min(samples, batch),
            stdevs=float(options.get("noise", 0.15)), target=target, abs=True)
    if method == "gradcam":
        stages = stage_modules(forward.model, pixels.shape[-1])
        layer = stages[len(stages) - 1 if stage is None else stage]
        # Signed: the display keeps the positive part, and a map that is all negative
        # (no evidence for the score at this stage) stays visible as such in the numbers.
        cam = LayerGradCam(forward, layer).attribute(pixels, target=target, relu_attributions=False)
        return LayerAttribution.interpolate(cam, tuple(pixels.shape[-2:]), interpolate_mode="bilinear")
    window = int(options.get("window", 8))
    stride = int(options.get("stride", 4))
    channels = pixels.shape[1]
    return Occlusion(forward).attribute(
        pixels, sliding_window_shapes=(channels, window, window), strides=(channels, stride, stride),
        baselines=baseline, target=target, perturbations_per_eval=batch)


def _run(forward: PixelClassifier, pixels: torch.Tensor, method: str, target, stage, options) -> tuple:
    forward.eval()
    with _LOCK, one_thread():
        with torch.no_grad():
            output = forward(pixels)
        # Captum needs gradients on the input; asking up front keeps it from warning.
        raw = _attribute(forward, pixels.clone().requires_grad_(True), method, target, stage, options)
    maps = raw.detach().sum(dim=1).float().cpu().numpy()
    return maps, output


def explain_class(model: FaceNet, images: torch.Tensor, mean, std, method: str,
                  targets: int | Sequence[int], stage: int | None = None,
                  class_weights: torch.Tensor | None = None, **options) -> Attribution:
    """Attribute the score of ``targets`` (one class per image, or one for all) to the pixels.

    images: uint8 [N,C,H,W] or [C,H,W]; stage: GradCAM's stage index (default the last);
    class_weights: a margin head's [classes, D] weights (see PixelClassifier);
    options: n_steps (IG), nt_samples and noise (SmoothGrad), window and stride (Occlusion),
    internal_batch_size.
    """
    pixels = to_pixels(images)
    _check(method, stage, model, pixels.shape[-1])
    target_list = [int(targets)] * len(pixels) if isinstance(targets, (int, np.integer)) else [int(t) for t in targets]
    if len(target_list) != len(pixels):
        raise ValueError(f"targets: {len(target_list)} targets for {len(pixels)} images")
    num_classes = model.num_classes
    bad = [t for t in target_list if not 0 <= t < num_classes]
    if bad:
        raise ValueError(f"targets: class {bad[0]} is out of range; the model has {num_classes} classes")
    forward = PixelClassifier(model, mean, std, class_weights)
    maps, logits = _run(forward, pixels, method, target_list, stage, options)
    scores = logits[torch.arange(len(pixels)), torch.tensor(target_list)].cpu().numpy()
    return Attribution(method, maps, scores, target_list)


def explain_pair(model: FaceNet, image_a: torch.Tensor, image_b: torch.Tensor, mean, std, method: str,
                 stage: int | None = None, **options) -> tuple[Attribution, Attribution, float]:
    """Attribute the cosine similarity of a pair to each image (the other's embedding held fixed).

    Returns (attribution of A, attribution of B, cosine similarity).
    """
    pixels_a, pixels_b = to_pixels(image_a)[:1], to_pixels(image_b)[:1]
    _check(method, stage, model, pixels_a.shape[-1])
    base = PixelClassifier(model, mean, std).eval()
    with torch.no_grad():
        embed_a = model.embed(base.normalized(pixels_a))
        embed_b = model.embed(base.normalized(pixels_b))
    results = []
    for pixels, reference in ((pixels_a, embed_b), (pixels_b, embed_a)):
        forward = PixelPairCosine(model, mean, std, reference)
        maps, output = _run(forward, pixels, method, 0, stage, options)
        results.append(Attribution(method, maps, output[:, 0].cpu().numpy(), None))
    cosine = float(F.cosine_similarity(embed_a, embed_b).item())
    return results[0], results[1], cosine


def predict(model: FaceNet, images: torch.Tensor, mean, std,
            class_weights: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, its softmax probability) per image (for cosine scores the probability
    is of the scores as they are, without a margin head's scale)."""
    forward = PixelClassifier(model, mean, std, class_weights).eval()
    with torch.no_grad():
        probs = torch.softmax(forward(to_pixels(images)), dim=1)
    top = probs.max(dim=1)
    return top.indices.numpy(), top.values.numpy()


def choose_targets(model: FaceNet, images: torch.Tensor, mean, std, kind: str,
                   true_labels: Sequence[int] | None = None, chosen: int | None = None,
                   class_weights: torch.Tensor | None = None) -> list[int]:
    """The class each image's map explains: "predicted", "true" (needs labels) or "chosen"."""
    count = len(to_pixels(images))
    if kind == "predicted":
        return [int(c) for c in predict(model, images, mean, std, class_weights)[0]]
    if kind == "true":
        if true_labels is None or len(true_labels) != count:
            raise ValueError("target: 'true' needs one known label per image (use dev images, not verification images)")
        return [int(c) for c in true_labels]
    if kind == "chosen":
        if chosen is None:
            raise ValueError("target: 'chosen' needs a class index")
        return [int(chosen)] * count
    raise ValueError(f"target: unknown kind {kind!r}; choose one of {TARGET_KINDS}")


def heatmap(attribution_map: np.ndarray, method: str, smooth: bool = True) -> np.ndarray:
    """A [H,W] map in [0, 1] for display: magnitude or positive part, scaled by its 99th percentile
    (one hot pixel must not turn the rest of the map black).

    ``smooth``: pixel gradients of a network whose stem has stride 2 alternate from one pixel
    to the next (a checkerboard that says more about the stride than about the face), so
    gradient-based maps pass a 3x3 binomial filter ([1,2,1] x [1,2,1] / 16, which removes
    exactly that one-pixel alternation) before display.
    """
    values = np.asarray(attribution_map, dtype=np.float32)
    values = np.clip(values, 0, None) if METHODS[method].display == "positive" else np.abs(values)
    if smooth and METHODS[method].display == "magnitude" and values.ndim == 2:
        values = _binomial_blur(values)
    scale = float(np.percentile(values, 99)) if values.size else 0.0
    if scale <= 0:
        scale = float(values.max()) if values.size else 0.0
    if scale <= 0:
        return np.zeros_like(values)
    return np.clip(values / scale, 0.0, 1.0)


def _binomial_blur(values: np.ndarray) -> np.ndarray:
    row = torch.tensor([1.0, 2.0, 1.0])
    kernel = (row[:, None] * row[None, :] / 16.0).view(1, 1, 3, 3)
    padded = F.pad(torch.from_numpy(np.ascontiguousarray(values))[None, None], (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kernel)[0, 0].numpy()


def overlay(image: torch.Tensor | np.ndarray, heat: np.ndarray, opacity: float = 0.8,
            colormap: str = "jet") -> np.ndarray:
    """Color a [0,1] heat map over a uint8 CHW (or HWC) image -> uint8 HWC RGB.

    The face turns gray as ``opacity`` grows (so the map's colors cannot be confused with skin
    tones) and each pixel's color weight is ``opacity * (0.2 + 0.8 * heat)``: hot spots are
    strongly colored, cold regions keep the face readable. ``opacity`` 0 gives the image back.
    """
    import matplotlib  # imported here: only display needs it

    picture = np.asarray(image)
    if picture.ndim == 3 and picture.shape[0] in (1, 3):
        picture = np.transpose(picture, (1, 2, 0))
    if picture.shape[-1] == 1:
        picture = np.repeat(picture, 3, axis=-1)
    picture = picture.astype(np.float32)
    strength = float(np.clip(opacity, 0.0, 1.0))
    gray = np.repeat(picture.mean(axis=-1, keepdims=True), 3, axis=-1)
    base = (1 - strength) * picture + strength * gray
    heat = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    colors = matplotlib.colormaps[colormap](heat)[..., :3] * 255.0
    alpha = strength * (0.2 + 0.8 * heat)[..., None]
    return np.clip((1 - alpha) * base + alpha * colors, 0, 255).round().astype(np.uint8)
