"""Exploring a data set of the course's size: embeddings cached and read back without
recomputing, bfloat16 only where it agrees with float32, projection samples of whole
identities that hold no copy of the images, and nothing that builds an N x N matrix
(blockwise answers checked against the full matrix on a small N)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import top_k_accuracy_score
from torch import nn

from lib.eval import projection
from lib.explore import identification
from lib.explore import models as explore
from lib.explore.models import ExploreModel, ImageChoice, SampledImages
from lib.store.meta import CheckpointMeta
from tests.explore_models import small_spec


@pytest.fixture(autouse=True)
def cold_caches(tmp_path, monkeypatch):
    monkeypatch.setenv(explore.CACHE_ENV, str(tmp_path / "cache"))
    explore.clear_memory()
    projection.clear_cache()
    yield
    explore.clear_memory()
    projection.clear_cache()


def choice_of(counts: list[int]) -> ImageChoice:
    """Identity i has counts[i] images; image n's pixels all hold n % 256."""
    labels = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(1)
    labels = labels[rng.permutation(len(labels))]  # identities interleaved, as in a real folder listing
    values = torch.arange(len(labels)) % 256
    images = values.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    return ImageChoice("dev", images, labels, [f"p{i:03d}" for i in range(len(counts))],
                       [f"cls_data/dev/p{label:03d}/{n}.jpg" for n, label in enumerate(labels)])


# ----------------------------------------------------------------------------- the projection sample

def test_sample_holds_whole_identities_the_largest_first_and_its_labels():
    counts = [30, 25, 20] + [2] * 200 + [1] * 100  # 3 large identities, many small ones
    choice = choice_of(counts)
    part, index = choice.sample(120)
    assert len(index) == 120 == len(part.labels) and list(index) == sorted(set(index.tolist()))
    assert np.array_equal(part.labels, choice.labels[index])  # labelled: each face keeps its identity
    assert part.paths == [choice.paths[i] for i in index]
    per_identity = np.bincount(part.labels, minlength=len(counts))
    assert per_identity[:3].tolist() == [30, 25, 20]  # the identities the page colors, whole
    shown = np.flatnonzero(per_identity)
    partial = [c for c in shown if per_identity[c] != counts[c]]
    assert len(partial) <= 1  # every identity whole but at most the last one taken
    assert len(shown) < 120 - 75  # stratified by identity: far fewer identities than faces
    again, same_index = choice.sample(120)
    assert np.array_equal(same_index, index) and not np.array_equal(choice.sample(120, seed=1)[1], index)


def test_sample_reads_its_images_from_the_whole_set_without_a_copy():
    choice = choice_of([3] * 40)
    part, index = choice.sample(50)
    assert isinstance(part.images, SampledImages) and part.images.base is choice.images
    assert part.images.shape == (50, 3, 4, 4) and len(part.images) == 50
    assert torch.equal(part.images[7], choice.images[index[7]])
    assert torch.equal(part.images[:, 0, 0, 0], choice.images[torch.as_tensor(index), 0, 0, 0])
    assert sum(1 for _ in part.images) == 50
    inner, inner_index = part.sample(20)  # a sample of a sample still points into the whole set
    assert inner.images.base is choice.images
    assert torch.equal(inner.images[3], choice.images[index[inner_index[3]]])


def test_no_sample_when_the_limit_covers_every_face():
    choice = choice_of([2] * 10)
    assert choice.sample(20)[0] is choice and choice.sample(0)[0] is choice


# ----------------------------------------------------------------------------- embeddings

def small_model(label="small") -> ExploreModel:
    torch.manual_seed(0)
    from lib.model.net import FaceNet

    spec = small_spec(classes=5)
    model = FaceNet(spec).eval()
    return ExploreModel(label, explore.config.PROJECT_ROOT, model, CheckpointMeta(spec=spec),
                        (0.5,) * 3, (0.25,) * 3, None, f"weights-of-{label}")


def faces(count=12, side=32) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, side, side), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)


class Refuses(nn.Module):
    """A model that must not be run: reading back a cached embedding may not call it."""

    def embed(self, x):
        raise AssertionError("the embeddings were computed again")


