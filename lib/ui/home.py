"""Facts the home page shows, gathered without Streamlit."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from lib.base import config
from lib.store.meta import META_FILE, peek_meta
from lib.ui.pages import PAGES, PageInfo

# The lesson's order: plain cross-entropy first, then the margin losses fine-tuned from it.
LESSON_ORDER = ("ce", "arcface", "cosface", "sphereface")


def workflow_steps() -> list[PageInfo]:
    """Every page but home whose file exists, in workflow order."""
    return [p for p in PAGES if p.path != "views/home.py" and (config.PROJECT_ROOT / p.path).exists()]


def demo_summary() -> list[dict]:
    """One row per shipped demo checkpoint with its headline metrics (from its meta.json), in the
    lesson's order of their losses (CE, ArcFace, CosFace, SphereFace; any other after them)."""
    rows = []
    for meta_path in sorted(config.CHECKPOINTS_DIR.glob(f"*/{META_FILE}")):
        meta = peek_meta(meta_path.parent)
        if meta is None:
            continue
        rows.append({
            "checkpoint": meta_path.parent.name,
            "loss": meta.loss or "?",
            "dev top-1": _fmt(meta.metrics.get("dev_top1")),
            "verification AUC": _fmt(meta.metrics.get("auc")),
            "EER": _fmt(meta.metrics.get("eer")),
        })
    rank = {loss: index for index, loss in enumerate(LESSON_ORDER)}
    return sorted(rows, key=lambda row: (rank.get(row["loss"], len(rank)), row["checkpoint"]))


def face_strip(root: str | Path, count: int = 8, seed: int = 0) -> list[tuple[np.ndarray, str]]:
    """(H x W x 3 uint8 picture, identity) of ``count`` training faces of different people, drawn
    with ``seed`` (the same faces every visit). Only the chosen files are decoded; a data set that
    cannot be read gives an empty strip."""
    from lib.data.datasets import decode_file, list_identities, list_images
    train = Path(root) / "cls_data" / "train"
    rng = random.Random(seed)
    identities = list_identities(train)
    faces = []
    for identity in rng.sample(identities, min(count, len(identities))):
        image = decode_file(Path(rng.choice(list_images(train / identity)).path))
        if image is not None:  # a corrupt file is skipped, as the data loader skips it
            faces.append((image.permute(1, 2, 0).contiguous().numpy(), identity))
    return faces


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"
