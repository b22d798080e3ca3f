"""What training one batch holds in memory: weights, gradients, optimizer state and the
activations autograd keeps for the backward pass.

The activations are measured, not estimated: the model runs one batch on PyTorch's meta
device (shapes only, no memory, milliseconds) with ``saved_tensors_hooks`` recording every
tensor autograd saves, each counted once and weights left out (they are counted as weights).
That is the same total the real batch keeps on a CPU or a GPU (tests/test_training_memory.py
compares the two), so the Build page can answer "does batch 256 fit on my 16 GB GPU?" for a
model that has never been built.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lib.model.net import FaceNet

BYTES = 4  # float32 weights, gradients and optimizer state
# Tensors the optimizer keeps per weight: SGD's momentum buffer, Adam's two moments.
STATE_PER_WEIGHT = {"sgd": 1, "adam": 2, "adamw": 2}


@dataclass(frozen=True)
class TrainingMemory:
    batch_size: int
    weights: int
    gradients: int
    optimizer_state: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer_state + self.activations


def saved_activation_bytes(model: nn.Module, batch_size: int, in_chs: int, size: int) -> int:
    """Bytes of the tensors autograd saves for backward in one training step of ``model``
    (built on the meta device by the caller) on a batch of ``batch_size`` images."""
    weights = {id(p) for p in model.parameters()}
    kept: dict[int, torch.Tensor] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        base = tensor if tensor._base is None else tensor._base  # a linear layer saves its weight transposed
        if id(base) not in weights:
            kept[id(base)] = base  # a tensor saved by two layers, or as two views, is held once
        return tensor

    model.train()
    images = torch.empty(batch_size, in_chs, size, size, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(images)
    del output
    return sum(tensor.numel() * tensor.element_size() for tensor in kept.values())


def training_memory(spec, batch_size: int, optimizer: str = "sgd", momentum: float = 0.9) -> TrainingMemory:
    """Memory of one training step of FaceNet(spec) at ``batch_size`` (float32, no AMP)."""
    if optimizer not in STATE_PER_WEIGHT:
        raise ValueError(f"optimizer: {optimizer!r} is not one of {', '.join(STATE_PER_WEIGHT)}")
    with torch.device("meta"):
        model = FaceNet(spec)
    params = sum(p.numel() for p in model.parameters())
    states = 0 if optimizer == "sgd" and momentum == 0 else STATE_PER_WEIGHT[optimizer]
    return TrainingMemory(batch_size, params * BYTES, params * BYTES, params * BYTES * states,
                          saved_activation_bytes(model, batch_size, spec.in_chs, spec.input_size))
