"""The numbers a run reports after every epoch, and ``evaluate`` for a saved checkpoint.

Dev accuracy is closed-set identification: the logits come from the loss
module, so a margin-loss model is scored with its own cosine classifier
(s * cos theta, without the margin) and a CE model with its linear classifier.
Verification is open-set: cosine similarity of embeddings of faces never seen
in training, summarised by ROC AUC, EER and TPR at a fixed FPR, and by the spread of the
pairs' cosines ("cosine_spread"), which tells a collapsed embedding (every face alike).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lib.base.config import PROJECT_ROOT
from lib.eval.metrics import cosine_spread, embed, pair_scores, topk_accuracy, verification_metrics
from lib.losses.registry import LOSSES, build_loss
from lib.model.limits import batch_size_within, usage_of
from lib.model.spec import embedding_dim
from lib.store.meta import CheckpointMeta
from lib.train.batches import Normalizer, TrainData, load_train_data


def eval_batch(model: nn.Module, images: torch.Tensor) -> int:
    """The largest evaluation batch (up to 256) whose activations fit the host's limit
    (lib/model/limits.py): a model with wide early layers is evaluated a few images at a time."""
    return batch_size_within(usage_of(model, tuple(images.shape[1:])))


class NonFiniteEmbeddings(ValueError):
    """Some verification embeddings are NaN or infinite (a model that diverged): no metric exists.
    A ValueError, so the evaluate command reports it as an unusable checkpoint."""

    def __init__(self, bad: int, total: int):
        super().__init__(f"the embeddings of {bad} of {total} verification images are NaN or infinite")
        self.bad, self.total = bad, total


@torch.no_grad()
def dev_logits(model: nn.Module, loss_module: nn.Module, data: TrainData, device="cpu",
               channels_last: bool = False) -> torch.Tensor:
    """Identification logits of every dev image, from the loss module (eval mode; modes restored)."""
    normalize = Normalizer(data.mean, data.std)
    modes = (model.training, loss_module.training)
    model.eval()
    loss_module.eval()
    outputs = []
    batch = eval_batch(model, data.dev.images)
    try:
        for start in range(0, len(data.dev), batch):
            images = data.dev.images[start:start + batch]
            labels = data.dev.labels[start:start + batch].to(device)
            x = normalize(images).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            embeddings, logits = model.embed_and_classify(x)
            outputs.append(loss_module(embeddings, logits, labels).logits.float().cpu())
    finally:
        model.train(modes[0])
        loss_module.train(modes[1])
    return torch.cat(outputs)


def evaluate_model(model: nn.Module, loss_module: nn.Module, data: TrainData, device="cpu",
                   flip: bool = False, channels_last: bool = False, confidence_intervals: bool = False) -> dict:
    """{"dev_top1", "dev_top5", "auc", "eer", "tpr_at_fpr_1e-2", ..., "cosine_spread"} (plain floats)
    and "eval_s"; NonFiniteEmbeddings when the model embeds a verification image as NaN or inf."""
    started = time.perf_counter()
    embeddings = embed(model, data.pairs.images, data.mean, data.std, eval_batch(model, data.pairs.images), flip,
                       device)
    bad = int((~torch.isfinite(embeddings).all(dim=1)).sum())
    if bad:
        raise NonFiniteEmbeddings(bad, len(embeddings))
    scores = pair_scores(embeddings, data.pairs.pairs)
    # Bootstrap intervals cost a second per few thousand pairs: asked for by `evaluate`, not every epoch.
    result = verification_metrics(scores, data.pairs.labels, data.pairs.folds, confidence_intervals)
    logits = dev_logits(model, loss_module, data, device, channels_last)
    accuracy = topk_accuracy(logits, data.dev.labels, ks=(1, 5))
    metrics = {"dev_top1": accuracy[1], "dev_top5": accuracy[5]}
    metrics.update(result.summary())
    metrics["cosine_spread"] = cosine_spread(scores)
    metrics["eval_s"] = time.perf_counter() - started
    return metrics


def loss_for_checkpoint(meta: CheckpointMeta, spec, loss_state: dict) -> nn.Module:
    """The loss module a checkpoint was trained with, holding its saved state (e.g. ArcFace weights)."""
    name = meta.loss or "ce"  # a checkpoint that records no loss was trained with cross-entropy
    if name not in LOSSES:
        raise ValueError(f"checkpoint meta names an unknown loss {name!r}")
    params = dict(meta.config.get("loss_params") or {})
    params = {k: v for k, v in params.items() if k in LOSSES[name].params}
    module = build_loss(name, embedding_dim(spec), spec.num_classes, **params)
    if loss_state:
        missing, unexpected = module.load_state_dict(loss_state, strict=False)
        if unexpected:
            raise ValueError(f"loss state has tensors the {name!r} loss does not know: {', '.join(unexpected)}")
    return module


@dataclass
class CheckpointReport:
    folder: Path
    data_root: Path
    pairs_file: str
    metrics: dict
    trained_metrics: dict  # what meta.json recorded at training time


def evaluate_checkpoint(folder, data_root=None, pairs_file: str | None = None, flip: bool = False,
                        device: str = "cpu") -> CheckpointReport:
    """Dev accuracy and verification metrics of a checkpoint folder on a data set (default: the one
    it was trained on, with the same subset, so the numbers match its metrics). ValueError when the
    checkpoint and the data set do not fit together."""
    from lib.store.checkpoint import load_checkpoint
    loaded = load_checkpoint(folder, device=device)
    config = loaded.meta.config
    root = data_root or config.get("data_root")
    if not root:
        raise ValueError(f"{folder}: meta.json names no data set; pass --data ROOT")
    if data_root is None and not Path(root).is_absolute():
        root = PROJECT_ROOT / root  # recorded relative to the project, as recipes write it
    subset = {}
    if data_root is None and pairs_file is None and (config.get("subset") or {}).get("pairs"):
        subset["pairs"] = config["subset"]["pairs"]
    pairs_file = pairs_file or config.get("pairs_file", "val_pairs.txt")
    data = load_train_data(root, pairs_file, subset)
    classes = list(loaded.meta.classes)
    if classes and classes != data.classes and classes == data.classes[:len(classes)]:
        # Trained on the first identities only: score on those.
        data = load_train_data(root, pairs_file, {**subset, "classes": len(classes)})
    if classes and classes != data.classes:
        raise ValueError(f"the checkpoint knows {len(classes)} identities, the data set {data.root} has "
                         f"{data.num_classes} others; identification accuracy needs the same identities")
    loss_module = loss_for_checkpoint(loaded.meta, loaded.spec, loaded.loss_state).to(device)
    metrics = evaluate_model(loaded.model, loss_module, data, device=device, flip=flip, confidence_intervals=True)
    return CheckpointReport(folder=Path(folder), data_root=data.root, pairs_file=pairs_file,
                            metrics=metrics, trained_metrics=dict(loaded.meta.metrics))