def test_cached_embeddings_are_read_back_from_disk_without_recomputing(tmp_path):
    model, images = small_model(), faces()
    first = explore.cached_embeddings(model, images)
    expected = explore.raw_embeddings(model.model, images, model.mean, model.std)
    np.testing.assert_allclose(first, expected, atol=1e-6)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    explore.clear_memory()  # as after a restart: only the file is left
    model.model = Refuses()
    np.testing.assert_array_equal(explore.cached_embeddings(model, images), first)


def test_float32_and_bfloat16_embeddings_are_cached_apart(tmp_path, monkeypatch):
    model, images = small_model(), faces()
    monkeypatch.setattr(explore, "_cpu_has_bf16", lambda: True)
    explore.cached_embeddings(model, images)
    monkeypatch.setenv(explore.PRECISION_ENV, "fp32")
    assert explore.precision_policy() == "fp32"
    exact = explore.cached_embeddings(model, images)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    np.testing.assert_array_equal(exact, explore.raw_embeddings(model.model, images, model.mean, model.std,
                                                                precision="fp32"))


def test_bfloat16_embeddings_agree_with_float32():
    model, images = small_model(), faces(40)
    exact = explore.raw_embeddings(model.model, images, model.mean, model.std, precision="fp32")
    fast = explore.raw_embeddings(model.model, images, model.mean, model.std, precision="bf16")
    cosines = np.sum(explore.unit(exact) * explore.unit(fast), axis=1)
    assert cosines.min() >= explore.BF16_AGREEMENT and not np.array_equal(exact, fast)


