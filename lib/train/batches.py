"""Training data: the uint8 splits of lib/data/datasets.py, cut to a subset if asked, served as
augmented, normalized batches.

A split is a tensor in memory (LFW-64) or memory-mapped from the data cache (HW2P2's own data,
lib/data/cache.py); a batch copies only its own images out of it (``gather`` reads a mapped
split's rows from the file, so an epoch of random batches leaves no pages mapped), and a
process's memory stays at what a batch holds whatever the split's size.

Each batch is one item of ``EpochBatches``: the epoch's shuffled order (or, for
a loss that compares images within a batch, its P x K batches) comes from
(seed, epoch) and each batch's augmentation from (seed, epoch, batch), so a run
resumed in the middle of an epoch sees exactly the batches it would have seen,
and DataLoader workers (which share the uint8 tensor: forked from the training
process, or mapping the same cache file) produce the same pictures as the training process would.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from lib.data.augment import build_pipeline, training_transform
from lib.data.batch_augment import batch_pipeline
from lib.data.cache import gather
from lib.data.datasets import ImageSet, PairSet, channel_stats, load_pairs, load_split, resolve_dataset
from lib.losses.registry import LOSSES
from lib.train.config import TrainConfig
from lib.train.sampler import PKSampler


@dataclass
class TrainData:
    root: Path
    train: ImageSet
    dev: ImageSet
    pairs: PairSet
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def classes(self) -> list[str]:
        return self.train.classes

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)


def _keep_classes(split: ImageSet, classes: list[str], max_images: int = 0) -> ImageSet:
    """Only the images of the first len(classes) identities, relabelled 0..n-1 (they keep their order)."""
    keep = (split.labels < len(classes)).nonzero().flatten()
    if max_images:
        keep = keep[:max_images]
    return replace(split, images=_take(split.images, keep), labels=split.labels[keep], classes=list(classes),
                   paths=[split.paths[i] for i in keep.tolist()], channel_sums=None)


def _take(images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """images[keep]; a view when ``keep`` is one run of indices (a split lists its identities in
    class order, so the first classes are), which copies nothing out of a memory-mapped split."""
    if len(keep) and int(keep[-1]) - int(keep[0]) + 1 == len(keep):
        return images[int(keep[0]):int(keep[-1]) + 1]
    return images[keep]


def _keep_pairs(pairs: PairSet, count: int) -> PairSet:
    """The first ``count`` pairs of each label, so a small subset still has both kinds."""
    chosen = torch.cat([(pairs.labels == value).nonzero().flatten()[:count // 2] for value in (1, 0)]).sort().values
    used = pairs.pairs[chosen].flatten().unique()
    remap = torch.full((len(pairs.images),), -1, dtype=torch.int64)
    remap[used] = torch.arange(len(used))
    return replace(pairs, images=pairs.images[used], paths=[pairs.paths[i] for i in used.tolist()],
                   pairs=remap[pairs.pairs[chosen]], labels=pairs.labels[chosen],
                   lines=[pairs.lines[i] for i in chosen.tolist()] if pairs.lines else [],
                   folds=None if pairs.folds is None else pairs.folds[chosen])


def load_train_data(root, pairs_file: str = "val_pairs.txt", subset: dict | None = None) -> TrainData:
    """The splits and pairs of a data set inside a configured root; ValueError when unusable."""
    root = resolve_dataset(root)
    train, dev = load_split(root, "train"), load_split(root, "dev")
    if len(train) == 0:
        raise ValueError(f"{root}: the train split has no images")
    pairs = load_pairs(root, pairs_file)
    mean, std = channel_stats(root)
    subset = subset or {}
    if subset.get("classes") or subset.get("images"):
        classes = train.classes[:subset.get("classes") or len(train.classes)]
        train = _keep_classes(train, classes, subset.get("images", 0))
        dev = _keep_classes(dev, classes)
    if subset.get("pairs"):
        pairs = _keep_pairs(pairs, subset["pairs"])
    if len(dev) == 0:
        raise ValueError(f"{root}: the dev split has no images of the training identities")
    return TrainData(root=root, train=train, dev=dev, pairs=pairs, mean=mean, std=std)


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + batch) % (2**63 - 1)


class Normalizer:
    """uint8 [B,C,H,W] -> float normalized, in one pass over the batch."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean.to(images.device)) * self.inv_std.to(images.device)


class RawBatch(NamedTuple):
    """A batch before augmentation: uint8 images [B,C,H,W], labels [B], and the seed of its augmentation."""
    images: torch.Tensor
    labels: torch.Tensor
    seed: int


