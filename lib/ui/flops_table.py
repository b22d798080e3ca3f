"""MACs vs FLOPs (curriculum item 36): the two conventions, and the course's ResNet table recounted.

The course's slides (the ResNet paper's table) and thop call a multiply-add one "FLOP"; FaceLab
counts a multiply-add as one MAC and two FLOPs. The same network therefore reads 1.8 G in the
course and 3.6 G FLOPs in FaceLab. ``resnet_table`` recounts the course's table with torchvision's
models and PyTorch's FlopCounterMode (which counts 2 FLOPs per multiply-add), so a student can see
both conventions side by side with the figures the course quotes.
"""
from __future__ import annotations

import functools

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from lib.model.profile import human

CONVENTIONS = {
    "facelab": "FaceLab (FLOPs = 2 × MACs)",
    "course": "Course, thop (“FLOPs” = MACs)",
}
# The "FLOPs" row of the ResNet table in the course notes (the ResNet paper's Table 1), at 224x224.
COURSE_RESNET_FLOPS = {"resnet18": 1.8e9, "resnet34": 3.6e9, "resnet50": 3.8e9, "resnet101": 7.6e9,
                       "resnet152": 11.3e9}
TABLE_SIZE = 224
CONVENTION_NOTE = (
    "**36 · MACs vs FLOPs.** One multiply-add is one MAC. FaceLab, PyTorch's FlopCounterMode and fvcore's "
    "docs count it as **2 FLOPs** (a multiply and an add); the course's slides, the ResNet paper and thop call "
    "it **one \u201cFLOP\u201d**. Same network, two numbers a factor 2 apart: compare a course figure with "
    "FaceLab's MACs, never with its FLOPs.")
TABLE_NOTE = (
    "Counted now: torchvision's models at 224x224 under FlopCounterMode (2 FLOPs per multiply-add), "
    "parameters from torchvision. In the course's convention the counts match the quoted row to rounding, "
    "except ResNet-50 and deeper: torchvision's bottleneck strides in its 3x3 convolution (\u201cResNet v1.5\u201d), "
    "the paper's in the first 1x1, which costs about 0.3 G more multiply-adds for ResNet-50.")


@functools.lru_cache(maxsize=16)
def count_at_size(name: str, size: int = TABLE_SIZE) -> tuple[int, int]:
    """(parameters, FLOPs as FlopCounterMode counts them) of torchvision's ``name`` on one
    ``size`` x ``size`` image. Built on the meta device: shapes only, no weights in memory; kept,
    since the same model always counts the same."""
    with torch.device("meta"):
        model = torchvision.models.get_model(name, weights=None).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.empty(1, 3, size, size, device="meta"))
    return sum(p.numel() for p in model.parameters()), int(counter.get_total_flops())


def resnet_table(convention: str) -> list[dict]:
    """The course's ResNet table, recounted, in ``convention`` ("course" or "facelab"): exact counts,
    so the page formats them and a test can check them."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: {convention!r} is not one of {', '.join(CONVENTIONS)}")
    rows = []
    for name, quoted in COURSE_RESNET_FLOPS.items():
        params, flops = count_at_size(name)
        macs = flops // 2
        row = {"model": name, "parameters (torchvision)": params, "course's “FLOPs”": int(quoted)}
        if convention == "course":
            row["“FLOPs” counted (= MACs)"] = macs
        else:
            row["MACs counted"] = macs
            row["FLOPs counted (2 × MACs)"] = flops
        row["counted / course"] = round((macs if convention == "course" else flops) / quoted, 2)
        rows.append(row)
    return rows


def compute_label(convention: str, macs: int) -> tuple[str, str, str]:
    """(metric label, value, caption) of one image's compute in ``convention``."""
    if convention == "course":
        return ("“FLOPs” per image (course)", human(macs),
                f"multiply-adds, as the course and thop count them; FaceLab: {human(macs)} MACs = "
                f"{human(2 * macs)} FLOPs")
    return "MACs per image", human(macs), f"1 MAC = 2 FLOPs: {human(2 * macs)} FLOPs"
