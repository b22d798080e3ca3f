"""The Augment page's helpers: previews of pipelines with nothing to show."""
from __future__ import annotations

import torch

from lib.data import augment
from lib.ui import augment_lab as lab


def test_a_pipeline_with_nothing_to_show_previews_the_unchanged_images():
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for steps in ([], [{"name": "Normalize", "params": {"mean": None, "std": None}}]):
        grid = lab.preview(images, steps, 3, seed=1)
        assert grid.shape == (2, 3, 3, 16, 16) and all(torch.equal(grid[i, k], images[i]) for i in range(2) for k in range(3))
    flip = [{"name": "RandomHorizontalFlip", "params": {"p": 1.0}}]
    assert torch.equal(lab.preview(images, flip, 2, seed=1), augment.preview_grid(images, flip, 2, seed=1))
    assert torch.equal(lab.preview(images, flip, 2, seed=1)[0, 0], images[0].flip(-1))
