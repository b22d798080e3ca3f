"""Lessons the Train page shows beside a setting, checked against the course notes: the fine-tuning
note, the margin losses' scale s, and RandAugment's numbers in the ConvNeXt table; and what the
System settings come to on this machine."""
from __future__ import annotations

import math

RANDAUGMENT_NOTE = (
    "**RandAugment (9, 0.5)** in the ConvNeXt table is timm's `rand-m9-mstd0.5`: magnitude 9 on timm's 0-10 "
    "scale, drawn afresh for every operation from a normal distribution with standard deviation 0.5 around 9, "
    "and 2 operations per image (timm's default). torchvision's `RandAugment(num_ops, magnitude, "
    "num_magnitude_bins)` counts differently: `num_ops=2` is the same, but `magnitude` picks one of "
    "`num_magnitude_bins` strength levels (31 by default: 0 to 30), so the table's 9 of 10 is about "
    "`magnitude=27` there (torchvision's default `magnitude=9` is 9 of 30, a third of the maximum), and "
    "torchvision keeps the magnitude fixed: it has no counterpart of the 0.5.")
FINE_TUNE_NOTE = (
    "The model is the checkpoint's own architecture and its weights the starting point. The settings below "
    "are {origin}. Fine-tuning usually needs fewer epochs and a lower learning rate (about a tenth) than "
    "training from scratch.")
SCALE_LESSON = (
    "**Scale s.** The ArcFace and CosFace papers train with s = 64 on 10,000 to 85,000 identities; FaceLab "
    "starts at s = 30, the default of the ArcMarginProduct layer the course points to. On the unit "
    "sphere the logits lie in [−s, s], so s caps how sure the softmax can be. CosFace's bound says what is "
    "enough: to give the true class probability P among C classes needs s ≥ (C−1)/C · ln((C−1)·P/(1−P)); "
    "for the {classes:,} identities here and P = 0.9 that is **s ≥ {bound:.1f}**, so both 30 and 64 clear "
    "it. A larger s sharpens the softmax and the gradients of confident samples fade sooner; a smaller s "
    "keeps more of them learning, but the same margin then moves the probabilities less.")


def scale_lesson(identities: int) -> str:
    """Why s = 30 here and 64 in the papers, with CosFace's lower bound on s for this data set."""
    classes = max(2, int(identities))
    probability = 0.9
    bound = (classes - 1) / classes * math.log((classes - 1) * probability / (1 - probability))
    return SCALE_LESSON.format(classes=classes, bound=bound)


def hardware_note(values: dict) -> str:
    """What the System settings come to on this machine, e.g. "On this machine (the CPU): precision
    bf16 (bf16 units: yes), torch.compile off, augmentation in the loader." """
    from lib.base.device import compile_pays, fast_bf16, resolve_device, resolve_precision
    device = resolve_device("auto")
    precision, problem = resolve_precision(values.get("precision", "auto"), device)
    compiled = compile_pays(values.get("compile_model", "auto"), device)
    where = values.get("augment_on", "auto")
    on_device = where == "device" or (where == "auto" and device.startswith("cuda"))
    place = (f"on the {'GPU' if device.startswith('cuda') else 'CPU'}, a whole batch at a time (in the loader "
             f"if the pipeline has a step without a batched form)") if on_device else "in the loader"
    text = (f"On this machine ({'a GPU' if device.startswith('cuda') else 'the CPU'}, bf16 units: "
            f"{'yes' if fast_bf16(device) else 'no'}): precision **{precision}**, torch.compile "
            f"**{'on' if compiled else 'off'}**, augmentation {place}. The job's log and records say what ran.")
    return text + (f" {problem}." if problem else "")
