"""Models the Explore tests run on: the shipped demo checkpoints when they are
present, otherwise randomly initialised face presets (so the tests still run
on a fresh clone before the demos are trained)."""
from __future__ import annotations

import shutil
from dataclasses import dataclass

import torch

from lib.base import config
from lib.model.net import FaceNet
from lib.model.presets import PRESETS

DEMO_NAMES = ("demo-ce", "demo-arcface", "demo-cosface", "demo-sphereface")
RANDOM_PRESETS = ("face_resnet", "face_mobilenet", "face_convnext")


@dataclass
class ModelInfo:
    label: str
    model: FaceNet
    mean: tuple
    std: tuple
    class_weights: torch.Tensor | None


def demo_folders() -> list:
    folders = [config.CHECKPOINTS_DIR / name for name in DEMO_NAMES]
    return [f for f in folders if (f / "model.safetensors").exists()]


def explore_models() -> list[ModelInfo]:
    folders = demo_folders()
    if folders:
        from lib.explore.models import load_model
        return [ModelInfo(folder.name, *load_model(folder)) for folder in folders]
    infos = []
    for seed, name in enumerate(RANDOM_PRESETS):
        torch.manual_seed(seed)
        infos.append(ModelInfo(f"random-{name}", _like_trained(FaceNet(PRESETS[name])).eval(),
                               (0.5, 0.42, 0.38), (0.27, 0.24, 0.24), None))
    return infos


def _like_trained(model: FaceNet) -> FaceNet:
    """Give every norm layer non-trivial statistics and shifts. Freshly initialised, a ReLU net
    without biases is positively homogeneous (embed(a*x) = a*embed(x)), which makes the cosine
    of a pair flat along Integrated Gradients' path: nothing like a trained model."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    return model


def face_images(count: int, split: str = "dev") -> tuple[torch.Tensor, torch.Tensor]:
    """The first image of ``count`` different identities of the embedded data (uint8, labels)."""
    from lib.data.datasets import load_split
    image_set = load_split(config.EMBEDDED_DATA, split)
    picks, seen = [], set()
    for index, label in enumerate(image_set.labels.tolist()):
        if label not in seen:
            seen.add(label)
            picks.append(index)
        if len(picks) == count:
            break
    return image_set.images[picks], image_set.labels[picks]


def make_mini_dataset(dest, identities: int = 8, pairs: int = 40):
    """A small copy of LFW-64 in the HW2P2 layout: the dev images of ``identities`` people with
    several dev images (train keeps one image each, for the class order), and the first ``pairs``
    lines of val_pairs.txt with their images. Real files, real decoding; a few seconds to embed."""
    source = config.EMBEDDED_DATA
    dev_root = source / "cls_data" / "dev"
    people = sorted(p.name for p in dev_root.iterdir() if len(list(p.iterdir())) >= 3)[:identities]
    for name in people:
        for split, limit in (("dev", None), ("train", 1)):
            (dest / "cls_data" / split / name).mkdir(parents=True)
            for image in sorted((source / "cls_data" / split / name).iterdir())[:limit]:
                shutil.copy(image, dest / "cls_data" / split / name / image.name)
    lines = (source / "val_pairs.txt").read_text().splitlines()
    chosen = lines[:pairs // 2] + lines[-(pairs - pairs // 2):]  # the file lists same pairs, then different
    (dest / "ver_data").mkdir(parents=True)
    for line in chosen:
        for rel in line.split()[:2]:
            shutil.copy(source / rel, dest / rel)
    (dest / "val_pairs.txt").write_text("\n".join(chosen) + "\n")
    return dest


def small_spec(width: int = 8, classes: int = 298):
    from dataclasses import replace
    base = PRESETS["face_resnet"]
    stages = tuple(replace(s, out_chs=width * 2**i) for i, s in enumerate(base.stages))
    return replace(base, name="small_resnet", stem=replace(base.stem, out_chs=width), stages=stages,
                   head=replace(base.head, embedding_dim=32), num_classes=classes)


def _calibrated(model: FaceNet, meta_normalize) -> FaceNet:
    """Set the embedding's BatchNorm statistics from real faces, as training would: a random
    network maps every face near one common direction (all cosines ~0.99); centring the
    embedding spreads the cosines like a trained model's, so score ties cannot decide a test."""
    from lib.data.datasets import load_split
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in meta_normalize)
    images = load_split(config.EMBEDDED_DATA, "train").images[:256].float() / 255
    with torch.no_grad():
        pooled = model.pool(model.features((images - mean) / std)).flatten(1)
        features = model.embedding[0](model.pool_norm(pooled))
        norm = model.embedding[1]
        norm.running_mean.copy_(features.mean(0))
        norm.running_var.copy_(features.var(0) + 1e-5)
        norm.bias.zero_()
    return model


