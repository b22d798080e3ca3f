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


# -- precision ----------------------------------------------------------------------------------

def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them in /proc/cpuinfo; empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def fast_bf16(device: str) -> bool:
    """Whether bf16 autocast makes training faster on ``device``: a GPU with bf16 arithmetic
    (Ampere and later), or a CPU with AMX bf16 matrix units (Sapphire Rapids and later), where the
    demo net's training step measured 1.9x faster at 64 px and 2.4x at 112 px than in fp32. CPUs
    without them convert to fp32 and back for every layer, which is slower than fp32."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    return "amx_bf16" in cpu_flags()


def resolve_precision(requested: str, device: str) -> tuple[str, str]:
    """(the precision a run trains in on ``device``, a sentence when that is not what was asked for).

    "auto" is bf16 where it is fast (see fast_bf16), else fp16 with loss scaling on a GPU and fp32
    on a CPU; fp16 needs a GPU; bf16 is honoured everywhere, with a warning where it is slow."""
    on_gpu = torch.device(device).type == "cuda"
    if requested == "auto":
        if fast_bf16(device):
            return "bf16", ""
        return ("fp16", "") if on_gpu else ("fp32", "")
    if requested == "fp16" and not on_gpu:
        return "fp32", "precision: fp16 needs a GPU; training in fp32 on the CPU"
    if requested == "bf16" and not fast_bf16(device):
        return "bf16", (f"precision: bf16 is emulated on this {'GPU' if on_gpu else 'CPU'} (no bf16 units), "
                        f"so it trains slower than fp32; choose auto or fp32")
    return requested, ""


def compile_pays(requested: str, device: str) -> bool:
    """Whether a run compiles its training forward pass with torch.compile: "on" and "off" as asked;
    "auto" on a GPU, where fused kernels save memory traffic, and not on a CPU, where compiling the
    demo net took minutes for a few percent."""
    if requested == "auto":
        return torch.device(device).type == "cuda"
    return requested == "on"
