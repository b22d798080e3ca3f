"""Batched augmentation: a pipeline of lib/data/transforms.py applied to a whole uint8 batch at once.

``batch_pipeline(steps, mean, std)`` reads the v2 transforms that lib/data/augment.py builds for
the steps (so the parameter ranges are torchvision's own, after its own argument checks) and
returns a ``BatchAugment``, or None when a step has no batched form here (the policies,
RandomPerspective, another interpolation or fill than the defaults): the caller then keeps the
per-image v2 pipeline, so every pipeline still trains.

``BatchAugment(images_uint8 [B,3,H,W], generator)`` draws each image's own random parameters on
the CPU from ``generator`` (a few numbers per image and step, the same draws whatever device the
batch is on), moves them to the batch's device and applies every step to the whole batch in a few
tensor operations (no per-image loop, nothing that reads a value back to the CPU), ending with
the normalization. The random parameters follow torchvision's ``make_params`` step by step
(RandomResizedCrop's ten tries then centre fallback, RandomErasing's ten tries, ColorJitter's
random order of its four operations per image, ...).

The one intended difference from per-image torchvision: the batch is float in [0, 1] from the
first step to the last. torchvision on uint8 images rounds to whole grey levels after every
resampling and colour operation (its colour operations truncate, so each one leaves an image
about half a grey level darker on average); here nothing is rounded between steps.

Each step is two parts: ``draw(count, (height, width), generator) -> params`` here, and a function
of lib/data/batch_ops.py that applies given params (``resized_crop``, ``pad_crop``, ``affine``,
``color_jitter``, ...), so the applying part can be compared with torchvision.transforms.v2.functional
on its own.
"""
from __future__ import annotations

import abc
import math

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from lib.data.augment import AtInputSize, build_step, validate_pipeline
from lib.data.batch_ops import (
    HUE,
    affine,
    color_jitter,
    constant,
    erase,
    flip,
    gaussian_blur,
    grayscale,
    pad_crop,
    resized_crop,
    rotation_as_affine,
)
from lib.data.transforms import IMAGE_SIZE

# ----------------------------------------------------------------------------- drawing parameters

def _uniform(generator: torch.Generator, shape, low: float, high: float) -> torch.Tensor:
    """float64 uniform in [low, high), like torch.empty(shape).uniform_(low, high)."""
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def _below(generator: torch.Generator, upper: torch.Tensor) -> torch.Tensor:
    """One integer uniform in 0..upper[b]-1 per image: torch.randint(0, upper[b]) with a per-image bound."""
    return (torch.rand(upper.shape, generator=generator, dtype=torch.float64) * upper).floor().long()


def _tries(generator, count: int, area: int, scale, ratio):
    """Ten (area, aspect ratio) tries per image: area uniform in scale * area, ratio log-uniform in ratio."""
    target = area * _uniform(generator, (count, 10), *scale)
    aspect = torch.exp(_uniform(generator, (count, 10), math.log(ratio[0]), math.log(ratio[1])))
    return target, aspect


def _first_try(fits: torch.Tensor, *values: torch.Tensor):
    """(whether any of the ten tries fits, then each value at the first try that fits) per image."""
    first = fits.to(torch.int8).argmax(1, keepdim=True)
    return (fits.any(1), *(value.gather(1, first).squeeze(1) for value in values))


