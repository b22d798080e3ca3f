"""Verification (and, where the classes fit, dev identification) numbers of a model made outside FaceLab.

The same functions as for FaceLab's checkpoints (lib/eval/metrics.py) on the data set's
pairs. A foreign model carries no record of how its training normalized the pixels, so the
caller says it; the default is the course notebook's ``Normalize([0.5]*3, [0.5]*3)``.
Dev accuracy needs the model's classes to be the data set's identities: it is computed only
when the model has exactly as many outputs as the data set has training identities (the
HW2P2 notebook's ImageFolder orders classes by sorted folder name, as FaceLab does).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from lib.data.datasets import load_split
from lib.data.pairs import load_pairs
from lib.eval.metrics import classify, cosine_spread, topk_accuracy, verify

COURSE_MEAN = (0.5, 0.5, 0.5)
COURSE_STD = (0.5, 0.5, 0.5)


@dataclass
class ForeignReport:
    data_root: Path
    pairs_file: str
    metrics: dict
    notes: list[str] = field(default_factory=list)


def evaluate_foreign(net, data_root, pairs_file: str = "val_pairs.txt", mean=COURSE_MEAN, std=COURSE_STD,
                     flip: bool = False, device: str = "cpu",
                     progress: Callable[[str], None] | None = None) -> ForeignReport:
    """Metrics of ``net`` (a ForeignNet or anything with embed/forward/num_classes) on ``data_root``."""
    say = progress or (lambda message: None)
    root = Path(data_root).resolve()
    pairs = load_pairs(root, pairs_file)
    say(f"embedding {len(pairs.images)} verification images of {root.name}")
    result, scores = verify(net, pairs, mean, std, flip=flip, device=device)
    if not torch.isfinite(scores).all():
        raise ValueError("the model embeds some verification images as NaN or infinite values: no metric exists")
    metrics = result.summary()
    metrics["cosine_spread"] = cosine_spread(scores)
    notes = [f"pixels normalized with mean {tuple(mean)} and std {tuple(std)} (change with --mean/--std to "
             "match the model's training)"]
    notes += _dev_accuracy(net, root, mean, std, device, metrics, say)
    return ForeignReport(root, pairs_file, metrics, notes)


def _dev_accuracy(net, root: Path, mean, std, device, metrics: dict, say) -> list[str]:
    """Adds dev_top1/dev_top5 to ``metrics`` when the classes fit; returns a note when they do not."""
    if not (root / "cls_data" / "dev").is_dir():
        return ["no cls_data/dev in the data set: no identification accuracy"]
    dev = load_split(root, "dev")
    classes = len(dev.classes)
    if net.num_classes != classes:
        return [f"no identification accuracy: the model has {net.num_classes} classes, the data set "
                f"{classes} identities"]
    say(f"classifying {len(dev.images)} dev images")
    logits = classify(net, dev.images, mean, std, device=device)
    accuracy = topk_accuracy(logits, dev.labels, ks=(1, 5))
    metrics["dev_top1"], metrics["dev_top5"] = accuracy[1], accuracy[5]
    return []
