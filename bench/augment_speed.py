"""Images per second: FaceLab's batched and per-image tensor pipelines against a per-image PIL ImageFolder pipeline.

The baseline is the usual course starter: ``torchvision.datasets.ImageFolder``
opens and decodes every JPEG with PIL on every epoch and applies
``torchvision.transforms`` to PIL images. FaceLab decodes the split once
(lib.data.datasets.load_split) and applies the same augmentations to uint8
tensors, either image by image with ``transforms.v2`` or to the whole batch at
once (lib.data.batch_augment, what training uses when the pipeline has a batched
form). All three feed a DataLoader (batch 64, same number of workers) through
one full epoch of the training split.

    .venv/bin/python bench/augment_speed.py [--root DATA] [--workers 0] [--epochs 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision import transforms as v1

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.base import config  # noqa: E402
from lib.data.augment import DEFAULT_PIPELINE, training_transform  # noqa: E402
from lib.data.datasets import channel_stats, load_split  # noqa: E402
from lib.train.batches import EpochBatches, make_loader  # noqa: E402


class TensorImages(Dataset):
    """Decoded uint8 images in memory; the v2 pipeline runs per image, as in training."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), self.labels[index]


def pil_transform(size: int, mean, std) -> v1.Compose:
    """The same augmentations as DEFAULT_PIPELINE, written for PIL images the starter-notebook way."""
    crop, jitter = DEFAULT_PIPELINE[0]["params"], DEFAULT_PIPELINE[2]["params"]
    return v1.Compose([
        v1.RandomResizedCrop(size, scale=tuple(crop["scale"]), ratio=tuple(crop["ratio"])),
        v1.RandomHorizontalFlip(DEFAULT_PIPELINE[1]["params"]["p"]),
        v1.ColorJitter(brightness=jitter["brightness"], contrast=jitter["contrast"],
                       saturation=jitter["saturation"], hue=jitter["hue"]),
        v1.ToTensor(),
        v1.Normalize(mean, std),
    ])


def images_per_second(loader, epochs: int, set_epoch=None) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process). On a shared machine the
    CPU figure is the steadier one; with workers > 0 only the wall-clock figure means anything."""
    count, start, cpu_start = 0, time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        if set_epoch is not None:
            set_epoch(epoch)
        for images, _labels in loader:
            count += images.shape[0]
    return count / (time.perf_counter() - start), count / max(time.process_time() - cpu_start, 1e-9)


def batched_rate(train, mean, std, args) -> tuple[float, float]:
    """The training path: EpochBatches with the batched pipeline (the last incomplete batch is dropped)."""
    batches = EpochBatches(train, DEFAULT_PIPELINE, mean, std, args.batch_size, seed=0)
    assert batches.batched is not None, "the default pipeline has a batched form"
    return images_per_second(make_loader(batches, args.workers), args.epochs, batches.set_epoch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(config.EMBEDDED_DATA), help="data set in the HW2P2 layout")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for both pipelines")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads in this process (DataLoader workers always use 1)")
    args = parser.parse_args()
    # Per-image operations on 64-pixel images gain nothing from intra-op threads, and on a shared CPU the
    # threads wait for each other (ColorJitter measured 20 ms instead of 0.4 ms per image with 2 threads).
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    start = time.perf_counter()
    train = load_split(args.root, "train")
    mean, std = channel_stats(args.root)
    decode_s = time.perf_counter() - start
    loader_args = dict(batch_size=args.batch_size, shuffle=True, num_workers=args.workers)

    tensor_set = TensorImages(train.images, train.labels, training_transform(DEFAULT_PIPELINE, mean, std))
    tensor_rate = images_per_second(DataLoader(tensor_set, **loader_args), args.epochs)
    batch_rate = batched_rate(train, mean, std, args)
    folder = datasets.ImageFolder(str(Path(args.root) / "cls_data" / "train"),
                                  transform=pil_transform(train.image_size[0], mean, std))
    pil_rate = images_per_second(DataLoader(folder, **loader_args), args.epochs)

    print(f"data: {args.root} ({len(train):,} training images, {train.image_size[0]}x{train.image_size[1]})")
    print(f"pipeline: {' -> '.join(step['name'] for step in DEFAULT_PIPELINE)} -> ToDtype -> Normalize")
    print(f"workers {args.workers}, batch {args.batch_size}, epochs {args.epochs}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"load average (1, 5, 15 min): {', '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"one-time decode into memory + channel stats: {decode_s:.2f} s")
    print("                                          images/s (wall)   images per CPU-second")
    print(f"in-memory tensors, batched augmentation : {batch_rate[0]:8.0f}          {batch_rate[1]:8.0f}")
    print(f"in-memory tensors + transforms.v2       : {tensor_rate[0]:8.0f}          {tensor_rate[1]:8.0f}")
    print(f"ImageFolder + PIL + transforms          : {pil_rate[0]:8.0f}          {pil_rate[1]:8.0f}")
    print(f"ratio (batched / per-image tensor): {batch_rate[0] / tensor_rate[0]:.2f}x wall-clock, "
          f"{batch_rate[1] / tensor_rate[1]:.2f}x per CPU-second")
    print(f"ratio (per-image tensor / PIL): {tensor_rate[0] / pil_rate[0]:.2f}x wall-clock, "
          f"{tensor_rate[1] / pil_rate[1]:.2f}x per CPU-second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
