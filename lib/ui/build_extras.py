"""The Build page's second look at a model: its drawing, what each stage sees, what a training
batch holds in memory, and which classic networks fit the budget at the homework's size.
Plain data and text for views/build.py; every number comes from lib/model."""
from __future__ import annotations

import pandas as pd
import torch

from lib.model.blocks import ConvNeXtBlock, InvertedResidual
from lib.model.diagram import block_dot
from lib.model.memory import TrainingMemory
from lib.model.net import FaceNet
from lib.model.presets import budget_rows
from lib.model.profile import human
from lib.model.receptive import stage_fields
from lib.model.spec import ModelSpec

MIB = 2 ** 20


def receptive_rows(spec: ModelSpec) -> pd.DataFrame:
    """One row per part: the input pixels one position sees, and the stride so far (built on meta: no memory)."""
    with torch.device("meta"):
        fields = stage_fields(FaceNet(spec))
    names = ["stem"] + [f"stage{index + 1}" for index in range(len(spec.stages))]
    rows = []
    for name, field in zip(names, fields):
        sees = "the whole face" if field.size >= spec.input_size else f"{field.size / spec.input_size:.0%} of the side"
        rows.append({"part": name, "receptive field": f"{field.size}x{field.size} px", "jump": field.jump,
                     "sees": sees})
    return pd.DataFrame(rows)


RECEPTIVE_NOTE = ("**34 · Receptive field.** Each k x k layer widens what one output position sees by "
                  "(k - 1) x jump input pixels, where the jump is the product of the strides before it. "
                  "Two stacked 3x3 convolutions see 5x5, as one 5x5 does, with 18 instead of 25 weights "
                  "per channel pair and a non-linearity between them; each stride 2 doubles how fast "
                  "the field grows after it. A face needs its last stage to see all of it.")


def memory_rows(memory: TrainingMemory) -> pd.DataFrame:
    parts = [("weights", memory.weights, "float32, 4 bytes per parameter"),
             ("gradients", memory.gradients, "one per weight"),
             ("optimizer state", memory.optimizer_state, "SGD momentum: 1 per weight; AdamW: 2"),
             (f"activations for backward (batch {memory.batch_size})", memory.activations,
              "what autograd keeps from the forward pass"),
             ("total", memory.total, "before the framework's own workspace")]
    return pd.DataFrame([{"part": name, "MiB": round(value / MIB, 1), "why": why} for name, value, why in parts])


MEMORY_NOTE = ("Training holds far more than the weights: a gradient per weight, the optimizer's state, "
               "and every activation the backward pass needs, which grows with the batch. Activations "
               "dominate for CNNs on images; that is why a batch that fits for inference can run out of "
               "memory in training, and why mixed precision (half the bytes) allows larger batches.")


def budget_table(budget: int) -> pd.DataFrame:
    rows = budget_rows(budget)
    return pd.DataFrame([{"preset": row["preset"], "input": row["input"], "classes": row["classes"],
                          "parameters": human(row["parameters"]), "MACs": human(row["MACs"]),
                          "budget": "fits" if row["within budget"] else "over"} for row in rows])


BUDGET_NOTE = ("**35 · The homework's setting.** With 7,000 identities the classifier alone holds "
               "7,000 x (features + 1) weights: 14.3M after ResNet-50's 2,048 features. That is why "
               "ResNet-50 (37.9M) and SE-ResNet-50 (40.4M) break the 35M budget at 112 px while "
               "ConvNeXt-T (33.2M, 768 features) fits. A smaller embedding before the classifier is the "
               "usual way out.")


def slide_blocks(channels: int = 64) -> tuple[str, str]:
    """MobileNetV2's inverted residual and ConvNeXt's block at the same width, drawn from real modules
    (the slides' side-by-side comparison)."""
    return (block_dot(InvertedResidual(channels, channels, expansion=6), f"MobileNetV2 inverted residual, {channels} ch"),
            block_dot(ConvNeXtBlock(channels, channels), f"ConvNeXt block, {channels} ch"))


SLIDE_NOTE = ("**8 · MobileNetV2 vs ConvNeXt.** Both widen then narrow around a depthwise convolution. "
              "MobileNetV2 expands first (x6), filters 3x3 depthwise, projects back, with BatchNorm after each "
              "convolution and an activation after the first two. ConvNeXt filters first, with a 7x7 depthwise "
              "convolution on the narrow features, then expands x4 and projects back, with one LayerNorm and "
              "one GELU in the whole block.")
