"""Tiny runs shared by the training tests: a small net on a few LFW-64 identities."""
from __future__ import annotations

from lib.train.config import TrainConfig, config_from_run

TINY_MODEL = {
    "name": "tiny_face",
    "stem": {"out_chs": 8, "kernel_size": 3, "stride": 2},
    "stages": [{"block": "basic", "out_chs": 16, "depth": 1, "stride": 2},
               {"block": "basic", "out_chs": 32, "depth": 1, "stride": 2}],
    "head": {"embedding_dim": 32},
    "input_size": 64,
}


def tiny_run(name: str = "tiny", **config) -> dict:
    """A run dict: 10 identities (~90 images), 40 pairs, batch 8, 2 epochs, 1 CPU thread."""
    values = {"epochs": 2, "batch_size": 8, "lr": 0.05, "warmup_epochs": 0.5, "label_smoothing": 0.1,
              "subset": {"classes": 10, "pairs": 40}, "threads": 1, "seed": 3}
    values.update(config)
    return {"name": name, "model": TINY_MODEL, "config": values}


def tiny_config(**config) -> TrainConfig:
    return config_from_run(tiny_run(**config))


def record_loss_labels(trainer) -> list[list[int]]:
    """The labels of every training batch the trainer's loss module is called with, in order (a spy
    on its forward: the real loss still runs). Evaluation calls it too, in eval mode: not recorded."""
    seen: list[list[int]] = []
    forward = trainer.loss_module.forward

    def spy(embeddings, logits, targets):
        if trainer.loss_module.training:
            seen.append(targets.tolist())
        return forward(embeddings, logits, targets)

    trainer.loss_module.forward = spy
    return seen


def identity_counts(labels: list[int]) -> dict[int, int]:
    return {identity: labels.count(identity) for identity in set(labels)}
