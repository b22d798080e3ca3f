"""How fast the Explore pages are on this machine.

1. The Embeddings page's data, first render: embed the 1,549 verification images
   with each checkpoint and project them with UMAP (after UMAP's one-time
   warm-up, timed on its own), against a cached re-render (embeddings from the
   in-memory cache, then from the disk cache as after a restart; projections
   from their cache).
2. Integrated Gradients per 64x64 image with Captum's internal batching (all
   interpolation steps in one batch) against one step per forward pass.

3. With ``--data DIR`` (a data set of the course's size, e.g. one made by
   bench/make_large_set.py): what the Embeddings page computes on it, step by step
   : loading the images (decode or data cache, reported
   apart), hashing them, UMAP's warm-up, then per checkpoint the embeddings of
   every image kind the page embeds, the projection of the labelled sample, the
   verification metrics over the pairs; the re-render from the in-memory cache and
   from the disk cache as after a restart; bfloat16 against float32 (AUC); and the
   process's peak RSS, with the load average at each step. ``--page`` instead drives the
   real Embeddings page (Streamlit's AppTest) on the data set and times its runs.

Run: .venv/bin/python bench/explore_speed.py  (uses the demo checkpoints when present)
     .venv/bin/python bench/explore_speed.py --data /tmp/facelab-large/hw2p2 [--checkpoint FOLDER ...]
         [--kind dev|verification] [--faces 5000] [--method umap] [--no-precision-check] [--page]
"""
from __future__ import annotations

import argparse
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


# ----------------------------------------------------------------------------- the course's size

def stamp() -> str:
    """Peak RSS so far (VmHWM) and the load average, for the end of each line."""
    peak = next((int(line.split()[1]) / 1024 for line in Path("/proc/self/status").read_text().splitlines()
                 if line.startswith("VmHWM")), float("nan"))
    return f"[peak RSS {peak:6.0f} MiB, load {os.getloadavg()[0]:.1f}]"


def timed(label: str, work):
    start = time.perf_counter()
    result = work()
    print(f"  {label:52s} {time.perf_counter() - start:8.2f} s  {stamp()}", flush=True)
    return result, time.perf_counter() - start


def chosen_models(args) -> list[explore.ExploreModel]:
    if args.checkpoint:
        return [explore.open_model(folder) for folder in args.checkpoint]
    return models()


def page_data(model, root, kinds, kind, faces, method, images, metrics=True) -> dict:
    """What the Embeddings page computes for one checkpoint (views/embeddings.py and explore_state.py):
    the embeddings of every image kind, the projection of the sample, then the metrics row (kept by
    st.cache_data on a rerun: ``metrics`` False)."""
    times = {}
    raw = {}
    for part in kinds:
        raw[part], times[f"embed {part}"] = timed(
            f"{model.label}: embeddings of {len(images[part].labels):,} {part} images",
            lambda part=part: explore.cached_embeddings(model, images[part].images, None, images[part].fingerprint))
    shown, sample = images[kind].sample(faces)
    _, times["project"] = timed(f"{model.label}: {method.upper()} of {len(sample):,} {kind} faces",
                                lambda: projection.project(explore.unit(raw[kind][sample]), method, 2))
    if metrics:
        _, times["metrics"] = timed(f"{model.label}: metrics ({len(images['pairs'][1]):,} pairs, angles, top-1)",
                                    lambda: metrics_row(model, root, raw, images, kind))
    return times


def metrics_row(model, root, raw, images, kind) -> dict:
    from lib.explore import metrics as explore_metrics
    from lib.explore import scope as explore_scope

    pairs, labels, folds = images["pairs"]
    view = explore_metrics.verification_view(raw["verification"], pairs, labels, folds)
    scope = explore_scope.model_scope(model, root, images["verification"].paths)
    top1 = explore_metrics.dev_top1(model, images["dev"], raw["dev"]) if scope.closed_set else None
    return explore_metrics.metrics_row(view, top1, explore_metrics.angles(raw[kind], images[kind].labels))


def load_images(root: Path, kinds) -> dict:
    from lib.data.datasets import load_pairs

    images = {}
    for part in kinds:
        images[part], _ = timed(f"{part} images (decode, or open the data cache)",
                                lambda part=part: explore.image_choice(root, part))
    pairs = load_pairs(root)
    images["pairs"] = (pairs.pairs.numpy(), pairs.labels.numpy(), None if pairs.folds is None else pairs.folds.numpy())
    for part in kinds:  # the page hashes them once per server (cache key of the embeddings)
        timed(f"hash the {len(images[part].labels):,} {part} images", lambda part=part: images[part].fingerprint)
    return images


def precision_check(chosen, images) -> None:
    """bfloat16 embeddings are used only where they change the verification AUC by less than 0.001."""
    from lib.explore.metrics import verification_view

    pairs, labels, folds = images["pairs"]
    ver = images["verification"]
    print(f"\n[bfloat16 against float32, {len(pairs):,} pairs; bf16 on this CPU: {explore.precision_policy()}]")
    for model in chosen:
        result = {}
        for precision in ("fp32", "bf16"):
            start = time.perf_counter()
            raw = explore.raw_embeddings(model.model, ver.images, model.mean, model.std, precision=precision)
            seconds = time.perf_counter() - start
            result[precision] = (verification_view(raw, pairs, labels, folds).result.auc, seconds)
        (auc32, s32), (auc16, s16) = result["fp32"], result["bf16"]
        print(f"  {model.label:24s} AUC fp32 {auc32:.5f}  bf16 {auc16:.5f}  change {auc16 - auc32:+.5f}   "
              f"{s32 / len(ver.labels) * 1e3:.2f} against {s16 / len(ver.labels) * 1e3:.2f} ms per image", flush=True)