def draw_crop_boxes(count: int, size: tuple[int, int], scale, ratio, generator: torch.Generator) -> dict:
    """RandomResizedCrop.make_params for ``count`` images: up to ten tries of a box with an area
    share in ``scale`` and a width/height ratio in ``ratio`` that fits, else the centre fallback."""
    height, width = size
    target, aspect = _tries(generator, count, height * width, scale, ratio)
    w, h = torch.sqrt(target * aspect).round().long(), torch.sqrt(target / aspect).round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    found, w, h = _first_try(fits, w, h)
    in_ratio = width / height  # the fallback, as torchvision computes it
    if in_ratio < min(ratio):
        fallback = (int(round(width / min(ratio))), width)
    elif in_ratio > max(ratio):
        fallback = (height, int(round(height * max(ratio))))
    else:
        fallback = (height, width)
    h, w = torch.where(found, h, fallback[0]), torch.where(found, w, fallback[1])
    top = torch.where(found, _below(generator, height - h + 1), (height - h) // 2)
    left = torch.where(found, _below(generator, width - w + 1), (width - w) // 2)
    return dict(top=top, left=left, height=h, width=w)


def draw_erase_boxes(count: int, size: tuple[int, int], scale, ratio, generator: torch.Generator) -> dict:
    """RandomErasing.make_params: ten tries (height = sqrt(area * ratio), strictly inside); none fits: no erasing."""
    height, width = size
    target, aspect = _tries(generator, count, height * width, scale, ratio)
    h, w = torch.sqrt(target * aspect).round().long(), torch.sqrt(target / aspect).round().long()
    found, h, w = _first_try((h < height) & (w < width), h, w)
    h, w = torch.where(found, h, 0), torch.where(found, w, 0)
    return dict(top=_below(generator, height - h + 1), left=_below(generator, width - w + 1), height=h, width=w,
                found=found)


# ----------------------------------------------------------------------------- steps

class BatchStep(abc.ABC):
    """One transform: ``draw`` the parameters of ``count`` images of ``size`` on the CPU (none by
    default: a step alike for every image), ``apply`` them."""

    def draw(self, count: int, size: tuple[int, int], generator: torch.Generator) -> dict:
        return {}

    @abc.abstractmethod
    def apply(self, images: torch.Tensor, params: dict) -> torch.Tensor:
        """The batch with the step applied, each image with its own ``params``."""


class ResizedCropStep(BatchStep):
    """RandomResizedCrop, and the flips that directly follow it (``flips``: {"flip_x": FlipStep, ...}):
    their parameters are drawn right after the crop's, in the same order as unfused steps, so
    fusing changes no picture; it only saves a pass over the batch."""

    def __init__(self, size, scale, ratio):
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)
        self.flips = {}

    def absorb(self, step: BatchStep) -> bool:
        """Take over a flip that follows this crop; False when it cannot (not a flip, or one that way already)."""
        if not isinstance(step, FlipStep) or step.name in self.flips:
            return False
        self.flips[step.name] = step
        return True

    def draw(self, count, size, generator):
        boxes = draw_crop_boxes(count, size, self.scale, self.ratio, generator)
        return dict(boxes, **{name: step.draw(count, size, generator)["chosen"] for name, step in self.flips.items()})

    def apply(self, images, params):
        return resized_crop(images, **params, size=self.size or tuple(images.shape[-2:]))


class PadCropStep(BatchStep):
    """RandomCrop: padding [left, right, top, bottom] as torchvision parses it, grown by pad_if_needed."""

    def __init__(self, size, padding, pad_if_needed: bool, mode: str, fill: float):
        self.size, self.padding, self.pad_if_needed = size, list(padding or [0, 0, 0, 0]), pad_if_needed
        self.mode, self.fill = mode, fill

    def draw(self, count, size, generator):
        crop = self.size or size
        left, right, top, bottom = self.padding
        if self.pad_if_needed:  # torchvision adds the missing pixels on both sides
            grow_y, grow_x = max(0, crop[0] - size[0] - top - bottom), max(0, crop[1] - size[1] - left - right)
            top, bottom, left, right = top + grow_y, bottom + grow_y, left + grow_x, right + grow_x
        padded = (size[0] + top + bottom, size[1] + left + right)
        if padded[0] < crop[0] or padded[1] < crop[1]:
            raise ValueError(f"RandomCrop: a crop of {crop} is larger than the padded image {padded}; "
                             "use a smaller size or more padding")
        longest = min(size) - (self.mode == "reflect")  # a border mirrored once
        if self.mode in ("reflect", "symmetric") and max(left, right, top, bottom) > longest:
            raise ValueError(f"RandomCrop: {self.mode} padding of more than {longest} pixels does not fit "
                             f"{size[0]}x{size[1]} images; use less padding or padding_mode constant or edge")
        rows = _below(generator, torch.full((count,), padded[0] - crop[0] + 1))
        cols = _below(generator, torch.full((count,), padded[1] - crop[1] + 1))
        return dict(top=rows, left=cols, size=tuple(crop), padding=(left, top, right, bottom))

    def apply(self, images, params):
        return pad_crop(images, **params, mode=self.mode, fill=self.fill)


class SameForAllStep(BatchStep):
    """A deterministic v2 transform (Resize, CenterCrop): it takes a batch [..., C, H, W] as it is."""

    def __init__(self, transform):
        self.transform = transform

    def apply(self, images, params):
        return self.transform(images)


class ChanceStep(BatchStep):
    """A transform applied to each image with probability p (torchvision's _RandomApplyTransform)."""

    def __init__(self, p: float):
        self.p = p

    def draw(self, count, size, generator):
        return dict(chosen=torch.rand(count, generator=generator) < self.p)


class FlipStep(ChanceStep):
    def __init__(self, p: float, dim: int):
        super().__init__(p)
        self.dim = dim
        self.name = "flip_x" if dim == -1 else "flip_y"

    def apply(self, images, params):
        return flip(images, params["chosen"], self.dim)


class AffineStep(BatchStep):
    """RandomAffine (or RandomRotation, ``rotation=True``): RandomAffine.make_params per image."""

    def __init__(self, degrees, translate=None, scale=None, shear=None, rotation: bool = False):
        self.degrees, self.translate, self.scale, self.shear = degrees, translate, scale, shear
        self.rotation = rotation

    def draw(self, count, size, generator):
        angle = _uniform(generator, count, *self.degrees)
        if self.rotation:
            return rotation_as_affine(angle)
        translate = torch.zeros(count, 2, dtype=torch.float64)
        if self.translate is not None:
            for axis, extent in enumerate((size[1], size[0])):  # (x, y): a share of the width, of the height
                most = float(self.translate[axis] * extent)
                translate[:, axis] = _uniform(generator, count, -most, most).round()
        scale = torch.ones(count, dtype=torch.float64)
        if self.scale is not None:
            scale = _uniform(generator, count, *self.scale)
        shear = torch.zeros(count, 2, dtype=torch.float64)
        if self.shear is not None:
            for axis in range(len(self.shear) // 2):
                shear[:, axis] = _uniform(generator, count, *self.shear[2 * axis:2 * axis + 2])
        return dict(angle=angle, translate=translate, scale=scale, shear=shear)

    def apply(self, images, params):
        return affine(images, **params)


class ColorJitterStep(BatchStep):
    """torchvision draws a random order of all four operations and skips those whose range is None
    (a factor range of exactly 1, a hue range of 0); the enabled ones then come in a uniformly random
    order, which is what is drawn here: a batch needs only one round per enabled operation."""
    NEUTRAL = (1.0, 1.0, 1.0, 0.0)

    def __init__(self, ranges):
        self.ranges = ranges  # (brightness, contrast, saturation, hue): a (low, high) pair or None
        self.enabled = torch.tensor([op for op, span in enumerate(ranges) if span is not None], dtype=torch.int64)

    def draw(self, count, size, generator):
        shuffled = torch.rand(count, len(self.enabled), generator=generator).argsort(1)  # a randperm per image
        order = self.enabled[shuffled]
        factors = torch.tensor(self.NEUTRAL, dtype=torch.float64).repeat(count, 1)
        for column, span in enumerate(self.ranges):
            if span is not None:
                factors[:, column] = _uniform(generator, count, *span)
        return dict(order=order, factors=factors.to(torch.float32))

    def apply(self, images, params):
        return color_jitter(images, **params, with_hue=self.ranges[HUE] is not None)


class GrayscaleStep(ChanceStep):
    def apply(self, images, params):
        return grayscale(images, params["chosen"])


class BlurStep(BatchStep):
    def __init__(self, kernel_size, sigma):
        self.kernel_size, self.sigma = tuple(kernel_size), tuple(sigma)

    def draw(self, count, size, generator):
        return dict(sigma=_uniform(generator, count, *self.sigma).to(torch.float32))

    def apply(self, images, params):
        return gaussian_blur(images, self.kernel_size, **params)


class EraseStep(BatchStep):
    def __init__(self, p: float, scale, ratio, value):
        self.p, self.scale, self.ratio = p, tuple(scale), tuple(ratio)
        self.value = torch.tensor(value, dtype=torch.float32) / 255.0  # grey levels of the uint8 image

    def draw(self, count, size, generator):
        chosen = torch.rand(count, generator=generator) < self.p
        boxes = draw_erase_boxes(count, size, self.scale, self.ratio, generator)
        return dict(chosen=chosen & boxes.pop("found"), **boxes)

    def apply(self, images, params):
        return erase(images, **params, value=self.value)


# ----------------------------------------------------------------------------- building

def _built(transform):
    """(v2 transform, its size if fixed else None): an AtInputSize transform built at a stand-in size."""
    if isinstance(transform, AtInputSize):
        kwargs = {key: ((1, 1) if value == IMAGE_SIZE else value) for key, value in transform.kwargs.items()}
        return getattr(v2, transform.class_name)(**kwargs), None
    return transform, tuple(getattr(transform, "size", None) or ()) or None


def _default_sampling(transform, interpolation=InterpolationMode.NEAREST) -> bool:
    """Whether a geometric transform uses the interpolation, fill and centre batched here."""
    try:  # torchvision keeps the interpolation as given: a mode, its name, or a PIL number
        same = InterpolationMode(transform.interpolation) == interpolation
    except ValueError:
        return False
    return (same and getattr(transform, "fill", 0) == 0
            and getattr(transform, "center", None) is None and not getattr(transform, "expand", False))


def _step_for(transform) -> BatchStep | None:
    """The batched form of one v2 transform; None when there is none."""
    t, size = _built(transform)
    if isinstance(t, v2.RandomResizedCrop):
        fits = _default_sampling(t, InterpolationMode.BILINEAR) and t.antialias
        return ResizedCropStep(size, t.scale, t.ratio) if fits else None
    if isinstance(t, v2.RandomCrop) and isinstance(t.fill, (int, float)):
        return PadCropStep(size, t.padding, t.pad_if_needed, t.padding_mode, float(t.fill) / 255.0)
    if isinstance(t, (v2.Resize, v2.CenterCrop)):
        return SameForAllStep(t)
    if isinstance(t, (v2.RandomHorizontalFlip, v2.RandomVerticalFlip)):
        return FlipStep(t.p, -1 if isinstance(t, v2.RandomHorizontalFlip) else -2)
    if isinstance(t, v2.RandomRotation) and _default_sampling(t):
        return AffineStep(t.degrees, rotation=True)
    if isinstance(t, v2.RandomAffine) and _default_sampling(t):
        return AffineStep(t.degrees, t.translate, t.scale, t.shear)
    if isinstance(t, v2.ColorJitter):
        return ColorJitterStep((t.brightness, t.contrast, t.saturation, t.hue))
    if isinstance(t, v2.RandomGrayscale):
        return GrayscaleStep(t.p)
    if isinstance(t, v2.GaussianBlur):
        return BlurStep(t.kernel_size, t.sigma)
    if isinstance(t, v2.RandomErasing) and t.value is not None:
        return EraseStep(t.p, t.scale, t.ratio, t.value)
    return None


class BatchAugment:
    """uint8 [B,3,H,W] on any device -> float32 normalized [B,3,H',W'], each image with its own
    random parameters drawn from the generator."""

    def __init__(self, steps: list[BatchStep], mean, std):
        self.steps = steps
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"batched augmentation takes a uint8 batch [B, 3, H, W], got {images.dtype} "
                             f"{list(images.shape)}")
        if images.device.type in ("cpu", "cuda"):  # called inside a training step's autocast: stay float32
            with torch.autocast(images.device.type, enabled=False):
                return self._augment(images, generator)
        return self._augment(images, generator)

    def _augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch = images.to(torch.float32).mul_(1.0 / 255.0)
        for step in self.steps:
            params = step.draw(len(batch), tuple(batch.shape[-2:]), generator)
            batch = step.apply(batch, {key: value.to(batch.device, non_blocking=True)
                                       if isinstance(value, torch.Tensor) else value
                                       for key, value in params.items()})
        # Not tvf.normalize: it copies mean and std to the device with a blocking (GPU-waiting) copy.
        mean, std = constant(self.mean, batch).view(1, -1, 1, 1), constant(self.std, batch).view(1, -1, 1, 1)
        return batch.sub_(mean).div_(std)

    def __repr__(self) -> str:
        return f"BatchAugment({', '.join(type(step).__name__ for step in self.steps)})"


def batch_pipeline(steps, mean, std) -> BatchAugment | None:
    """The batched form of a pipeline (normalized with its Normalize step's mean/std, else ``mean``/``std``),
    or None when one of its steps has none (the policies, RandomPerspective): use the per-image pipeline."""
    batched, norm = [], (mean, std)
    for step in validate_pipeline(steps):
        for transform in build_step(step, (mean, std)):
            if isinstance(transform, v2.Normalize):
                norm = (transform.mean, transform.std)
            elif isinstance(transform, v2.ToDtype):
                continue  # the batch is float in [0, 1] from the start
            elif (found := _step_for(transform)) is None:
                return None
            elif not (batched and isinstance(batched[-1], ResizedCropStep) and batched[-1].absorb(found)):
                batched.append(found)
    return BatchAugment(batched, *norm)
