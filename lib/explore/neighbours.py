"""The k nearest faces of one face by cosine similarity (the TensorBoard Projector's
"nearest points"): what a verification threshold compares a face with.

In a good face embedding the nearest faces of a photo are other photos of the same person,
at a high cosine, and the first stranger comes clearly lower; features that only separate
the training classes put look-alikes in pose, lighting or background among them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lib.explore.models import unit


@dataclass(frozen=True)
class Neighbour:
    index: int            # into the embedded images
    cosine: float         # similarity with the chosen face
    same_identity: bool   # the same person as the chosen face


def nearest(embeddings: np.ndarray, labels: np.ndarray, query: int, k: int) -> list[Neighbour]:
    """The ``k`` faces most similar to face ``query`` by cosine, most similar first (ties: lower
    index first), the face itself left out. ``embeddings``: [N, D] raw or unit; ``labels``: [N]."""
    values, labels = np.asarray(embeddings), np.asarray(labels)
    if values.ndim != 2 or len(values) != len(labels):
        raise ValueError(f"embeddings must be [N, D] with one label per row; got {values.shape} and "
                         f"{labels.shape[0] if labels.ndim else 0} labels")
    if not 0 <= query < len(values):
        raise ValueError(f"face {query} does not exist: choose an index from 0 to {len(values) - 1}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    vectors = unit(values).astype(np.float64)
    cosines = vectors @ vectors[query]
    others = np.delete(np.arange(len(values)), query)
    order = others[np.lexsort((others, -cosines[others]))][:k]  # by cosine, then by index
    return [Neighbour(int(i), float(cosines[i]), bool(labels[i] == labels[query])) for i in order]


def same_share(neighbours: list[Neighbour]) -> float:
    """Share of the neighbours that are the same person (precision at k); NaN for none."""
    return float(np.mean([n.same_identity for n in neighbours])) if neighbours else float("nan")


def summary_sentence(neighbours: list[Neighbour], others_of_identity: int) -> str:
    """What the neighbours say about the embedding, in one sentence for the page."""
    same = sum(n.same_identity for n in neighbours)
    reachable = min(len(neighbours), others_of_identity)
    if not neighbours:
        return "No other face to compare with."
    if reachable == 0:
        return "This person has no other photo here: every neighbour is a stranger by necessity."
    first_stranger = next((n for n in neighbours if not n.same_identity), None)
    gap = ""
    if first_stranger is not None and neighbours[0].same_identity:
        gap = (f" The closest stranger scores {first_stranger.cosine:.2f}, against {neighbours[0].cosine:.2f} "
               "for the closest photo of the same person.")
    return (f"{same} of the {len(neighbours)} nearest faces are the same person ({same} of at most "
            f"{reachable} possible).{gap}")
