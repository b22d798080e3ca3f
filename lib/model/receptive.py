"""Receptive field: how many input pixels one output position can see.

Each convolution or pooling layer of kernel k and stride s grows the field by
(k - 1) x jump, where jump is the product of the strides before it: two 3x3
convolutions see 5x5, like one 5x5, with 18 instead of 25 weights per channel
pair. Computed on the real module's graph (lib/model/tracing.py): a residual
sum sees what its widest branch sees. A squeeze-excite gate pools the whole
image, so strictly every position sees everything; like the papers, the field
here is that of the convolution path.
"""
from __future__ import annotations

from typing import NamedTuple

from torch import nn

from lib.model.tracing import Node, layer_graph


class Field(NamedTuple):
    size: int   # pixels of the input seen by one output position (per side)
    jump: int   # input pixels between neighbouring output positions (the product of strides)


def _pair(value) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def _layer_field(module: nn.Module, field: Field) -> Field:
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        kernel, stride = _pair(module.kernel_size), _pair(module.stride)
        dilation = _pair(getattr(module, "dilation", 1))
        return Field(field.size + (kernel - 1) * dilation * field.jump, field.jump * stride)
    return field  # norms, activations, squeeze-excite gates and reshapes keep the field


def node_fields(nodes: list[Node], start: Field = Field(1, 1)) -> dict[str, Field]:
    """The field at every node's output; a sum or a gate sees what its widest input sees."""
    fields: dict[str, Field] = {}
    for node in nodes:
        inputs = [fields[name] for name in node.inputs if name in fields]
        widest = max(inputs) if inputs else start
        fields[node.name] = _layer_field(node.module, widest) if node.kind == "layer" else widest
    return fields


def module_field(module: nn.Module, input_shape: tuple[int, int, int] = (3, 64, 64)) -> Field:
    """The field at ``module``'s output (measured on one ``input_shape`` image: shapes only)."""
    nodes, _ = layer_graph(module, input_shape)
    return node_fields(nodes)["out"]


def stage_fields(model: nn.Module) -> list[Field]:
    """The field after the stem and after each stage of a FaceNet."""
    spec = model.spec
    watch = {"stem": model.stem} | {f"stage{i}": stage for i, stage in enumerate(model.stages)}
    nodes, outputs = layer_graph(model, (spec.in_chs, spec.input_size, spec.input_size), watch)
    fields = node_fields(nodes)
    return [fields[outputs[name]] for name in watch]
