"""What the app runs on: the device a run asks for, resolved on this machine, and a label
for it in words a student understands."""
from __future__ import annotations

import os
import re

import torch

DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(requested: str = "auto") -> str:
    """The torch device for a requested one: "auto" is the GPU when there is one, else the CPU;
    "cpu", "cuda" and "cuda:N" are returned as they are once this machine is known to have them.
    ValueError (starting "device:") says what is missing and what to ask for instead."""
    if not isinstance(requested, str) or not DEVICE_NAME.fullmatch(requested):
        raise ValueError(f"device: {requested!r} is not one of auto, cpu, cuda, cuda:N")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise ValueError(f"device: {requested!r} was asked for but no GPU is available; use 'auto' or 'cpu'")
    index, count = int(requested.partition(":")[2] or 0), torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"device: {requested!r} was asked for but this machine has {count} GPU(s), "
                         f"cuda:0 to cuda:{count - 1}")
    return requested


def device_label() -> str:
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(0)
        memory = props.total_memory / 2**30
        prefix = f"{count} x " if count > 1 else ""
        return f"GPU: {prefix}{props.name} ({memory:.0f} GiB)"
    cores = os.cpu_count() or 1
    return f"CPU ({cores} cores, no GPU)"
