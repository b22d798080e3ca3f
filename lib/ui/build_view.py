"""What the Build page shows about a profile: tables, the cost chart, the budget
gauge, and one block's layers with their formulas. Plain data and plotly figures;
the page only places them.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lib.data.datasets import NotAnImage, declared_size, list_identities, list_images
from lib.model.blocks import BLOCKS, bottleneck_width
from lib.model.counting import Tally
from lib.model.presets import FACE_PRESETS, PRESETS
from lib.model.profile import PartProfile, Profile, StageProfile, count_block, human, shape_text
from lib.model.spec import ModelSpec, StageSpec

HEADER_BYTES = 2**20  # a face image's header (and a JPEG's EXIF before it) lies well within the first MiB

COLORS = {"stem": "#8c8c8c", "head": "#b07aa1", "conv": "#4e79a7", "basic": "#4e79a7", "bottleneck": "#59a14f",
          "inverted_residual": "#f28e2b", "convnext": "#e15759", "dwsep": "#76b7b2"}


def parts_table(result: Profile) -> list[dict]:
    """One row per stem, stage and head: what it is, its output, how it changed the map, what it costs."""
    rows = []
    for part in result.parts():
        stage = part.spec if isinstance(part, StageProfile) else None
        rows.append({
            "part": part.name, "blocks": f"{stage.depth} x {stage.block}" if stage else part.kind,
            "output": shape_text(part.out_shape), "change": shape_change(part.in_shape, part.out_shape),
            "parameters": part.params, "% params": round(100 * part.params / max(result.params, 1), 1),
            "MACs": part.macs, "activations": human(part.activations * 4, "B"),
        })
    return rows


def shape_change(before: tuple[int, ...], after: tuple[int, ...]) -> str:
    """'size ÷2, channels x2': how a part reshapes the feature map (the stage rule of thumb)."""
    if len(after) == 1:
        return f"{before[0]} features -> {after[0]} scores"
    notes = []
    if after[1] != before[1]:
        notes.append(f"size ÷{before[1] / after[1]:.3g}")
    if after[0] != before[0]:
        ratio = after[0] / before[0]
        notes.append(f"channels x{ratio:g}" if ratio in (0.5, 2, 4) else f"{before[0]} -> {after[0]} channels")
    return ", ".join(notes) or "same shape"


def cost_chart(result: Profile) -> go.Figure:
    """Parameters and MACs per part, side by side: where the model's size and its compute go."""
    parts = result.parts()
    names = [part.name for part in parts]
    colors = [COLORS.get(part.spec.block if isinstance(part, StageProfile) else part.kind, "#4e79a7") for part in parts]
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Parameters", "MACs per image"))
    figure.add_bar(x=names, y=[part.params for part in parts], marker_color=colors, row=1, col=1,
                   hovertemplate="%{x}: %{y:,} parameters<extra></extra>")
    figure.add_bar(x=names, y=[part.macs for part in parts], marker_color=colors, row=1, col=2,
                   hovertemplate="%{x}: %{y:,} MACs<extra></extra>")
    figure.update_layout(showlegend=False, height=280, margin=dict(l=10, r=10, t=30, b=10))
    return figure


def budget_gauge(params: int, budget: int) -> go.Figure:
    """Parameters (millions) against the budget: green below 80%, amber up to it, red above."""
    top = max(budget, params) * 1.15 / 1e6
    bar = "#59a14f" if params <= 0.8 * budget else ("#f28e2b" if params <= budget else "#e15759")
    figure = go.Figure(go.Indicator(
        mode="gauge+number", value=params / 1e6, number={"suffix": "M", "valueformat": ".3g"},
        gauge={"axis": {"range": [0, top]}, "bar": {"color": bar},
               "threshold": {"line": {"color": "black", "width": 3}, "value": budget / 1e6}}))
    figure.update_layout(height=150, margin=dict(l=30, r=30, t=10, b=5))
    return figure


def layer_rows(part: PartProfile) -> list[dict]:
    """Each layer of one block: the numbers of its parameter formula (the formulas themselves are in
    layer_formulas), its MACs and its output. Short columns, so the table fits beside the stage
    editor; MACs are rounded (the exact product is spelled out in the convolution-cost note)."""
    prefix = part.name + "."
    return [{"layer": _layer_label(layer.name.removeprefix(prefix), layer.kind),
             "parameters": f"{layer.numbers} = {layer.params:,}" if layer.params else "",
             "MACs": human(layer.macs) if layer.macs else "",
             "output": shape_text(layer.out_shape)} for layer in part.layers]


