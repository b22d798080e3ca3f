"""Nearest faces by cosine against scikit-learn's NearestNeighbors(metric="cosine")."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from lib.explore.neighbours import nearest, same_share, summary_sentence


def _clusters(seed: int = 0, people: int = 6, photos: int = 5, dim: int = 16):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(people, dim))
    labels = np.repeat(np.arange(people), photos)
    return centers[labels] + 0.3 * rng.normal(size=(len(labels), dim)) * rng.uniform(0.5, 3, (len(labels), 1)), labels


@pytest.mark.parametrize("query, k", [(0, 4), (17, 8), (29, 29)])
def test_nearest_faces_match_sklearn(query, k):
    embeddings, labels = _clusters()
    found = nearest(embeddings, labels, query, k)
    index = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(embeddings)
    distances, indices = index.kneighbors(embeddings[query:query + 1])
    keep = indices[0] != query  # sklearn returns the face itself first
    assert [n.index for n in found] == indices[0][keep][:k].tolist()
    np.testing.assert_allclose([n.cosine for n in found], 1 - distances[0][keep][:k], atol=1e-6)
    assert [n.same_identity for n in found] == [labels[i] == labels[query] for i in indices[0][keep][:k]]


def test_scale_does_not_matter_and_a_clean_embedding_finds_the_same_person():
    embeddings, labels = _clusters(seed=1)
    scaled = embeddings * np.arange(1, len(labels) + 1)[:, None]  # cosine ignores each vector's length
    plain, longer = nearest(embeddings, labels, 3, 5), nearest(scaled, labels, 3, 5)
    assert [n.index for n in longer] == [n.index for n in plain]
    np.testing.assert_allclose([n.cosine for n in longer], [n.cosine for n in plain], atol=1e-6)
    tight = np.eye(6)[labels] + 1e-3 * np.random.default_rng(2).normal(size=(len(labels), 6))
    neighbours = nearest(tight, labels, 10, 6)
    assert same_share(neighbours) == pytest.approx(4 / 6)  # 4 other photos, then strangers
    assert summary_sentence(neighbours, 4).startswith("4 of the 6 nearest faces are the same person")


def test_bad_choices_are_named():
    embeddings, labels = _clusters()
    with pytest.raises(ValueError, match="choose an index from 0 to 29"):
        nearest(embeddings, labels, 30, 3)
    with pytest.raises(ValueError, match="k must be at least 1"):
        nearest(embeddings, labels, 0, 0)
