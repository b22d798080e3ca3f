"""Learning-rate schedule: linear warm-up, then cosine decay (per optimizer step).

Warm-up starts at lr/100 rather than 0 so the first step already moves; the
cosine then falls from lr to lr * min_ratio at the last step. The factor is a
pure function of the step, so a resumed run continues on the same curve.
"""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

WARMUP_START = 0.01


class WarmupCosine:
    """step -> factor of the base learning rate."""

    def __init__(self, total_steps: int, warmup_steps: int, min_ratio: float = 0.0, cosine: bool = True):
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps - 1))
        self.min_ratio = float(min_ratio)
        self.cosine = cosine

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return WARMUP_START + (1.0 - WARMUP_START) * step / self.warmup_steps
        if not self.cosine:
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps - 1)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: Optimizer, total_steps: int, warmup_steps: int,
                   min_ratio: float = 0.0, cosine: bool = True) -> LambdaLR:
    return LambdaLR(optimizer, WarmupCosine(total_steps, warmup_steps, min_ratio, cosine))
