"""What the app runs on, in words a student understands."""
from __future__ import annotations

import os

import torch


def best_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_label() -> str:
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        props = torch.cuda.get_device_properties(0)
        memory = props.total_memory / 2**30
        prefix = f"{count} x " if count > 1 else ""
        return f"GPU: {prefix}{props.name} ({memory:.0f} GiB)"
    cores = os.cpu_count() or 1
    return f"CPU ({cores} cores, no GPU)"
