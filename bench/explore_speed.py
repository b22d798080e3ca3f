"""How fast the Explore pages are on this machine.

1. The Embeddings page's data, first render: embed the 1,549 verification images
   with each checkpoint and project them with UMAP (after UMAP's one-time
   warm-up, timed on its own), against a cached re-render (embeddings from the
   in-memory cache, then from the disk cache as after a restart; projections
   from their cache).
2. Integrated Gradients per 64x64 image with Captum's internal batching (all
   interpolation steps in one batch) against one step per forward pass.

Run: .venv/bin/python bench/explore_speed.py  (uses the demo checkpoints when present)
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from lib.base import config  # noqa: E402
from lib.eval import projection, saliency
from lib.explore import models as explore
from lib.model.net import FaceNet  # noqa: E402
from lib.model.presets import PRESETS  # noqa: E402
from lib.store.meta import CheckpointMeta  # noqa: E402


def models() -> list[explore.ExploreModel]:
    found = explore.demo_checkpoints()
    if found:
        return [explore.open_model(folder, label) for label, folder in found]
    print("no demo checkpoints: timing one randomly initialised face_resnet")
    model = FaceNet(PRESETS["face_resnet"]).eval()
    meta = CheckpointMeta(spec=model.spec)
    return [explore.ExploreModel("random face_resnet", Path("."), model, meta, (0.5,) * 3, (0.25,) * 3, None, "random")]


def render(chosen, images, fingerprint, method) -> float:
    start = time.perf_counter()
    for model in chosen:
        raw = explore.cached_embeddings(model, images, images_key=fingerprint)
        projection.project(explore.unit(raw), method, 2)
    return time.perf_counter() - start


def embeddings_page(chosen) -> None:
    choice = explore.image_choice(config.EMBEDDED_DATA, "verification")
    print(f"\n[Embeddings page data] {len(choice.images):,} verification images x {len(chosen)} checkpoint(s)")
    start = time.perf_counter()
    projection.warm_up_umap().join()
    print(f"  UMAP warm-up (import + numba compile, once per server, in the background): "
          f"{time.perf_counter() - start:6.1f} s  [{projection.umap_status()}]")
    projection.clear_cache()
    explore.clear_memory()
    first = render(chosen, choice.images, choice.fingerprint, "umap")
    again = render(chosen, choice.images, choice.fingerprint, "umap")
    explore.clear_memory()
    projection.clear_cache()
    pca_after_restart = render(chosen, choice.images, choice.fingerprint, "pca")
    print(f"  first render (embed + UMAP):                  {first:8.2f} s   (baseline)")
    print(f"  cached re-render (memory):                    {again:8.4f} s   {first / max(again, 1e-9):8.0f}x faster")
    print(f"  after a restart (disk cache, PCA at once):    {pca_after_restart:8.4f} s   "
          f"{first / max(pca_after_restart, 1e-9):8.0f}x faster")


def integrated_gradients(model: explore.ExploreModel, count: int = 8, steps: int = 32) -> None:
    dev = explore.image_choice(config.EMBEDDED_DATA, "dev")
    images = dev.images[:count]
    times = {}
    for label, batch in (("one step per pass", 1), (f"{steps} steps in one batch", steps)):
        saliency.explain_class(model.model, images[0], model.mean, model.std, "integrated_gradients", 0,
                               class_weights=model.class_weights, n_steps=steps, internal_batch_size=batch)
        start = time.perf_counter()
        for image in images:
            saliency.explain_class(model.model, image, model.mean, model.std, "integrated_gradients", 0,
                                   class_weights=model.class_weights, n_steps=steps, internal_batch_size=batch)
        times[label] = (time.perf_counter() - start) / count
    (slow_label, slow), (fast_label, fast) = times.items()
    print(f"\n[Integrated Gradients, {steps} steps, one 64x64 image, {model.label}]")
    print(f"  {slow_label:28s} {slow * 1000:8.0f} ms per image   (baseline)")
    print(f"  {fast_label:28s} {fast * 1000:8.0f} ms per image   {slow / fast:5.1f}x faster")


def main() -> int:
    torch.manual_seed(0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.1f}")
    chosen = models()
    with tempfile.TemporaryDirectory() as cache:
        os.environ[explore.CACHE_ENV] = cache  # a cold disk cache, removed afterwards
        embeddings_page(chosen)
    integrated_gradients(chosen[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
