"""Exponential moving average of a model's weights.

After each optimizer step: ema = d * ema + (1 - d) * weights. The average
smooths the noise of the last steps, so it usually evaluates a little better
than the raw weights, at no training cost. Early on the decay is lowered to
(1 + n) / (10 + n) so the average is not dominated by the random start.
BatchNorm statistics (buffers) are copied, not averaged.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.decay = float(decay)
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - self.current_decay()  # n = updates done before this one
        self.updates += 1
        ema_params = [p for p in self.module.parameters()]
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, weight)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "decay": self.decay, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
