"""Editing a ModelSpec the way the Build page does: add, remove and move stages,
change a stage's block, and move values between a spec and a flat dict of fields
(one field per widget). Every function returns a new spec; none validates, so a
half-edited, impossible spec can be shown with its error and fixed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Mapping

from lib.model.blocks import BLOCKS
from lib.model.net import drop_path_rates
from lib.model.presets import FACE_PRESETS, PRESETS
from lib.model.spec import HeadSpec, ModelSpec, StageSpec, StemSpec, stage_output_sizes


@dataclass(frozen=True)
class Field:
    """How to edit one value: label, widget kind ("int", "float", "choice", "bool"), range or choices."""

    label: str
    kind: str
    low: float = 0
    high: float = 0
    step: float = 1
    choices: tuple = ()
    help: str = ""


STAGE_OPTIONS: dict[str, Field] = {
    "expansion": Field("Expansion", "float", 0.25, 16.0, 0.25,
                       help="Hidden width = expansion x channels (MobileNetV2: 6, ConvNeXt: 4, bottleneck: width / 4)."),
    "kernel_size": Field("Kernel", "choice", choices=(1, 3, 5, 7, 9, 11),
                         help="K of the spatial (depthwise) convolution: its weights grow with K²."),
    "groups": Field("Groups", "int", 1, 1024, 1,
                    help="ResNeXt cardinality: the 3x3 conv is split into this many independent groups."),
    "base_width": Field("Group width", "int", 1, 1024, 1,
                        help="ResNeXt: channels per group at base width 64 (32x4d = 32 groups of 4)."),
    "norm": Field("Norm", "choice", choices=("batch", "layer", "group", "instance"),
                  help="BatchNorm normalises each channel over the batch (the course's advice for this "
                       "homework); LayerNorm (ConvNeXt), GroupNorm and InstanceNorm normalise each image "
                       "alone, so they behave the same at batch size 1."),
    "se_ratio": Field("SE ratio", "float", 0.0, 1.0, 0.0625,
                      help="Squeeze-and-excitation: 0 = off; 0.0625 = 1/16 (the SE-ResNet paper), 0.25 = 1/4."),
}

STAGE_FIELDS: dict[str, Field] = {
    "block": Field("Block", "choice", choices=tuple(BLOCKS)),
    "out_chs": Field("Width", "int", 1, 8192, 8, help="Output channels of every block in the stage."),
    "depth": Field("Depth", "int", 1, 64, 1, help="Number of blocks in the stage."),
    "stride": Field("Stride", "choice", choices=(1, 2), help="2 halves the height and width (in the first block)."),
    **STAGE_OPTIONS,
    "drop_path": Field("Drop path", "float", 0.0, 0.9, 0.05,
                       help="Stochastic depth, in training only: each block's residual branch is skipped for "
                            "this share of the images. Shown: the model's rule (0 at the first block, growing to "
                            "the model's rate at the last); change it to set this stage's own rate."),
    "drop_block": Field("DropBlock", "float", 0.0, 0.5, 0.05,
                        help="Training only: zero square patches of the stage's output with this probability. "
                             "Neighbouring pixels carry the same information, so dropping single pixels "
                             "(dropout) hides little; dropping blocks makes the network look elsewhere."),
    "drop_block_size": Field("Block size", "int", 1, 15, 1, help="Side of each dropped square, in pixels "
                             "of the stage's output (the DropBlock paper uses 7 on ImageNet's 14x14 and 7x7 maps)."),
}
REGULARISATION = ("drop_path", "drop_block", "drop_block_size")

MODEL_FIELDS: dict[str, Field] = {
    "input_size": Field("Input size (pixels)", "int", 8, 1024, 8, help="Images are input_size x input_size."),
    "num_classes": Field("Classes", "int", 1, 1_000_000, 1, help="Identities the classifier tells apart."),
    "stem.kind": Field("Stem", "choice", choices=("conv", "patchify")),
    "stem.out_chs": Field("Stem width", "int", 1, 4096, 8),
    "stem.kernel_size": Field("Stem kernel", "int", 1, 15, 1),
    "stem.stride": Field("Stem stride", "int", 1, 8, 1),
    "stem.pool": Field("3x3 max-pool, stride 2", "bool"),
    "head.conv_chs": Field("1x1 conv", "int", 0, 8192, 64,
                           help="Width of a 1x1 conv after the last stage; 0 = none (MobileNetV2 uses 1280)."),
    "head.embedding_dim": Field("Embedding", "int", 0, 8192, 32, help="Size of the embedding: linear + BatchNorm "
                                "after pooling; 0 = the pooled features are the embedding."),
    "head.dropout": Field("Dropout", "float", 0.0, 0.95, 0.05, help="Before the classifier, in training only."),
}


def stage_fields(stage: StageSpec) -> list[str]:
    """The stage's editable fields: the common ones, then the options its block takes."""
    options = [name for name in STAGE_OPTIONS if name in BLOCKS[stage.block].options]
    return ["block", "out_chs", "depth", "stride"] + options + list(REGULARISATION)


