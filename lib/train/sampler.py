"""P x K batches for losses that compare images within a batch (triplet, center).

Batch-hard triplet mining needs, for every image, another image of the same
identity in the batch (a positive) and one of another identity (a negative);
random batches over hundreds of identities rarely hold two images of one
person. A P x K batch holds P identities with K images each, so every image has
K - 1 positives and (P - 1) x K negatives. The center loss trains on them too:
each step pulls K images of an identity toward its center, not one.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


class PKSampler(Sampler):
    """Batch sampler: each batch holds P identities x K images of each.

    Identities with at least two images are preferred (a lone image has no
    positive); an identity with fewer than K images repeats some of them.
    Deterministic for a given seed and epoch; the epoch advances with each pass
    (or is set with ``set_epoch`` when resuming).
    """

    def __init__(self, labels, p: int, k: int, seed: int = 0):
        labels = np.asarray(torch.as_tensor(labels).cpu()).astype(np.int64)
        if int(p) != p or p < 1 or int(k) != k or k < 1:
            raise ValueError(f"PKSampler needs integers p >= 1 and k >= 1, got p={p!r}, k={k!r}")
        self.p, self.k, self.seed, self.epoch = int(p), int(k), int(seed), 0
        self.by_identity = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
        if self.p > len(self.by_identity):
            raise ValueError(f"PKSampler p={p} is more than the {len(self.by_identity)} identities in the data")
        several = [c for c, idx in self.by_identity.items() if len(idx) >= 2]
        self.pool = np.array(several if len(several) >= self.p else list(self.by_identity))
        self.num_batches = max(1, len(labels) // (self.p * self.k))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def for_epoch(self, epoch: int) -> list[list[int]]:
        """Every batch of ``epoch`` (image indices): the same list on every call, so a resumed
        epoch and a DataLoader worker see exactly the batches of an uninterrupted run."""
        self.set_epoch(epoch)
        return list(self)

    def __len__(self) -> int:
        return self.num_batches

    def _images_of(self, identity: int, rng: np.random.Generator) -> list[int]:
        idx = self.by_identity[identity]
        if len(idx) >= self.k:
            return rng.choice(idx, self.k, replace=False).tolist()
        extra = rng.choice(idx, self.k - len(idx), replace=True)
        return np.concatenate([rng.permutation(idx), extra]).tolist()

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        for _ in range(self.num_batches):
            identities = rng.choice(self.pool, self.p, replace=False)
            yield [i for identity in identities for i in self._images_of(int(identity), rng)]
