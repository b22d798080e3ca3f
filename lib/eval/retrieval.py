"""Verification as retrieval, the recitation's protocol: a gallery of known identities, and
probes of known and unknown people.

- The *gallery* holds one image of each known identity.
- *Known probes* are the other images of those identities: identification asks whether the
  most similar gallery image is the right person (rank-1 accuracy, closed set).
- *Unknown probes* are images of identities left out of the gallery: open-set recognition
  must reject them. At a cosine threshold t a probe is accepted as its nearest gallery
  identity when that similarity is at least t, and rejected otherwise.

At a threshold (the open-set metrics of Phillips et al., "Face recognition vendor test"):

- DIR (detection and identification rate): the share of known probes accepted *and* named
  correctly.
- FAR (false accept rate): the share of unknown probes accepted as someone in the gallery;
  1 - FAR of them are rightly rejected.

Pure numpy on embeddings; which images go where is decided by ``split_gallery`` from the
identities alone (stable: a hash of each name and the seed).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

UNKNOWN = -1


@dataclass(frozen=True)
class GallerySplit:
    """Indices into the images: the gallery (one per known identity) and the probes."""
    names: list[str]               # known identities, in gallery order
    gallery: np.ndarray            # [G] image index of each known identity's gallery image
    probes: np.ndarray             # [Q] image indices of the probes
    probe_labels: np.ndarray       # [Q] index into ``names``, or UNKNOWN for a left-out identity


def _hash_order(name: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\n{name}".encode()).digest()[:8], "big")


def split_gallery(identities: Sequence[str], known_share: float = 0.5, seed: int = 0) -> GallerySplit:
    """Known identities: a share of those with at least two images (one for the gallery, one to
    probe with), chosen by a hash of their names; every other identity is unknown. The gallery
    image of a known identity is its first one; its other images, and every image of the
    unknown identities, are the probes."""
    if not 0 < known_share <= 1:
        raise ValueError(f"known_share: expected a fraction in (0, 1], got {known_share!r}")
    by_name: dict[str, list[int]] = {}
    for index, name in enumerate(identities):
        by_name.setdefault(str(name), []).append(index)
    repeated = sorted((n for n, images in by_name.items() if len(images) >= 2), key=lambda n: _hash_order(n, seed))
    known = sorted(repeated[:round(len(repeated) * known_share)])
    if not known:
        raise ValueError("no identity has two images: retrieval needs one for the gallery and one to probe with")
    position = {name: slot for slot, name in enumerate(known)}
    gallery = np.array([by_name[name][0] for name in known], dtype=np.int64)
    probes, labels = [], []
    for name, images in by_name.items():
        first = images[0] if name in position else None
        for index in images:
            if index != first:
                probes.append(index)
                labels.append(position.get(name, UNKNOWN))
    order = np.argsort(probes, kind="stable")
    return GallerySplit(known, gallery, np.asarray(probes, np.int64)[order], np.asarray(labels, np.int64)[order])


@dataclass(frozen=True)
class Matches:
    """Each probe's nearest gallery identity and its cosine similarity."""
    nearest: np.ndarray      # [Q] index into the gallery
    similarity: np.ndarray   # [Q] cosine with it
    labels: np.ndarray       # [Q] the probe's true gallery index, or UNKNOWN


def _unit(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)


BLOCK_BYTES = 64 * 2**20  # similarities held at once: a block of probes against the whole gallery


def match(gallery_embeddings, probe_embeddings, probe_labels, block_bytes: int = BLOCK_BYTES) -> Matches:
    """Nearest gallery entry of every probe by cosine similarity (ties: the first gallery entry).
    Probes are matched a block at a time, so memory stays at ``block_bytes`` of similarities
    whatever the numbers of probes and gallery entries (the whole matrix of the course's
    retrieval set would take hundreds of MB)."""
    gallery, probes = _unit(gallery_embeddings), _unit(probe_embeddings)
    labels = np.asarray(probe_labels, dtype=np.int64)
    if gallery.ndim != 2 or probes.ndim != 2 or gallery.shape[1] != probes.shape[1] or not len(gallery):
        raise ValueError(f"gallery {gallery.shape} and probes {probes.shape}: need [G, D] and [Q, D] with G >= 1")
    if len(labels) != len(probes):
        raise ValueError(f"{len(probes)} probes but {len(labels)} probe labels")
    rows = max(1, block_bytes // (gallery.itemsize * len(gallery)))
    nearest = np.empty(len(probes), dtype=np.int64)
    best = np.empty(len(probes), dtype=gallery.dtype)
    for start in range(0, len(probes), rows):
        similarity = probes[start:start + rows] @ gallery.T
        nearest[start:start + rows] = similarity.argmax(axis=1)
        best[start:start + rows] = similarity[np.arange(len(similarity)), nearest[start:start + rows]]
    return Matches(nearest, best, labels)


def _share(hits: np.ndarray) -> float:
    return float(hits.mean()) if hits.size else float("nan")


def rank1_accuracy(matches: Matches) -> float:
    """Known probes whose nearest gallery identity is their own (no threshold: closed set)."""
    known = matches.labels != UNKNOWN
    return _share(matches.nearest[known] == matches.labels[known])


def open_set_rates(matches: Matches, threshold: float) -> dict:
    """{"threshold", "dir", "far", "rejected_unknown"} at a cosine threshold (accept: >= threshold)."""
    accepted = matches.similarity >= threshold
    known = matches.labels != UNKNOWN
    correct = accepted[known] & (matches.nearest[known] == matches.labels[known])
    false_accepts = accepted[~known]
    far = _share(false_accepts)
    return {"threshold": float(threshold), "dir": _share(correct), "far": far, "rejected_unknown": 1.0 - far}


def threshold_at_far(matches: Matches, far: float) -> float:
    """The lowest threshold at which at most a share ``far`` of unknown probes is accepted."""
    unknown = np.sort(matches.similarity[matches.labels == UNKNOWN])[::-1]
    if not unknown.size:
        raise ValueError("no unknown probe: a false accept rate needs identities left out of the gallery")
    allowed = int(np.floor(far * unknown.size + 1e-9))  # unknown probes that may pass
    if allowed >= unknown.size:
        return float(unknown[-1])
    return float(np.nextafter(unknown[allowed], np.inf))  # just above the first one that must fail


@dataclass(frozen=True)
class RetrievalReport:
    gallery_size: int
    known_probes: int
    unknown_probes: int
    rank1: float
    rates: list[dict]  # open_set_rates at each threshold asked for


def retrieval_report(embeddings, split: GallerySplit, thresholds: Sequence[float] = (),
                     far_targets: Sequence[float] = (0.1, 0.01)) -> RetrievalReport:
    """Rank-1 accuracy, and DIR and FAR at the given thresholds and at those meeting each FAR target."""
    embeddings = np.asarray(embeddings)
    matches = match(embeddings[split.gallery], embeddings[split.probes], split.probe_labels)
    unknown = int((split.probe_labels == UNKNOWN).sum())
    chosen = list(thresholds) + ([threshold_at_far(matches, far) for far in far_targets] if unknown else [])
    return RetrievalReport(len(split.gallery), len(split.probes) - unknown, unknown, rank1_accuracy(matches),
                           [open_set_rates(matches, t) for t in chosen])
