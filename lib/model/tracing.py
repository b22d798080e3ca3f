"""The real module's graph, one node per layer a student would draw.

torch.fx traces a block into its calls. FaceLab's LayerNorm2d, squeeze-excite
and stochastic depth stay single nodes (a student draws "SE", not its five
layers), so the receptive field and the diagrams read the same graph the model
runs, instead of a second description of each block that could drift from it.
"""
from __future__ import annotations

import torch.fx as fx
from torch import nn

from lib.model.blocks import DropPath, LayerNorm2d, SqueezeExcite

DRAWN_WHOLE = (LayerNorm2d, SqueezeExcite, DropPath)


class _LayerTracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, DRAWN_WHOLE) or super().is_leaf_module(module, qualified_name)


def layer_graph(module: nn.Module) -> fx.GraphModule:
    """An fx graph of ``module`` whose call_module nodes are its drawn layers."""
    return fx.GraphModule(module, _LayerTracer().trace(module))
