"""How a run uses the machine it lands on: memory layout, precision, torch.compile and where
batches are augmented. Each is decided from the run's config and the device it trains on; a
choice that differs from what the config asked for comes with a sentence that says why (the
Trainer shows it as a warning)."""
from __future__ import annotations

import torch
from torch import nn

from lib.base.device import compile_pays, resolve_precision
from lib.model.spec import ModelSpec
from lib.model.warnings import channels_last_crash_layers


def channels_last_choice(asked: bool, spec: ModelSpec, device: str) -> tuple[bool, str]:
    """(train in channels_last?, why not when asked). PyTorch on CPU crashes (no Python error) on
    some 1x1 stride-2 convs in channels_last: such a model trains in the default layout instead of
    losing the job."""
    if not asked or device != "cpu":
        return asked, ""
    layers = channels_last_crash_layers(spec)
    if not layers:
        return True, ""
    return False, (f"channels_last turned off: PyTorch on CPU crashes in the backward pass of "
                   f"{', '.join(layers[:3])} (1x1 stride-2 convolutions on fewer than 16 channels)")


def precision_parts(requested: str, device: str):
    """(precision that runs, autocast dtype or None, loss scaler or None, why it differs from the request)."""
    precision, problem = resolve_precision(requested, device)
    if precision == "fp32":
        return precision, None, None, problem
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None  # bf16 needs no loss scaling
    return precision, dtype, scaler, problem


def augment_on_device(requested: str, device: str, batched: bool) -> tuple[bool, str]:
    """(do batches leave the loader as uint8, to be augmented on the training device?, why not when
    asked). On a GPU that spares the CPU the augmentation and moves a quarter of the bytes."""
    if requested == "auto":
        return device.startswith("cuda") and batched, ""
    if requested == "device" and not batched:
        return False, ("augment_on: this pipeline has no batched form (policies and RandomPerspective run image "
                       "by image), so it is augmented in the loader")
    return requested == "device", ""


def compiled_forward(model: nn.Module, requested: str, device: str):
    """The training forward pass through torch.compile when it pays here (see compile_pays), else
    None (eager). Only training steps use it: their batch shape never changes (the last short
    batch is dropped), so it compiles once; evaluation stays eager."""
    if not compile_pays(requested, device):
        return None
    return torch.compile(model.embed_and_classify, dynamic=False)
