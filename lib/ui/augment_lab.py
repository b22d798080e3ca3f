"""What the Augment page shows, computed without Streamlit: image picks, grids, pairs, normalization.

Every choice is seeded, so a student who shares "seed 7, images of Al_Gore"
shows a classmate exactly the same pictures.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.utils import make_grid

from lib.data import augment
from lib.data.datasets import ImageSet, PairSet


def pick_images(images: ImageSet, count: int, seed: int, identity: str | None = None) -> list[int]:
    """Indices of ``count`` images: a seeded random draw from the whole split, or from one identity."""
    if identity is not None:
        if identity not in images.classes:
            raise ValueError(f"identity {identity!r} is not in this data set")
        pool = torch.nonzero(images.labels == images.classes.index(identity)).flatten()
    else:
        pool = torch.arange(len(images))
    generator = torch.Generator().manual_seed(int(seed))
    order = pool[torch.randperm(len(pool), generator=generator)]
    return order[:count].tolist()


def tile(rows: torch.Tensor, scale: int = 2, padding: int = 2) -> np.ndarray:
    """uint8 [R, C, 3, h, w] -> one HxWx3 picture (rows stay rows), enlarged ``scale`` times by
    pixel repetition so 64-pixel faces stay sharp on screen."""
    count, columns = rows.shape[:2]
    grid = make_grid(rows.reshape(count * columns, *rows.shape[2:]), nrow=columns, padding=padding, pad_value=255)
    grid = grid.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    return grid.permute(1, 2, 0).contiguous().numpy()


def to_hwc(image: torch.Tensor, scale: int = 1) -> np.ndarray:
    """uint8 [3, h, w] -> h x w x 3 array for display."""
    image = image.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    return image.permute(1, 2, 0).contiguous().numpy()


def with_originals(images: torch.Tensor, augmented: torch.Tensor) -> torch.Tensor:
    """[N,3,H,W] originals + [N,K,3,h,w] samples -> [N, K+1, 3, h, w] (originals resized if sizes differ)."""
    if images.shape[-2:] != augmented.shape[-2:]:
        from torchvision.transforms.v2 import functional as TF

        images = TF.resize(images, list(augmented.shape[-2:]), antialias=True)
    return torch.cat([images.unsqueeze(1), augmented], dim=1)


def preview(images: torch.Tensor, steps: list[dict], samples: int, seed: int) -> torch.Tensor:
    """augment.preview_grid, and for a pipeline with nothing to show (empty, or only Normalize, which
    the preview leaves out) the unchanged images: what such a pipeline does to a picture."""
    if all(step["name"] == "Normalize" for step in steps):
        return images.unsqueeze(1).repeat(1, samples, 1, 1, 1)
    return augment.preview_grid(images, steps, samples, seed)


def sample_pairs(pairs: PairSet, count: int, seed: int) -> dict[int, list[int]]:
    """{1: pair indices of same-person pairs, 0: different-person pairs}, ``count`` of each, seeded."""
    generator = torch.Generator().manual_seed(int(seed))
    chosen = {}
    for label in (1, 0):
        pool = torch.nonzero(pairs.labels == label).flatten()
        chosen[label] = pool[torch.randperm(len(pool), generator=generator)][:count].tolist()
    return chosen


def normalization_summary(images: torch.Tensor, mean, std) -> dict[str, list[float]]:
    """Per-channel mean/std of uint8 images before (in [0, 1]) and after Normalize(mean, std)."""
    values = images.to(torch.float64) / 255.0
    after = (values - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) \
        / torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    dims = (0, 2, 3)
    return {"before_mean": values.mean(dims).tolist(), "before_std": values.std(dims, unbiased=False).tolist(),
            "after_mean": after.mean(dims).tolist(), "after_std": after.std(dims, unbiased=False).tolist()}


def pipeline_summary(steps: list[dict]) -> str:
    """One line naming the steps, e.g. "RandomResizedCrop -> RandomHorizontalFlip"."""
    return " -> ".join(step["name"] for step in steps) or "no augmentation"