def layer_formulas(part: PartProfile) -> str:
    """'conv M·N·K², BatchNorm 2·C': the parameter formula of each kind of layer in one block, once."""
    formulas: dict[str, str] = {}
    for layer in part.layers:
        if layer.params:
            formulas.setdefault(layer.formula, _short_kind(layer.kind))
    return ", ".join(f"{kind} {formula}" for formula, kind in formulas.items())


def _layer_label(name: str, kind: str) -> str:
    """'conv1 (conv)', but just 'depthwise' where the name already says what it is."""
    kind = _short_kind(kind)
    return name if kind.split()[0] in name else f"{name} ({kind})"


def _short_kind(kind: str) -> str:
    return kind.replace("pointwise conv", "1x1 conv")


# (label, block, options, curriculum item): the same stage built from other blocks
ALTERNATIVES = [
    ("Conv-BN-act 3x3", "conv", {}, 1),
    ("Depthwise-separable", "dwsep", {}, 3),
    ("ResNet basic block", "basic", {}, 4),
    ("ResNet bottleneck", "bottleneck", {}, 5),
    ("MobileNetV2 inverted residual", "inverted_residual", {}, 7),
    ("ConvNeXt block", "convnext", {}, 8),
    ("Basic block + SE (1/16)", "basic", {"se_ratio": 1 / 16}, 10),
    ("ResNeXt bottleneck 32x4d", "bottleneck", {"groups": 32, "base_width": 4}, 11),
]


def block_alternatives(stage: StageSpec, in_shape: tuple[int, ...]) -> list[dict]:
    """Parameters and MACs of this stage's first block if it were another kind of block."""
    current = _block_cost(stage, in_shape)
    shortcut = lambda block: "yes" if has_shortcut(block, in_shape[0], stage.out_chs, stage.stride) else "no"  # noqa: E731
    rows = [{"block": "this stage", "parameters": current[0], "MACs": current[1],
             "vs this stage": "x1", "shortcut": shortcut(stage.block)}]
    for label, block, options, item in ALTERNATIVES:
        variant = StageSpec(block=block, out_chs=stage.out_chs, depth=1, stride=stage.stride, **options)
        if block == "bottleneck" and bottleneck_width(stage.out_chs, 4, options.get("groups", 1),
                                                      options.get("base_width", 64)) < 1:
            continue  # too narrow for this bottleneck: it would have no channels
        params, macs = _block_cost(variant, in_shape)
        rows.append({"block": f"{item} · {label}", "parameters": params,
                     "MACs": macs, "vs this stage": f"x{params / max(current[0], 1):.2g}",
                     "shortcut": shortcut(block)})
    return rows


def has_shortcut(block: str, in_chs: int, out_chs: int, stride: int) -> bool:
    """Residual blocks keep a shortcut; MobileNetV2's only where the shape does not change."""
    if block == "inverted_residual":
        return stride == 1 and in_chs == out_chs
    return BLOCKS[block].has_residual


def _block_cost(stage: StageSpec, in_shape: tuple[int, ...]) -> tuple[int, int]:
    tally = count_block(Tally(in_shape[0], in_shape[1]), stage, first=True)
    return tally.params, tally.macs


def dataset_image_size(root: str | Path) -> int:
    """The side of a data set's training images, read from the header of its first image (the
    HW2P2 faces are square, and the loader resizes any other size to the first one's); 0 when
    there is no readable image."""
    train = Path(root) / "cls_data" / "train"
    for identity in list_identities(train)[:3]:  # an identity folder with no readable image is skipped
        for entry in list_images(train / identity)[:1]:
            try:
                with open(entry.path, "rb") as handle:
                    height, width = declared_size(handle.read(HEADER_BYTES))
            except (OSError, NotAnImage):
                continue
            return int(max(height, width))
    return 0


def size_for_data(spec: ModelSpec, side: int) -> ModelSpec:
    """The spec with the data set's image size as its input size, so parameters, MACs and shapes are
    those of the images it will see. ImageNet presets keep 224, so their counts still match
    torchvision's; an unreadable data set (side 0) changes nothing."""
    imagenet = spec.name in PRESETS and spec.name not in FACE_PRESETS
    return spec if imagenet or side < 8 else replace(spec, input_size=int(side))