class Cancelling(nn.Module):
    """Two large, nearly equal projections subtracted: float32 keeps their small difference,
    bfloat16's 8-bit mantissa loses it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.a, self.b = nn.Linear(3 * 8 * 8, 16, bias=False), nn.Linear(3 * 8 * 8, 16, bias=False)
        with torch.no_grad():
            big = torch.randn(16, 3 * 8 * 8) * 1000
            self.a.weight.copy_(big + torch.randn(16, 3 * 8 * 8))
            self.b.weight.copy_(big)

    def embed(self, x):
        flat = x.flatten(1)
        return self.a(flat) - self.b(flat)

    forward = embed


def test_a_model_bfloat16_cannot_carry_is_embedded_in_float32():
    images = faces(70, side=8)
    model = Cancelling().eval()
    exact = explore.raw_embeddings(model, images, (0.5,) * 3, (0.25,) * 3, precision="fp32")
    chosen = explore.raw_embeddings(model, images, (0.5,) * 3, (0.25,) * 3, precision="bf16")
    np.testing.assert_array_equal(chosen, exact)


def test_reference_embeddings_equal_the_evaluation_embeddings_bit_for_bit():
    from torch.nn import functional as F

    from lib.eval.metrics import embed

    model, images = small_model(), faces(40)
    reference = explore.raw_embeddings(model.model, images, model.mean, model.std, precision="reference")
    expected = embed(model.model, images, model.mean, model.std)
    assert torch.equal(F.normalize(torch.from_numpy(reference), dim=1), expected)
    with pytest.raises(ValueError, match="precision must be"):
        explore.raw_embeddings(model.model, images, model.mean, model.std, precision="half")


def test_progress_is_reported_about_every_percent_and_ends_at_one():
    model, images = small_model(), faces(70, side=16)
    seen = []
    explore.raw_embeddings(model.model, images, model.mean, model.std, seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == -(-70 // explore.EMBED_BATCH)


# ----------------------------------------------------------------------------- nothing N x N

def test_nearest_neighbours_blockwise_equal_the_full_matrix(monkeypatch):
    monkeypatch.setattr(projection, "BLOCK_MIB", 0.01)  # a few rows per block
    x = np.random.default_rng(4).normal(size=(300, 16)).astype(np.float32)
    indices, distances = projection.nearest_neighbours(x, 7)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    full = 1.0 - unit.astype(np.float64) @ unit.T.astype(np.float64)  # the N x N reference
    expected = np.argsort(full, axis=1, kind="stable")[:, :7]
    assert np.array_equal(indices, expected) and np.array_equal(indices[:, 0], np.arange(300))
    np.testing.assert_allclose(distances, np.maximum(np.take_along_axis(full, expected, 1), 0), atol=1e-5)


def test_identification_accuracy_blockwise_equals_sklearn(monkeypatch):
    monkeypatch.setattr(identification, "SCORE_ROWS", 7)  # several blocks, the last one short
    rng = np.random.default_rng(5)
    weights = torch.as_tensor(rng.normal(size=(9, 6)), dtype=torch.float32)
    model = ExploreModel("m", explore.config.PROJECT_ROOT, nn.Identity(), None, (0.5,), (0.5,), weights, "w")
    raw = rng.normal(size=(40, 6)).astype(np.float32)
    targets = rng.integers(0, 9, size=40)
    found = identification.identification_accuracy(model, raw, targets, ks=(1, 3))
    scores = explore.class_scores(model, raw).numpy()  # the full matrix, for the reference only
    for k in (1, 3):
        assert found[k] == pytest.approx(top_k_accuracy_score(targets, scores, k=k, labels=range(9)))
    assert identification.best_classes(model, raw) == scores.argmax(axis=1).tolist()


def test_bad_identification_input_is_named():
    model = ExploreModel("m", explore.config.PROJECT_ROOT, nn.Identity(), None, (0.5,), (0.5,), torch.eye(3), "w")
    with pytest.raises(ValueError, match="one target per embedding"):
        identification.identification_accuracy(model, np.eye(3, dtype=np.float32), [0, 1])


# ----------------------------------------------------------------------------- projections on disk

def blobs(per: int = 30, classes: int = 4, dims: int = 12) -> np.ndarray:
    rng = np.random.default_rng(6)
    centers = rng.normal(size=(classes, dims)) * 4
    return np.concatenate([c + rng.normal(size=(per, dims)) for c in centers]).astype(np.float32)


def test_a_large_projection_is_read_back_from_disk_after_a_restart(tmp_path, monkeypatch):
    monkeypatch.setattr(projection, "DISK_MIN_ROWS", 50)
    x = blobs()
    first = projection.project(x, "tsne", 2)
    assert len(list((tmp_path / "cache").glob("projection-*.npy"))) == 1
    projection.clear_cache()  # as after a restart
    monkeypatch.setitem(projection._PROJECT, "tsne", lambda *args: pytest.fail("projected again"))
    np.testing.assert_array_equal(projection.project(x, "tsne", 2), first)


def test_a_damaged_projection_file_is_computed_again(tmp_path, monkeypatch):
    monkeypatch.setattr(projection, "DISK_MIN_ROWS", 50)
    x = blobs()
    first = projection.project(x, "tsne", 2)
    (saved,) = (tmp_path / "cache").glob("projection-*.npy")
    saved.write_bytes(b"not a numpy file")
    projection.clear_cache()
    np.testing.assert_allclose(projection.project(x, "tsne", 2), first, atol=1e-4)


def test_small_and_pca_projections_stay_in_memory_only(tmp_path):
    projection.project(blobs(), "pca", 2)
    projection.project(blobs(per=5), "tsne", 2)
    assert not list((tmp_path / "cache").glob("projection-*.npy"))


def test_training_identities_are_listed_again_when_the_split_changes(tmp_path):
    import os

    from lib.data.images import list_identities
    from lib.explore.scope import train_identities
    from tests.synthetic_data import make_dataset, pixels, write

    root = tmp_path / "set"
    make_dataset(root, train={"ann": 1, "bob": 2}, dev={"ann": 1})
    assert train_identities(root) == list_identities(root / "cls_data" / "train", root) == ["ann", "bob"]
    write(root / "cls_data/train/cy/cy_0000.png", pixels(99))
    split = root / "cls_data" / "train"
    os.utime(split, ns=(split.stat().st_atime_ns, split.stat().st_mtime_ns + 10**9))  # a coarse clock
    assert train_identities(root) == ["ann", "bob", "cy"]


def test_umap_of_many_points_runs_on_exact_neighbours_and_keeps_identities_together(monkeypatch):
    monkeypatch.setattr(projection, "APPROXIMATE_FROM", 100)  # the large-sample path on 120 points
    x = blobs()
    labels = np.repeat(np.arange(4), 30)
    coords = projection.project(x, "umap", 2)
    distances = np.linalg.norm(coords[:, None] - coords[None], axis=2)  # the reference, on 120 points
    np.fill_diagonal(distances, np.inf)
    nearest = np.argsort(distances, axis=1)[:, :5]
    assert (labels[nearest] == labels[:, None]).mean() > 0.95
