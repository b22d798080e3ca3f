"""The real module's graph, one node per layer a student would draw.

One forward pass on the meta device (shapes only: no memory, milliseconds) records which layer
ran after which and which tensor fed which: forward hooks on the layers, and a TorchFunctionMode
for the sums and products between them (a residual connection, a layer scale). Both are local to
the calling thread, unlike torch.fx's symbolic tracing, which patches nn.Module globally while it
runs and would catch another session's forward pass on a shared server.

FaceLab's LayerNorm2d, squeeze-excite and stochastic depth stay single nodes (a student draws
"SE", not its five layers), so the receptive field and the diagrams read the graph the model
runs, instead of a second description of each block that could drift from it.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from lib.model.blocks import DropPath, LayerNorm2d, SqueezeExcite

DRAWN_WHOLE = (LayerNorm2d, SqueezeExcite, DropPath)
_JOINS = {torch.add: "add", torch.Tensor.add: "add", torch.Tensor.__add__: "add", torch.Tensor.__radd__: "add",
          torch.mul: "mul", torch.Tensor.mul: "mul", torch.Tensor.__mul__: "mul", torch.Tensor.__rmul__: "mul",
          operator.add: "add", operator.mul: "mul"}


@dataclass
class Node:
    name: str                      # the layer's module path ("conv1", "shortcut.0"), "add", "mul", "x", "out"
    kind: str                      # "input" | "layer" | "add" | "mul" | "output"
    inputs: list[str] = field(default_factory=list)
    module: nn.Module | None = None
    scaled: bool = False           # a product with a learned parameter (ConvNeXt's layer scale)


def _is_layer(module: nn.Module) -> bool:
    return isinstance(module, DRAWN_WHOLE) or not any(module.children())


class _Recorder(TorchFunctionMode):
    """Sums and products outside any layer, with the nodes that produced their inputs."""

    def __init__(self, graph: "_Graph"):
        super().__init__()
        self.graph = graph

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if self.graph.inside == 0 and isinstance(result, torch.Tensor):
            self.graph.function(_JOINS.get(func), [a for a in args if isinstance(a, torch.Tensor)], result)
        return result


class _Graph:
    def __init__(self, names: dict[int, str], weights: set[int]):
        self.names, self.weights, self.nodes, self.inside = names, weights, [], 0
        self.outputs: dict[str, str] = {}  # watched module -> the node that made its output
        self.producer: dict[int, str] = {}
        self.kept: list[torch.Tensor] = []  # alive until the end, so no tensor id is reused
        self.counts: dict[str, int] = {}

    def _name(self, base: str) -> str:
        self.counts[base] = self.counts.get(base, 0) + 1
        return base if self.counts[base] == 1 else f"{base}#{self.counts[base]}"

    def _sources(self, tensors) -> list[str]:
        return list(dict.fromkeys(self.producer[id(t)] for t in tensors if id(t) in self.producer))

    def produced(self, tensor: torch.Tensor, node: str) -> None:
        self.kept.append(tensor)
        self.producer[id(tensor)] = node

    def layer(self, module: nn.Module, inputs, output) -> None:
        name = self._name(self.names.get(id(module)) or type(module).__name__)
        self.nodes.append(Node(name, "layer", self._sources(inputs), module))
        if isinstance(output, torch.Tensor):
            self.produced(output, name)

    def function(self, join: str | None, tensors: list[torch.Tensor], result: torch.Tensor) -> None:
        sources = self._sources(tensors)
        if not sources:
            return  # arithmetic on weights alone
        if join is None:  # a reshape or other bookkeeping: the result is its input, as drawn
            self.produced(result, sources[0])
            return
        scope = sources[0].rsplit(".", 1)[0] + "." if "." in sources[0] else ""  # "stages.1.0." of its block
        name = self._name(scope + join)
        scaled = any(id(t) in self.weights for t in tensors)
        self.nodes.append(Node(name, join, sources, scaled=scaled))
        self.produced(result, name)


def layer_graph(module: nn.Module, input_shape: tuple[int, int, int],
                watch: dict[str, nn.Module] | None = None) -> tuple[list[Node], dict[str, str]]:
    """The nodes of one forward pass of ``module`` (on any device; run on meta) on one image of
    ``input_shape`` (C, H, W), in the order they ran, from "x" to "out"; and for each ``watch``ed
    submodule, the node that produced its output."""
    names = {id(m): name for name, m in module.named_modules() if name}
    state = _meta_state(module)
    graph = _Graph(names, {id(tensor) for tensor in state.values()})
    hooks = [part.register_forward_hook(_watcher(graph, label)) for label, part in (watch or {}).items()]
    leaf_root = not any(module.children())  # a single layer is its own one node
    for child in module.modules():
        if (child is not module or leaf_root) and _is_layer(child):
            hooks.append(child.register_forward_pre_hook(lambda m, a: setattr(graph, "inside", graph.inside + 1)))
            hooks.append(child.register_forward_hook(_after(graph)))
    image = torch.empty(1, *input_shape, device="meta")
    graph.nodes.append(Node("x", "input"))
    graph.produced(image, "x")
    was_training = module.training
    try:
        module.eval()
        with _Recorder(graph), torch.no_grad():
            output = functional_call(module, state, (image,))
    finally:
        module.train(was_training)
        for hook in hooks:
            hook.remove()
    graph.nodes.append(Node("out", "output", graph._sources([output])))
    return graph.nodes, graph.outputs


def _watcher(graph: _Graph, label: str):
    def record(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor) and id(output) in graph.producer:
            graph.outputs[label] = graph.producer[id(output)]
    return record


def _after(graph: _Graph):
    def record(module, inputs, output) -> None:
        graph.inside -= 1
        if graph.inside == 0:
            graph.layer(module, inputs, output)
    return record


def _meta_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Storage-less stand-ins for every weight and buffer: the pass runs on shapes alone, whatever
    device the module lives on, and leaves the module itself untouched."""
    state = dict(module.named_parameters())
    state.update(module.named_buffers())
    return {name: torch.empty_like(tensor, device="meta") for name, tensor in state.items()}