class EpochBatches(Dataset):
    """Item b = (augmented normalized images [B,C,H,W] float32, labels [B]) of batch b of one epoch.

    Without a sampler an epoch is one shuffled pass over the images; with a PKSampler each
    batch holds P identities x K images (B = P x K) and the sampler says how many batches
    make an epoch.

    A pipeline with a batched form (lib/data/batch_augment.py) is applied to the whole batch at
    once, each image with its own random parameters; any other pipeline runs image by image.
    With ``augment_in_loader=False`` an item is the ``RawBatch`` instead, so that a trainer can move
    the uint8 batch to its GPU and call ``augment_batch(images, seed)`` there: the same pictures
    (up to float rounding) as the loader would have made."""

    def __init__(self, split: ImageSet, steps: list[dict], mean, std, batch_size: int, seed: int,
                 sampler: PKSampler | None = None, augment_in_loader: bool = True):
        self.images, self.labels = split.images, split.labels
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.sampler, self.sampled = sampler, []  # sampled: the sampler's batches of this epoch
        if sampler is not None and sampler.p * sampler.k != self.batch_size:
            raise ValueError(f"a P x K sampler of {sampler.p} x {sampler.k} images does not fill batches of "
                             f"{self.batch_size}")
        self.epoch, self.start = 0, 0
        ends_normalized = bool(steps) and steps[-1]["name"] == "Normalize"
        # Per image only the (uint8) augmentation; conversion and normalization once per batch.
        self.augment = training_transform(steps, mean, std) if ends_normalized else build_pipeline(steps)
        self.normalize = None if ends_normalized else Normalizer(mean, std)
        self.batched = batch_pipeline(steps, mean, std)  # None: no batched form, augment image by image
        self.augment_in_loader = bool(augment_in_loader)
        self.order = torch.arange(len(self.labels))

    def batches_per_epoch(self) -> int:
        if self.sampler is not None:
            return len(self.sampler)
        # The last incomplete batch is dropped: a batch of 1 breaks BatchNorm, and every step sees B images.
        return max(1, len(self.labels) // self.batch_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Shuffle (or draw the P x K batches) for ``epoch``; iteration begins at batch ``start``
        (a resumed epoch)."""
        if self.sampler is not None:
            self.sampled = [torch.tensor(batch, dtype=torch.int64) for batch in self.sampler.for_epoch(epoch)]
        else:
            generator = torch.Generator().manual_seed(batch_seed(self.seed, epoch, 999_983))
            self.order = torch.randperm(len(self.labels), generator=generator)
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start

    def _image_indices(self, batch: int) -> torch.Tensor:
        if self.sampler is not None:
            return self.sampled[batch]
        index = self.order[batch * self.batch_size:(batch + 1) * self.batch_size]
        if len(index) < self.batch_size:  # fewer images than one batch: repeat them to fill it
            index = index.repeat(self.batch_size // max(1, len(index)) + 1)[:self.batch_size]
        return index

    def raw_batch(self, item: int) -> RawBatch:
        """Item ``item`` unaugmented: its uint8 images, labels and augmentation seed."""
        batch = self.start + item
        index = self._image_indices(batch)
        return RawBatch(gather(self.images, index), self.labels[index], batch_seed(self.seed, self.epoch, batch))

    def augment_batch(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """uint8 [B,C,H,W] (on any device) -> augmented, normalized float32, the pictures decided by ``seed``."""
        if self.batched is not None:
            return self.batched(images, torch.Generator().manual_seed(seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            images = torch.stack([self.augment(image) for image in images])
        return images if self.normalize is None else self.normalize(images)

    def __getitem__(self, item: int):
        raw = self.raw_batch(item)
        if not self.augment_in_loader:
            return raw
        return self.augment_batch(raw.images, raw.seed), raw.labels


def training_batches(config: TrainConfig, data: TrainData, augment_in_loader: bool = True) -> EpochBatches:
    """The run's batches: shuffled images, or P identities x K images for a loss that needs them
    (``augment_in_loader=False``: unaugmented RawBatch items, see EpochBatches).
    ValueError (naming the field) when the data has fewer identities than a batch asks for."""
    sampler = None
    if LOSSES[config.loss].needs_pk_batches:
        identities, k = config.pk_batch()
        available = len(data.train.labels.unique())
        if identities > available:
            raise ValueError(f"identities_per_batch: a batch of P = {identities} identities x K = {k} images "
                             f"needs {identities} identities, but the training data has only {available}; use a "
                             f"batch_size of at most {available * k} (P = batch_size / K)")
        sampler = PKSampler(data.train.labels, identities, k, seed=config.seed)
    return EpochBatches(data.train, config.augment, data.mean, data.std, config.batch_size, config.seed, sampler,
                        augment_in_loader=augment_in_loader)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers only augment (small ops on one batch); leave the cores to the model
    # A cancel (SIGTERM/Ctrl-C to the process group) is handled by the training process, which
    # finishes its step and saves; a worker dying first would turn the cancel into a crash.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def make_loader(batches: EpochBatches, workers: int, pin_memory: bool = False) -> DataLoader:
    """Batches in order; with workers > 0 they are prepared in other processes while the model trains."""
    return DataLoader(batches, batch_size=None, shuffle=False, num_workers=workers,
                      worker_init_fn=_worker_init if workers else None, pin_memory=pin_memory,
                      persistent_workers=False, prefetch_factor=2 if workers else None)
