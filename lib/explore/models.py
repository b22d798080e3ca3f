"""What the Explore pages compute: checkpoints opened for exploring, the images to
embed, embeddings cached on disk, and the numbers compared side by side.

Embedding 1,549 verification images takes a CPU tens of seconds per model, so
embeddings are cached in ``.cache/embeddings`` keyed by the *content* of the
weights and of the images: a retrained checkpoint or a changed data set is
embedded again, anything else is read back in milliseconds (across sessions and
restarts).
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.base import config
from lib.base.files import atomic_save_npy, file_fingerprint
from lib.base.threads import one_thread
from lib.jobs.queue import job_users
from lib.losses.margins import MarginHead
from lib.losses.registry import LOSSES
from lib.model.limits import batch_size_within, check_explorable, usage_of
from lib.model.net import FaceNet
from lib.store.checkpoint import MODEL_FILE, load_checkpoint
from lib.store.meta import CheckpointMeta, read_meta
from lib.store.run_folder import RunFolder

CACHE_ENV = "FACELAB_CACHE_DIR"
DEMO_NAMES = ("demo-ce", "demo-arcface", "demo-cosface", "demo-sphereface")
_MEMORY: OrderedDict[str, np.ndarray] = OrderedDict()
_MEMORY_LOCK = threading.Lock()
_MEMORY_ENTRIES = 48
SAMPLE_TOP = 16  # identities a projection sample always holds whole: the page colors up to 16
_NAME_NUMBER = re.compile(r"^(?P<name>.+)_\d{4}$")


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV, "").strip()
    return Path(configured).expanduser() if configured else config.PROJECT_ROOT / ".cache" / "embeddings"


# ----------------------------------------------------------------------------- models

@dataclass
class ExploreModel:
    """A checkpoint ready to explore: its model, how to normalize its input, its class scores.
    ``model`` is a FaceNet, or a ForeignNet (lib/model/foreign_net.py) for a model made elsewhere,
    which has no meta.json (``meta`` None) and is described by ``source`` (an OpenedModel)."""
    label: str
    folder: Path
    model: nn.Module
    meta: CheckpointMeta | None
    mean: tuple
    std: tuple
    class_weights: torch.Tensor | None  # a margin head's [classes, D] weights; None: the model's classifier
    fingerprint: str                    # hash of the weights file (cache key)
    source: object | None = None        # lib.store.foreign_open.OpenedModel of a model made elsewhere

    @property
    def loss(self) -> str:
        # a checkpoint that records no loss (and a model made elsewhere) is read as cross-entropy's
        return (self.meta.loss if self.meta else None) or "ce"

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes) if self.meta else []

    @property
    def num_classes(self) -> int:
        return self.model.num_classes


def margin_class_weights(meta: CheckpointMeta, loss_state: dict) -> torch.Tensor | None:
    """A margin-loss model decides classes with its loss head's normalized weights (saved in
    loss.safetensors), not with its own never-trained classifier."""
    info = LOSSES.get(meta.loss or "ce")
    if info is None or not issubclass(info.cls, MarginHead):
        return None
    weight = loss_state.get("weight")
    return weight.float() if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None


def normalization(meta: CheckpointMeta) -> tuple[tuple, tuple]:
    if meta.normalize is not None:
        return meta.normalize.mean, meta.normalize.std
    from lib.data.datasets import channel_stats  # old checkpoints: the embedded data's statistics
    return channel_stats(config.EMBEDDED_DATA)


def open_model(folder, label: str | None = None) -> ExploreModel:
    """Load a checkpoint folder for exploring; ValueError (from lib.store.checkpoint) if it is unusable,
    weights holding NaN or inf included, and ResourceRefused (lib.model.limits) for a model too big for
    this host's limits, checked on paper before anything is built: the pages show the message instead
    of a traceback."""
    folder = Path(folder)
    check_explorable(read_meta(folder).spec)
    loaded = load_checkpoint(folder)
    mean, std = normalization(loaded.meta)
    return ExploreModel(label or folder.name, folder, loaded.model, loaded.meta, mean, std,
                        margin_class_weights(loaded.meta, loaded.loss_state), file_fingerprint(folder / MODEL_FILE))


def load_model(folder) -> tuple[FaceNet, tuple, tuple, torch.Tensor | None]:
    """(model, mean, std, class_weights): what lib.eval.saliency needs."""
    opened = open_model(folder)
    return opened.model, opened.mean, opened.std, opened.class_weights


def demo_checkpoints() -> list[tuple[str, Path]]:
    """The shipped demo checkpoints that are present, in the order CE, ArcFace, CosFace, SphereFace."""
    folders = [(name, config.CHECKPOINTS_DIR / name) for name in DEMO_NAMES]
    return [(name, folder) for name, folder in folders if (folder / MODEL_FILE).is_file()]


def short_labels(found: list[tuple[str, Path]], runs_dir: Path) -> dict[str, str]:
    """label -> folder with labels short enough for a tag or a panel title: a demo keeps its
    name ("demo-ce"); a run's best checkpoint is "<run name> (<user>)", plus the end of the run's
    id when one user ran the same name twice."""
    users = job_users(runs_dir)
    labels: dict[str, str] = {}
    for label, folder in found:
        folder = Path(folder)
        run = RunFolder(folder.parent)
        if folder == run.best:
            user = users.get(run.id, "")
            label = (run.run_name() or run.id) + (f" ({user})" if user else "")
            if label in labels:
                label = f"{label} {run.id[-4:]}"
            if label in labels:
                label = f"{label} {run.id}"
        labels[label] = str(folder)
    return labels


# ----------------------------------------------------------------------------- images

class SampledImages:
    """The images of a sample, read from the whole set's tensor (often memory-mapped) only when
    asked for: the page shows a few of them, and a copy of 5,000 faces at 112x112 takes 188 MB.
    Indexed like the tensor it stands for: ``[i]``, ``[rows]`` or ``[rows, ...]``."""

    def __init__(self, images, index: np.ndarray):
        index = np.asarray(index, dtype=np.int64)
        if isinstance(images, SampledImages):  # a sample of a sample reads from the whole set too
            images, index = images.base, images.index[index]
        self.base, self.index = images, index

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple:
        return (len(self.index), *self.base.shape[1:])

    def __getitem__(self, key):
        rows, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        picked = self.index[rows]  # IndexError past the end, so iterating stops there
        if np.ndim(picked) == 0:
            return self.base[(int(picked), *rest)]
        return self.base[torch.as_tensor(picked)][(slice(None), *rest)]


@dataclass
class ImageChoice:
    """Images to embed and draw: the dev split (closed set) or the verification images (open set)."""
    kind: str                # "dev" | "verification"
    images: torch.Tensor | SampledImages  # uint8 [N, C, H, W]
    labels: np.ndarray       # [N] index into names
    names: list[str]
    paths: list[str]

    @cached_property
    def fingerprint(self) -> str:
        return images_fingerprint(self.images)

    def sample(self, limit: int, seed: int = 0) -> tuple["ImageChoice", np.ndarray]:
        """At most ``limit`` of these images (all when there are fewer) with their labels and their
        indices here, kept in their order: projections and scatter plots of tens of thousands of
        faces take minutes and show a blur, a sample of a few thousand shows the same structure.

        Stratified by identity, so that the picture still shows clusters: whole identities, the
        SAMPLE_TOP with the most images first (those the page colors), then the others in an order
        fixed by ``seed``, each with all its images while they fit; a random 5,000 of HW2P2's 14,000
        dev images (two per identity) would leave most identities a single dot."""
        if limit <= 0 or len(self.labels) <= limit:
            return self, np.arange(len(self.labels))
        counts = np.bincount(self.labels, minlength=len(self.names))
        top = self.top_identities(SAMPLE_TOP)
        rest = np.setdiff1d(np.flatnonzero(counts), top)
        order = np.concatenate([np.asarray(top, dtype=np.int64), np.random.default_rng(seed).permutation(rest)])
        fits = np.cumsum(counts[order]) <= limit  # whole identities in order, up to the first that does not fit
        taken = np.isin(self.labels, order[fits] if fits.all() else order[:np.argmin(fits)])
        room = limit - int(taken.sum())  # the rest: images of the next identities, a few of one or more
        if room:
            position = np.empty(len(self.names), dtype=np.int64)
            position[order] = np.arange(len(order))
            left = np.flatnonzero(~taken)
            taken[left[np.argsort(position[self.labels[left]], kind="stable")[:room]]] = True
        chosen = np.flatnonzero(taken)
        part = ImageChoice(self.kind, SampledImages(self.images, chosen), self.labels[chosen], self.names,
                           [self.paths[i] for i in chosen])
        return part, chosen

    def top_identities(self, count: int) -> list[int]:
        """The ``count`` identities with the most images here (ties by name)."""
        counts = np.bincount(self.labels, minlength=len(self.names))
        order = sorted(range(len(self.names)), key=lambda c: (-int(counts[c]), self.names[c]))
        return [c for c in order[:count] if counts[c] > 0]


def identity_of(path: str) -> str:
    """"ver_data/Abdullah_Gul_0013.jpg" -> "Abdullah_Gul" (LFW names); other names: the file stem."""
    stem = Path(path).stem
    match = _NAME_NUMBER.match(stem)
    return match.group("name") if match else stem


def image_choice(root, kind: str) -> ImageChoice:
    from lib.data.datasets import load_pairs, load_split

    if kind == "dev":
        split = load_split(root, "dev")
        return ImageChoice("dev", split.images, split.labels.numpy(), list(split.classes), list(split.paths))
    if kind == "verification":
        pairs = load_pairs(root)
        identities = [identity_of(p) for p in pairs.paths]
        names = sorted(set(identities))
        index = {name: i for i, name in enumerate(names)}
        labels = np.array([index[n] for n in identities], dtype=np.int64)
        return ImageChoice("verification", pairs.images, labels, names, list(pairs.paths))
    raise ValueError(f"images: choose 'dev' or 'verification', got {kind!r}")


# ----------------------------------------------------------------------------- embeddings

def images_fingerprint(images: torch.Tensor) -> str:
    # Chunk by chunk, without a copy: a memory-mapped HW2P2 set is gigabytes (same digest as one update).
    digest = hashlib.sha256()
    for chunk in images.contiguous().split(1024):
        digest.update(memoryview(chunk.numpy()))
    return digest.hexdigest()[:32]


# Images per forward pass. On one CPU thread small batches stay in the cache: for a 4-stage
# ResNet at 112x112, 32 images took 3.6 ms each in float32 against 6.7 ms in batches of 256.
EMBED_BATCH = 32
PRECISION_ENV = "FACELAB_EMBED_PRECISION"  # "fp32" turns bfloat16 off; anything else: "auto"
# bfloat16 is used only where the first batch's embeddings agree with float32's this well (cosine,
# every image): a model whose numbers bfloat16 cannot carry falls back to float32 by itself.
BF16_AGREEMENT = 0.999


def precision_policy() -> str:
    """"bf16" where this CPU computes bfloat16 natively (AMX or AVX-512 BF16, which made embedding
    3x faster at AUC changes below 0.0002 on the demo checkpoints) and no one asked for float32;
    else "fp32". Part of the cache key: the two give embeddings that differ in the 4th digit."""
    if os.environ.get(PRECISION_ENV, "").strip().lower() == "fp32":
        return "fp32"
    return "bf16" if _cpu_has_bf16() else "fp32"


@functools.cache
def _cpu_has_bf16() -> bool:
    try:  # PyTorch's own test of the CPU (a private function: a build without it counts as "no")
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _embed_batch(model: nn.Module, batch: torch.Tensor, bf16: bool, channels_last: bool = True) -> np.ndarray:
    # channels_last: oneDNN's convolutions read NHWC without a reorder (about 10% faster in float32,
    # and what its bfloat16 kernels want).
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model.embed(batch).float().numpy()


def _agrees(bf16: np.ndarray, fp32: np.ndarray) -> bool:
    if not (np.isfinite(bf16).all() and np.isfinite(fp32).all()):
        return False
    return bool(np.min(np.sum(unit(bf16) * unit(fp32), axis=1)) >= BF16_AGREEMENT)


def raw_embeddings(model: FaceNet, images: torch.Tensor, mean, std,
                   progress: Callable[[float], None] | None = None, precision: str | None = None) -> np.ndarray:
    """Unnormalized embeddings [N, D] (eval mode, no gradients, one thread), reporting progress in
    [0, 1] about every percent. ``precision`` (default: precision_policy()):

    - "bf16": bfloat16 when the first batch agrees with float32 to BF16_AGREEMENT, else float32;
      "fp32": float32; both channels-last in batches of EMBED_BATCH;
    - "reference": float32 as lib.eval.metrics.embed computes it (the largest batches within this
      host's limit, contiguous), bit for bit: the numbers of evaluate and of a submission.

    No batch writes more activations than this host's limit allows (lib.model.limits)."""
    if precision not in (None, "bf16", "fp32", "reference"):
        raise ValueError(f"precision must be 'bf16', 'fp32' or 'reference', got {precision!r}")
    precision = precision or precision_policy()
    reference = precision == "reference"
    batch_size = batch_size_within(usage_of(model, tuple(images.shape[1:])))
    batch_size = batch_size if reference else min(EMBED_BATCH, batch_size)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    model.eval()
    chunks, reported, bf16 = [], 0.0, precision == "bf16"
    with torch.inference_mode(), one_thread():
        for start in range(0, len(images), batch_size):
            batch = (images[start:start + batch_size].float() / 255.0 - mean_t) / std_t
            values = _embed_batch(model, batch, bf16, channels_last=not reference)
            if bf16 and start == 0:
                exact = _embed_batch(model, batch, False)
                bf16 = _agrees(values, exact)
                values = values if bf16 else exact
            chunks.append(values)
            done = min(1.0, (start + batch_size) / len(images))
            if progress and (done - reported >= 0.01 or done == 1.0):
                reported = done
                progress(done)
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def cached_embeddings(explore_model: ExploreModel, images: torch.Tensor,
                      progress: Callable[[float], None] | None = None, images_key: str | None = None,
                      precision: str | None = None) -> np.ndarray:
    """raw_embeddings, from memory, else the disk cache, else computed (keyed by weights, pixels and
    precision; ``images_key`` saves hashing the pixels again when the caller knows their fingerprint;
    ``precision`` as raw_embeddings takes it: "reference" for numbers that leave FaceLab)."""
    precision = precision or precision_policy()
    key = hashlib.sha256(f"{explore_model.fingerprint}|{images_key or images_fingerprint(images)}|"
                         f"{explore_model.mean}|{explore_model.std}|{precision}".encode()).hexdigest()[:40]
    with _MEMORY_LOCK:
        if key in _MEMORY:
            _MEMORY.move_to_end(key)
            return _MEMORY[key]
    values = _read_cache(cache_dir() / f"{key}.npy", len(images))
    if values is None:
        values = raw_embeddings(explore_model.model, images, explore_model.mean, explore_model.std, progress,
                                precision)
        _save_atomic(cache_dir() / f"{key}.npy", values)
    values.setflags(write=False)  # shared between sessions
    with _MEMORY_LOCK:
        _MEMORY[key] = values
        while len(_MEMORY) > _MEMORY_ENTRIES:
            _MEMORY.popitem(last=False)
    return values


def _read_cache(path: Path, rows: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        cached = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # a damaged cache file is recomputed
    return cached if cached.ndim == 2 and cached.shape[0] == rows else None


def clear_memory() -> None:
    with _MEMORY_LOCK:
        _MEMORY.clear()


def _save_atomic(path: Path, values: np.ndarray) -> None:
    try:
        atomic_save_npy(path, values)
    except OSError:
        pass  # a read-only or full disk only costs the cache, never the result


def unit(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (as torch's F.normalize: a zero row stays zero)."""
    values = np.asarray(embeddings, dtype=np.float32)
    return values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)


def class_scores(explore_model: ExploreModel, raw: np.ndarray) -> torch.Tensor:
    """Identification scores [N, classes]: the margin head's cosines or the classifier's logits.
    For many images use identification_accuracy or best_classes, which score a block at a time."""
    embeddings = torch.as_tensor(raw, dtype=torch.float32)
    if explore_model.class_weights is not None:
        return F.normalize(embeddings, dim=1) @ F.normalize(explore_model.class_weights, dim=1).t()
    with torch.inference_mode():
        return explore_model.model.classifier(embeddings)
