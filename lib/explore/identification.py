"""Identification (which of the training identities a face is) over many images, a block of
images at a time: nothing as large as images x classes is ever held."""
from __future__ import annotations

import numpy as np
import torch

from lib.eval.metrics import topk_accuracy
from lib.explore.models import ExploreModel, class_scores

# Images scored against every class at once: the scores of 14,000 dev images and 7,000 identities
# would take 392 MB in one matrix, a block of 1,024 images 29 MB.
SCORE_ROWS = 1024


def identification_accuracy(explore_model: ExploreModel, raw: np.ndarray, targets, ks=(1,)) -> dict:
    """{k: share of images whose class ``targets`` is among their k best classes} by class_scores,
    a block of SCORE_ROWS images at a time (lib.eval.metrics.topk_accuracy on each block)."""
    targets = torch.as_tensor(targets)
    if len(raw) == 0 or len(raw) != len(targets):
        raise ValueError(f"identification needs one target per embedding, got {len(targets)} for {len(raw)}")
    hits = dict.fromkeys(ks, 0.0)
    for start in range(0, len(raw), SCORE_ROWS):
        rows = slice(start, start + SCORE_ROWS)
        block = topk_accuracy(class_scores(explore_model, raw[rows]), targets[rows], ks)
        for k in ks:
            hits[k] += block[k] * len(targets[rows])
    return {k: hits[k] / len(targets) for k in ks}


def best_classes(explore_model: ExploreModel, raw: np.ndarray) -> list[int]:
    """Each embedding's highest-scoring class, a block of SCORE_ROWS images at a time."""
    return [int(c) for start in range(0, len(raw), SCORE_ROWS)
            for c in class_scores(explore_model, raw[start:start + SCORE_ROWS]).argmax(dim=1)]
