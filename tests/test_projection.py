"""Projections: shapes, what they keep, and the content-hash cache; real UMAP and t-SNE."""
import numpy as np
import pytest

from lib.eval import projection
from lib.eval.projection import clear_cache, project, umap_ready, umap_status, warm_up_umap


def blobs(n_per=50, classes=4, dim=32, seed=0):
    """Well separated identities: each a tight cloud around its own random direction."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 3
    x = np.concatenate([c + 0.3 * rng.normal(size=(n_per, dim)) for c in centers]).astype(np.float32)
    return x, np.repeat(np.arange(classes), n_per)


def neighbour_purity(coords, labels, k=5):
    """Share of each point's k nearest neighbours (in the projection) that share its label."""
    d = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :k]
    return float((labels[nearest] == labels[:, None]).mean())


@pytest.mark.parametrize("dim", [2, 3])
def test_pca_keeps_distances_of_data_that_lie_in_dim_directions(dim):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(40, dim)) @ rng.normal(size=(dim, 16)) + 5.0).astype(np.float32)
    coords = project(x, "pca", dim)
    assert coords.shape == (40, dim) and coords.dtype == np.float32

    def pairwise(a):
        return np.sqrt(((a[:, None] - a[None]) ** 2).sum(-1))

    np.testing.assert_allclose(pairwise(coords), pairwise(x), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("method, dim", [("umap", 2), ("umap", 3), ("tsne", 2), ("tsne", 3)])
def test_neighbourhood_methods_keep_identities_together(method, dim):
    warm_up_umap()
    x, labels = blobs()
    coords = project(x, method, dim, seed=0)
    assert coords.shape == (200, dim) and np.isfinite(coords).all()
    assert neighbour_purity(coords, labels) > 0.95
    shuffled = np.random.default_rng(0).permutation(labels)
    assert neighbour_purity(coords, shuffled) < 0.5  # the check itself can fail


def test_cache_hit_is_the_same_array_and_changed_input_misses():
    clear_cache()
    x, _ = blobs(n_per=10)
    first = project(x, "pca", 2)
    assert project(x.copy(), "pca", 2) is first
    assert not first.flags.writeable
    changed = x.copy()
    changed[3, 5] += 1e-3
    assert project(changed, "pca", 2) is not first
    assert project(x, "pca", 3) is not first and project(x, "pca", 2, seed=1) is not first
    assert project(x, "pca", 2) is first


def test_umap_is_repeatable_for_a_seed():
    x, _ = blobs(n_per=50, seed=3)
    first = project(x, "umap", 2, seed=5)
    clear_cache()
    again = project(x, "umap", 2, seed=5)
    assert again is not first
    np.testing.assert_allclose(again, first, atol=1e-4)


def test_warm_up_runs_once_in_the_background_and_reports_ready():
    thread = warm_up_umap()
    assert warm_up_umap() is thread and thread.daemon
    thread.join(timeout=120)
    assert umap_ready() and umap_status() == "ready"


@pytest.mark.parametrize("args, words", [
    ((np.zeros((10, 4)), "lda", 2), "unknown projection method"),
    ((np.zeros((10, 4)), "pca", 4), "dim must be 2 or 3"),
    ((np.zeros((3, 4)), "pca", 2), "at least 5 rows"),
    ((np.full((10, 4), np.nan), "pca", 2), "NaN"),
])
def test_bad_input_is_named(args, words):
    with pytest.raises(ValueError, match=words):
        project(*args)


def test_two_dimensional_embeddings_can_be_drawn_in_3d():
    x, _ = blobs(n_per=5, dim=2)
    coords = project(x, "pca", 3)
    assert coords.shape == (20, 3) and np.allclose(coords[:, 2], 0, atol=1e-5)
    assert projection.METHODS.keys() == {"pca", "umap", "tsne"}