def full_size(args) -> int:
    from lib.explore import scope as explore_scope

    root = args.data.expanduser().resolve()
    kinds = explore_scope.image_kinds(root)
    kind = args.kind or kinds[0]
    print(f"data set {root}; images {kind} (the page embeds {' and '.join(kinds)}); {args.faces:,} faces projected "
          f"with {args.method.upper()}; embeddings in {explore.precision_policy()}; {stamp()}")
    chosen = chosen_models(args)
    images = load_images(root, kinds)
    if args.method == "umap":
        timed("UMAP warm-up (import + numba compile, once per server)", lambda: projection.warm_up_umap().join())
    with tempfile.TemporaryDirectory() as cache:
        os.environ[explore.CACHE_ENV] = cache  # cold disk caches (embeddings, projections), removed afterwards
        renders = {}
        for title, forget in (("first render", False), ("re-render, memory caches (metrics: st.cache_data)", False),
                              ("re-render after a restart, disk caches", True)):
            if forget:
                explore.clear_memory()
                projection.clear_cache()
            print(f"\n[{title}]")
            start = time.perf_counter()
            for model in chosen:
                page_data(model, root, kinds, kind, args.faces, args.method, images, not title.startswith("re-render,"))
            renders[title] = time.perf_counter() - start
        print(f"\n[summary, {len(chosen)} checkpoint(s), image loading and UMAP warm-up excluded]")
        for title, seconds in renders.items():
            print(f"  {title:52s} {seconds:8.2f} s")
        print(f"  {'peak RSS of this process':52s} {stamp()}")
    if not args.no_precision_check:
        precision_check(chosen, images)
    return 0


def page_at_scale(args) -> int:
    """The real Embeddings page (Streamlit's AppTest runs views/embeddings.py as the server would) on
    the data set chosen in the sidebar: first run, a rerun, and a run after a restart (every cache
    in memory emptied, the disk caches kept). UMAP is warmed up first, as the app does at start."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    root = args.data.expanduser().resolve()
    os.environ[config.DATA_ROOTS_ENV] = str(root.parent)  # the sidebar offers data sets under the data roots
    labels = args.label or [name for name, _ in explore.demo_checkpoints()]
    print(f"Embeddings page on {root}, checkpoints {', '.join(labels)}, {args.method.upper()}; {stamp()}")
    if args.method == "umap":
        timed("UMAP warm-up (import + numba compile, once per server)", lambda: projection.warm_up_umap().join())
    with tempfile.TemporaryDirectory() as cache:
        os.environ[explore.CACHE_ENV] = cache
        for title in ("first run", "rerun (caches in memory)", "after a restart (disk caches)"):
            if title.startswith("after"):
                explore.clear_memory()
                projection.clear_cache()
                st.cache_data.clear()
                st.cache_resource.clear()
            app = AppTest.from_file(str(config.PROJECT_ROOT / "views" / "embeddings.py"), default_timeout=3600)
            app.session_state["facelab.data_root"] = str(root)
            app.session_state["embeddings.method"] = args.method
            app.session_state["embeddings.checkpoints"] = labels
            if args.kind:
                app.session_state["embeddings.images"] = args.kind
            timed(f"page, {title}", app.run)
            problems = [e.value for e in app.exception] + [e.value for e in app.error]
            charts, tables = len(app.get("plotly_chart")), len(app.get("dataframe"))
            print(f"    {charts} charts, {tables} tables; problems: {problems or 'none'}", flush=True)
    return 0


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a data set in the HW2P2 layout: time the Embeddings page on it")
    parser.add_argument("--checkpoint", action="append", type=Path, default=[],
                        help="a checkpoint folder (repeat for several; default: the demo checkpoints)")
    parser.add_argument("--kind", choices=("dev", "verification"), help="the page's Images choice "
                        "(default: the page's, dev where the data set has it)")
    parser.add_argument("--faces", type=int, default=config.projected_faces(), help="faces projected")
    parser.add_argument("--method", default="umap", choices=("umap", "pca", "tsne"))
    parser.add_argument("--no-precision-check", action="store_true", help="skip bfloat16 against float32")
    parser.add_argument("--page", action="store_true", help="drive the real Embeddings page on --data instead")
    parser.add_argument("--label", action="append", default=[],
                        help="with --page: a checkpoint as the page lists it (default: the demo checkpoints)")
    return parser.parse_args()


def main() -> int:
    args = arguments()
    torch.manual_seed(0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.1f}")
    if args.data is not None:
        return page_at_scale(args) if args.page else full_size(args)
    chosen = models()
    with tempfile.TemporaryDirectory() as cache:
        os.environ[explore.CACHE_ENV] = cache  # a cold disk cache, removed afterwards
        embeddings_page(chosen)
    integrated_gradients(chosen[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