def make_runs(runs_dir) -> list[str]:
    """Two runs with a best checkpoint each (CE and ArcFace), small random networks whose norm
    layers look trained, registered as user "alice"'s jobs; returns the labels the Explore pages
    give them ("<run name> (<user>)")."""
    from lib.data.datasets import load_split
    from lib.losses.registry import build_loss
    from lib.store.checkpoint import save_checkpoint

    classes = load_split(config.EMBEDDED_DATA, "train").classes
    labels = []
    for seed, loss in enumerate(("ce", "arcface")):
        torch.manual_seed(seed)
        model = _calibrated(_like_trained(FaceNet(small_spec())).eval(), meta_normalize=((0.5, 0.42, 0.38),
                                                                                       (0.27, 0.24, 0.24)))
        head = build_loss(loss, 32, len(classes)) if loss != "ce" else None
        meta = {"classes": classes, "loss": loss, "epoch": 3, "normalize": {"mean": [0.5, 0.42, 0.38],
                "std": [0.27, 0.24, 0.24]}, "metrics": {"dev_top1": 0.01 * (seed + 1), "auc": 0.6}}
        run = runs_dir / f"r{seed}-{loss}"
        save_checkpoint(run / "best", model, meta, loss_module=head)
        (run / "metrics.jsonl").write_text("".join(
            f'{{"epoch": {e}, "train_loss": {5 - e}, "dev_top1": {0.01 * e}, "auc": {0.5 + 0.03 * e}}}\n'
            for e in (1, 2, 3)))
        (run / "config.json").write_text(f'{{"name": "mini-{loss}"}}')
        labels.append(f"mini-{loss} (alice)")
    _register_jobs(runs_dir, [(f"r{seed}-{loss}", f"mini-{loss}") for seed, loss in enumerate(("ce", "arcface"))])
    return labels


def _register_jobs(runs_dir, jobs: list[tuple[str, str]], user: str = "alice") -> None:
    """Finished jobs in the runs folder's real job registry, as the Train page leaves them."""
    import sqlite3
    import time

    from lib.jobs.queue import JobQueue
    queue = JobQueue(runs_dir)
    with sqlite3.connect(queue.db_path) as conn:
        conn.executemany("INSERT INTO jobs (id, name, user, state, created) VALUES (?, ?, ?, 'done', ?)",
                         [(job_id, name, user, time.time()) for job_id, name in jobs])


FOLDS = 4
PAIRS = 40  # 20 same-person pairs, then 20 different-person pairs (the embedded file's order)


def make_verification_only(dest, pairs: int = PAIRS, folds: int = FOLDS):
    """LFW-64's first and last pairs with their images, each line given a fold (round robin, so every
    fold holds both kinds of pair): ver_data/ and val_pairs.txt, nothing else."""
    lines = (config.EMBEDDED_DATA / "val_pairs.txt").read_text().splitlines()
    chosen = lines[:pairs // 2] + lines[-(pairs - pairs // 2):]
    (dest / "ver_data").mkdir(parents=True)
    for line in chosen:
        for rel in line.split()[:2]:
            shutil.copy(config.EMBEDDED_DATA / rel, dest / rel)
    numbered = [f"{line} {index % folds + 1}" for index, line in enumerate(chosen)]
    (dest / "val_pairs.txt").write_text("\n".join(numbered) + "\n")
    return dest
