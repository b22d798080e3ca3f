"""The probe set: a few dev faces the engine embeds after every epoch, so the Embeddings page can
show how the same faces move while a run trains (identities tightening under ArcFace, say).

The choice is fixed by names alone: the first PROBE_IDENTITIES identities (in name order) with
at least two dev images, and the first PROBE_IMAGES images of each (in file name order). Every
epoch, and every resume, embeds the same images; about 50 of them cost far less than the
evaluation that runs beside it.
"""
from __future__ import annotations

from pathlib import PurePosixPath

import torch
from torch import nn

from lib.data.datasets import ImageSet
from lib.eval.metrics import embed
from lib.store.run_folder import RunFolder
from lib.train.batches import TrainData

PROBE_IDENTITIES = 8
PROBE_IMAGES = 6


def probe_indices(dev: ImageSet, identities: int = PROBE_IDENTITIES, images: int = PROBE_IMAGES) -> list[int]:
    """Indices into ``dev`` of the probe images, grouped by identity (name order), each identity's
    images in file name order; [] when no identity has two dev images."""
    by_identity: dict[int, list[int]] = {}
    for index, label in enumerate(dev.labels.tolist()):
        by_identity.setdefault(label, []).append(index)
    chosen: list[int] = []
    named = sorted(by_identity, key=lambda label: dev.classes[label])
    for label in [label for label in named if len(by_identity[label]) >= 2][:identities]:
        ordered = sorted(by_identity[label], key=lambda index: PurePosixPath(dev.paths[index]).name)
        chosen += ordered[:images]
    return chosen


def save_probe_embeddings(folder: RunFolder, model: nn.Module, data: TrainData, device: str, epoch: int) -> None:
    """Embed the probe images with ``model`` (L2-normalized, as verification compares them; without
    eval_flip's mirror images, so the checkpoint's plain ``embed`` gives the same numbers) and save
    them as epoch ``epoch`` (from 1) of the run; the index of the images is written with the first."""
    dev = data.dev
    chosen = probe_indices(dev)
    if not chosen:
        return
    if not folder.probes_file.is_file():
        folder.write_probe_index([dev.paths[i] for i in chosen], [dev.classes[int(dev.labels[i])] for i in chosen])
    index = torch.tensor(chosen)
    embeddings = embed(model, dev.images[index], data.mean, data.std, batch_size=len(chosen), device=device)
    folder.save_probe_embeddings(epoch, embeddings.cpu().numpy())