def to_fields(spec: ModelSpec) -> dict[str, Any]:
    """{"input_size": 64, "stem.out_chs": 32, "stage0.depth": 2, ...}: every value the Build page edits."""
    values = {name: _typed(MODEL_FIELDS[name], _get(spec, name)) for name in MODEL_FIELDS}
    shown_rates = stage_drop_paths(spec)
    for index, stage in enumerate(spec.stages):
        options = stage.block_options()
        for name in stage_fields(stage):
            value = options[name] if name in STAGE_OPTIONS else getattr(stage, name)
            if name == "drop_path":
                value = shown_rates[index]
            values[f"stage{index}.{name}"] = _typed(STAGE_FIELDS[name], value)
    return values


def stage_drop_paths(spec: ModelSpec) -> list[float]:
    """Each stage's stochastic-depth rate as the Build page shows it: its own, else the highest
    rate the model's linear rule gives its blocks."""
    rates, start, shown = drop_path_rates(spec), 0, []
    for stage in spec.stages:
        shown.append(round(max(rates[start:start + stage.depth], default=0.0), 3))
        start += stage.depth
    return shown


def from_fields(spec: ModelSpec, values: Mapping[str, Any]) -> ModelSpec:
    """``spec`` with the given fields (as named by to_fields) replaced; missing fields keep their value."""
    top = {name: values[name] for name in ("input_size", "num_classes") if name in values}
    stem = replace(spec.stem, **_section(values, "stem."))
    if stem.kind == "patchify":  # non-overlapping patches: the stride is the patch size
        stem = replace(stem, stride=stem.kernel_size)
    head = replace(spec.head, **_section(values, "head."))
    shown_rates = stage_drop_paths(spec)
    stages = tuple(_stage_from_fields(stage, values, f"stage{index}.", shown_rates[index])
                   for index, stage in enumerate(spec.stages))
    return replace(spec, stem=stem, head=head, stages=stages, **top)


def _stage_from_fields(stage: StageSpec, values: Mapping[str, Any], prefix: str, shown_rate: float) -> StageSpec:
    changes = _section(values, prefix)
    changes.pop("block", None)  # changing the block goes through change_block (it resets options)
    if "drop_path" in changes and abs(changes["drop_path"] - shown_rate) < 1e-9:
        changes.pop("drop_path")  # the rate shown is the model's rule: leave the stage following it
    allowed = BLOCKS[stage.block].options
    return replace(stage, **{name: value for name, value in changes.items() if name in STAGE_FIELDS
                             and (name not in STAGE_OPTIONS or name in allowed)})


def change_block(spec: ModelSpec, index: int, block: str) -> ModelSpec:
    """Stage ``index`` with another block type: options the new block does not take are dropped,
    the others go back to the new block's defaults (an SE ratio is kept where it applies)."""
    stage = _stage_at(spec, index)
    if block not in BLOCKS:
        raise ValueError(f"stages[{index}].block: {block!r} is not one of {', '.join(BLOCKS)}")
    keep_se = stage.se_ratio if "se_ratio" in BLOCKS[block].options else None
    new = StageSpec(block=block, out_chs=stage.out_chs, depth=stage.depth, stride=stage.stride, se_ratio=keep_se)
    return _with_stage(spec, index, new)


def change_stem_kind(spec: ModelSpec, kind: str) -> ModelSpec:
    """A conv stem (3x3, stride 1, BN, ReLU) or a ConvNeXt patchify stem (4x4 patches, LayerNorm),
    keeping the stem's width."""
    if kind == "patchify":
        stem = StemSpec(kind="patchify", out_chs=spec.stem.out_chs, kernel_size=4, stride=4, act="none")
    elif kind == "conv":
        stem = StemSpec(kind="conv", out_chs=spec.stem.out_chs, kernel_size=3, stride=1, act="relu")
    else:
        raise ValueError(f"stem.kind: {kind!r} is not one of conv, patchify")
    return replace(spec, stem=stem)


