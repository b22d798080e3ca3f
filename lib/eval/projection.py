"""Embeddings drawn in 2-D or 3-D: PCA, UMAP and t-SNE, cached by content.

PCA is linear and instant: distances along its axes are real, but classes that
differ only in directions it drops overlap. UMAP and t-SNE keep neighbourhoods
(which faces lie near which) and give up global distances; they compare points
by cosine distance, as verification does.

``import umap`` and numba's first compile take many seconds, so
``warm_up_umap()`` does both in a background thread when the app starts; a
page can show PCA at once and switch to UMAP when ``umap_ready()``.

A UMAP or t-SNE projection of thousands of faces takes seconds to tens of seconds, so
besides the in-memory cache it is kept on disk beside the cached embeddings
(``projection-<key>.npy``): after a restart the page redraws from the file.

From APPROXIMATE_FROM points on, UMAP would find neighbours with NN-descent (pynndescent),
whose numba code the warm-up does not compile: the first large projection took a minute
more. Exact neighbours from scikit-learn's brute-force search, in blocks of bounded memory,
are passed to UMAP instead; for a sample of thousands they take about a second.
"""
from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np

from lib.base import config
from lib.base.files import atomic_save_npy

METHODS = {
    "pca": "PCA (linear; instant)",
    "umap": "UMAP (neighbourhoods; cosine distance)",
    "tsne": "t-SNE (neighbourhoods; cosine distance)",
}
_CACHE_SIZE = 64
# Projections of at least this many points are also cached on disk (fewer take under a second).
DISK_MIN_ROWS = 1000
APPROXIMATE_FROM = 4096  # umap.UMAP switches from exact to approximate neighbours here
LARGE_EPOCHS = 200  # UMAP's own choice above 10,000 points; its 500 below cost 2.5x as much on a 5,000 sample
BLOCK_MIB = 64  # memory one block of a neighbour search may take
CACHE_ENV = "FACELAB_CACHE_DIR"  # the folder of the cached embeddings (lib.explore.models.cache_dir)
_cache: OrderedDict[str, np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()
_warm = {"thread": None, "error": None}
_warm_lock = threading.Lock()
_umap_ready = threading.Event()


def content_key(embeddings: np.ndarray, method: str, dim: int, seed: int) -> str:
    """Hash of the array's values and shape plus the projection settings."""
    digest = hashlib.sha256(np.ascontiguousarray(embeddings).tobytes())
    digest.update(f"{embeddings.shape}|{method}|{dim}|{seed}".encode())
    return digest.hexdigest()


def _check(embeddings, method: str, dim: int) -> np.ndarray:
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; choose one of {', '.join(METHODS)}")
    if dim not in (2, 3):
        raise ValueError(f"projection dim must be 2 or 3, got {dim!r}")
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] < 5:
        raise ValueError(f"embeddings must be an array [N, D] with at least 5 rows, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("embeddings contain NaN or infinite values")
    if array.shape[1] < dim:  # a 2-D embedding drawn in 3-D: pad with a zero axis
        array = np.pad(array, ((0, 0), (0, dim - array.shape[1])))
    return array


def _pca(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(n_components=dim, svd_solver="full", random_state=seed).fit_transform(x)


def nearest_neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine distances) [N, k] of each row's k nearest rows, itself included, nearest
    first; exact, a block of rows at a time (BLOCK_MIB): never an N x N matrix."""
    from sklearn import config_context
    from sklearn.neighbors import NearestNeighbors

    with config_context(working_memory=BLOCK_MIB):
        distances, indices = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(x).kneighbors(x)
    return indices.astype(np.int64), np.maximum(distances, 0.0).astype(np.float32)


def _umap(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    import umap  # slow the first time: warm_up_umap() does it ahead

    neighbours = min(15, len(x) - 1)
    large = len(x) >= APPROXIMATE_FROM
    known = (*nearest_neighbours(x, neighbours), None) if large else (None, None, None)
    # A fixed random_state makes UMAP single-threaded and repeatable.
    reducer = umap.UMAP(n_components=dim, n_neighbors=neighbours, min_dist=0.1, metric="cosine",
                        random_state=seed, n_jobs=1, precomputed_knn=known, n_epochs=LARGE_EPOCHS if large else None)
    with warnings.catch_warnings():  # "transform will be unavailable": it is never called here
        warnings.filterwarnings("ignore", message=".*knn_search_index.*", category=UserWarning)
        coords = reducer.fit_transform(x)
    _umap_ready.set()  # compiled now, whoever got here first
    return coords


def _tsne(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(x) - 1) / 3.0)  # t-SNE needs perplexity < N
    # 500 iterations (250 of them early exaggeration) settle the picture at a quarter of the default's cost.
    tsne = TSNE(n_components=dim, perplexity=perplexity, metric="cosine", init="pca",
                learning_rate="auto", max_iter=500, random_state=seed)
    from sklearn import config_context

    with config_context(working_memory=BLOCK_MIB):  # its neighbour search, a bounded block at a time
        return tsne.fit_transform(x)


_PROJECT = {"pca": _pca, "umap": _umap, "tsne": _tsne}


def project(embeddings, method: str = "pca", dim: int = 2, seed: int = 0) -> np.ndarray:
    """Coordinates [N, dim] (float32, read-only). The same embeddings and settings
    return the very same cached array without recomputing (from disk after a restart)."""
    array = _check(embeddings, method, dim)
    key = content_key(array, method, dim, seed)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    on_disk = _disk_path(key) if method != "pca" and len(array) >= DISK_MIN_ROWS else None
    coords = _read_disk(on_disk, (len(array), dim))
    if coords is None:
        coords = np.asarray(_PROJECT[method](array, dim, seed), dtype=np.float32)
        _write_disk(on_disk, coords)
    coords.setflags(write=False)  # shared between callers: nobody may change it in place
    with _cache_lock:
        coords = _cache.setdefault(key, coords)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return coords


def _disk_path(key: str) -> Path:
    configured = os.environ.get(CACHE_ENV, "").strip()
    folder = Path(configured).expanduser() if configured else config.PROJECT_ROOT / ".cache" / "embeddings"
    return folder / f"projection-{key[:40]}.npy"


def _read_disk(path: Path | None, shape: tuple[int, int]) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    try:
        coords = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # a damaged file is computed again
    return coords if coords.shape == shape and coords.dtype == np.float32 and np.isfinite(coords).all() else None


def _write_disk(path: Path | None, coords: np.ndarray) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(path, coords)
    except OSError:
        pass  # a read-only or full disk only costs the cache, never the picture


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _warm_up() -> None:
    try:
        rng = np.random.default_rng(0)
        # A tiny fit compiles the numba functions a real fit uses (same metric and settings).
        _umap(rng.normal(size=(64, 8)).astype(np.float32), 2, 0)
    except Exception as error:  # reported through umap_status(), never raised into the app
        _warm["error"] = f"{type(error).__name__}: {error}"


def warm_up_umap() -> threading.Thread:
    """Start (once) a background thread that imports umap and compiles its code."""
    with _warm_lock:
        if _warm["thread"] is None:
            _warm["thread"] = threading.Thread(target=_warm_up, name="umap-warm-up", daemon=True)
            _warm["thread"].start()
        return _warm["thread"]


def umap_ready() -> bool:
    return _umap_ready.is_set()


def umap_status() -> str:
    """"ready", "warming", "not started" or "failed: <reason>" (for a progress note in the UI)."""
    if _umap_ready.is_set():
        return "ready"
    if _warm["error"]:
        return f"failed: {_warm['error']}"
    return "not started" if _warm["thread"] is None else "warming"
