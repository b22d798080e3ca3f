"""Embeddings drawn in 2-D or 3-D: PCA, UMAP and t-SNE, cached by content.

PCA is linear and instant: distances along its axes are real, but classes that
differ only in directions it drops overlap. UMAP and t-SNE keep neighbourhoods
(which faces lie near which) and give up global distances; they compare points
by cosine distance, as verification does.

``import umap`` and numba's first compile take many seconds, so
``warm_up_umap()`` does both in a background thread when the app starts; a
page can show PCA at once and switch to UMAP when ``umap_ready()``.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

METHODS = {
    "pca": "PCA (linear; instant)",
    "umap": "UMAP (neighbourhoods; cosine distance)",
    "tsne": "t-SNE (neighbourhoods; cosine distance)",
}
_CACHE_SIZE = 64
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


def _umap(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    import umap  # slow the first time: warm_up_umap() does it ahead

    # A fixed random_state makes UMAP single-threaded and repeatable.
    reducer = umap.UMAP(n_components=dim, n_neighbors=min(15, len(x) - 1), min_dist=0.1,
                        metric="cosine", random_state=seed, n_jobs=1)
    coords = reducer.fit_transform(x)
    _umap_ready.set()  # compiled now, whoever got here first
    return coords


def _tsne(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(x) - 1) / 3.0)  # t-SNE needs perplexity < N
    # 500 iterations (250 of them early exaggeration) settle the picture at a quarter of the default's cost.
    return TSNE(n_components=dim, perplexity=perplexity, metric="cosine", init="pca",
                learning_rate="auto", max_iter=500, random_state=seed).fit_transform(x)


_PROJECT = {"pca": _pca, "umap": _umap, "tsne": _tsne}


def project(embeddings, method: str = "pca", dim: int = 2, seed: int = 0) -> np.ndarray:
    """Coordinates [N, dim] (float32, read-only). The same embeddings and settings
    return the very same cached array without recomputing."""
    array = _check(embeddings, method, dim)
    key = content_key(array, method, dim, seed)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    coords = np.asarray(_PROJECT[method](array, dim, seed), dtype=np.float32)
    coords.setflags(write=False)  # shared between callers: nobody may change it in place
    with _cache_lock:
        coords = _cache.setdefault(key, coords)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return coords


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
