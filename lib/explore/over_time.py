"""Embeddings over time: the probe faces a run embedded after every epoch (lib/train/probes.py),
projected to 2-D with one PCA fitted on all epochs together, so the axes stay put and what moves
between epochs is the embeddings, not the projection; and per epoch how close the faces of one
identity are (mean intra-identity cosine) against faces of different identities (inter)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from lib.store.run_folder import RunFolder, run_folders


@dataclass(frozen=True)
class ProbeHistory:
    """The probe embeddings of one run: ``embeddings[e]`` is epoch ``epochs[e]``'s [N, D]."""

    epochs: list[int]
    embeddings: np.ndarray  # [E, N, D], float32, L2-normalized rows
    identities: list[str]  # the identity of each of the N probe images
    paths: list[str]


def probe_history(run_dir: str | Path) -> ProbeHistory | None:
    """The run's probe embeddings, None when it saved none (older runs) or its files disagree
    (the index names another number of images than the embeddings hold)."""
    folder = RunFolder(run_dir)
    index, saved = folder.read_probe_index(), folder.read_probe_embeddings()
    if not index or not saved:
        return None
    epochs = sorted(saved)
    stacked = np.stack([saved[epoch] for epoch in epochs]).astype(np.float32)
    if stacked.shape[1] != len(index["paths"]):
        return None
    return ProbeHistory(epochs, stacked, index["identities"], index["paths"])


def runs_with_probes(runs_dir: str | Path) -> list[RunFolder]:
    """The run folders that saved probe embeddings of at least one epoch."""
    return [folder for folder in run_folders(runs_dir) if folder.read_probe_index() and folder.read_probe_embeddings()]


def shared_pca(history: ProbeHistory) -> np.ndarray:
    """[E, N, 2]: every epoch's probes projected on the 2 principal directions of all epochs together."""
    epochs, count, dim = history.embeddings.shape
    flat = history.embeddings.reshape(epochs * count, dim)
    components = min(2, *flat.shape)
    coords = PCA(n_components=components, random_state=0).fit_transform(flat)
    if components < 2:  # one image or a 1-D embedding: a flat second axis
        coords = np.hstack([coords, np.zeros((len(coords), 2 - components))])
    return coords.reshape(epochs, count, 2)


def cosine_gaps(embeddings: np.ndarray, identities: list[str]) -> tuple[float, float]:
    """(mean cosine of two different images of the same identity, mean cosine of two images of
    different identities) over every such pair; NaN where there is no such pair."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    cosines = unit @ unit.T
    labels = np.asarray(identities)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    intra, inter = cosines[same & off_diagonal], cosines[~same]
    return (float(intra.mean()) if intra.size else float("nan"), float(inter.mean()) if inter.size else float("nan"))


def epoch_table(history: ProbeHistory) -> list[dict]:
    """One row per epoch: intra- and inter-identity mean cosine and the gap between them."""
    rows = []
    for epoch, embeddings in zip(history.epochs, history.embeddings):
        intra, inter = cosine_gaps(embeddings, history.identities)
        rows.append({"epoch": epoch, "same identity": intra, "different identities": inter, "gap": intra - inter})
    return rows