def add_stage(spec: ModelSpec) -> ModelSpec:
    """Append a stage like the last one that halves the size and doubles the width
    (the usual rule), or keeps both when the map is already down to 2x2 or less."""
    if not spec.stages:
        return replace(spec, stages=(StageSpec(block="basic", out_chs=spec.stem.out_chs, depth=1, stride=1),))
    last, size = spec.stages[-1], stage_output_sizes(spec)[-1]
    stride = 2 if size > 2 else 1
    return replace(spec, stages=spec.stages + (replace(last, out_chs=min(last.out_chs * stride, 8192), stride=stride),))


def remove_stage(spec: ModelSpec, index: int) -> ModelSpec:
    """Remove this stage; the next one takes its input."""
    _stage_at(spec, index)
    return replace(spec, stages=spec.stages[:index] + spec.stages[index + 1:])


def move_stage(spec: ModelSpec, index: int, offset: int) -> ModelSpec:
    """Move this stage up or down; swaps stage ``index`` with its neighbour ``offset`` (-1 up, +1 down)."""
    _stage_at(spec, index)
    target = index + offset
    if not 0 <= target < len(spec.stages):
        return spec
    stages = list(spec.stages)
    stages[index], stages[target] = stages[target], stages[index]
    return replace(spec, stages=tuple(stages))


def blank_spec() -> ModelSpec:
    """The smallest sensible start: a 3x3 conv stem and one conv stage, for 64x64 faces."""
    return ModelSpec(name="my_model", stem=StemSpec(kind="conv", out_chs=32, kernel_size=3, stride=1),
                     stages=(StageSpec(block="conv", out_chs=32, depth=1, stride=1),),
                     head=HeadSpec(embedding_dim=0), input_size=64, num_classes=298)


def classes_for_data(spec: ModelSpec, identities: int) -> ModelSpec:
    """The spec with one class per identity of the training data (Train sizes the classifier that
    way too). ImageNet presets keep their 1000 classes, so their counts still match torchvision's;
    an empty or unreadable data set (0 identities) changes nothing."""
    imagenet = spec.name in PRESETS and spec.name not in FACE_PRESETS
    return spec if imagenet or identities < 1 else replace(spec, num_classes=int(identities))


def file_stem(spec: ModelSpec) -> str:
    """A safe file name for downloads: 'face resnet (edited)' -> 'face_resnet_edited'."""
    return re.sub(r"[^A-Za-z0-9]+", "_", spec.name).strip("_") or "model"


def error_field(message: str) -> str:
    """'stages[1].stride: ...' -> 'stages[1].stride', the field a ValueError from validate() names."""
    head = message.split(":", 1)[0]
    return head if re.fullmatch(r"[A-Za-z_][\w.\[\]]*", head) else ""


def field_label(field: str) -> str:
    """'stages[3].stride' -> 'Stage 4 > Stride': a field as the Build page labels it."""
    match = re.fullmatch(r"stages\[(\d+)\]\.(\w+)", field)
    if match:
        name = STAGE_FIELDS[match[2]].label if match[2] in STAGE_FIELDS else match[2]
        return f"Stage {int(match[1]) + 1} > {name}"
    return MODEL_FIELDS[field].label if field in MODEL_FIELDS else field


def _stage_at(spec: ModelSpec, index: int) -> StageSpec:
    if not 0 <= index < len(spec.stages):
        raise ValueError(f"stages: no stage {index} (the model has {len(spec.stages)})")
    return spec.stages[index]


def _with_stage(spec: ModelSpec, index: int, stage: StageSpec) -> ModelSpec:
    return replace(spec, stages=spec.stages[:index] + (stage,) + spec.stages[index + 1:])


def _section(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {name[len(prefix):]: value for name, value in values.items() if name.startswith(prefix)}


def _get(spec: ModelSpec, dotted: str) -> Any:
    value: Any = spec
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _typed(field: Field, value: Any) -> Any:
    """Widgets insist on one numeric type: floats for float fields, ints for int fields."""
    if field.kind == "float":
        return float(value)
    if field.kind == "int":
        return int(value)
    return value
