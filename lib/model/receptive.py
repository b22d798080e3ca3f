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

import operator
from typing import NamedTuple

import torch.fx as fx
from torch import nn

from lib.model.tracing import layer_graph


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
    return field  # norms, activations, squeeze-excite gates and 1x1 reshapes keep the field


def module_field(module: nn.Module, start: Field = Field(1, 1)) -> Field:
    """The field at ``module``'s output, given the field at its input."""
    if not list(module.children()):
        return _layer_field(module, start)  # a single layer traces into a functional call: read it directly
    graph = layer_graph(module)
    modules = dict(graph.named_modules())
    fields: dict[fx.Node, Field] = {}
    result = start
    for node in graph.graph.nodes:
        inputs = [fields[arg] for arg in node.all_input_nodes if arg in fields]
        if node.op == "placeholder":
            fields[node] = start
        elif node.op == "output":
            result = inputs[0] if inputs else start
        elif not inputs:
            continue  # a weight read by get_attr
        elif node.op == "call_module":
            fields[node] = _layer_field(modules[node.target], max(inputs))
        elif node.op == "call_function" and node.target in (operator.add, operator.mul):
            fields[node] = max(inputs)  # a sum or a gate sees what its widest input sees
        else:
            fields[node] = max(inputs)
    return result


def stage_fields(model: nn.Module) -> list[Field]:
    """The field after the stem and after each stage of a FaceNet."""
    field = module_field(model.stem)
    found = [field]
    for stage in model.stages:
        field = module_field(stage, field)
        found.append(field)
    return found
