"""Parameters and MACs of any nn.Module, per layer and per top-level block, counted on the real module.

FaceLab's own models are counted on paper (lib/model/profile.py); a model made elsewhere
has no spec, so its forward pass is run once on one image under
``torch.utils.flop_counter.FlopCounterMode``, which records the FLOPs of every
convolution, matrix product and attention call per module. Convention as everywhere in
FaceLab: MACs are multiply-accumulates, 1 MAC = 2 FLOPs; elementwise work is not counted.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lib.base.config import PARAMETER_BUDGET

OTHER = "(other)"  # parameters held and MACs done by the model itself, outside its children


@dataclass(frozen=True)
class Row:
    name: str            # module path ("layer1", "layer1.0.conv1")
    kind: str            # the module's class name
    params: int
    macs: int
    out_shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModuleProfile:
    params: int
    macs: int
    input_size: int
    blocks: tuple[Row, ...]   # top-level children (+ OTHER when needed): they add up to the totals
    layers: tuple[Row, ...]   # leaf modules with parameters or MACs

    def budget_verdict(self, budget: int = PARAMETER_BUDGET) -> str:
        share = 100 * self.params / budget
        verdict = "within" if self.params <= budget else "OVER"
        return f"{self.params:,} parameters: {share:.1f}% of the {budget:,} budget ({verdict} it)"

    def within_budget(self, budget: int = PARAMETER_BUDGET) -> bool:
        return self.params <= budget

    def to_dict(self) -> dict:
        def row(item: Row) -> dict:
            return {"name": item.name, "kind": item.kind, "params": item.params, "macs": item.macs,
                    "out_shape": list(item.out_shape)}
        return {"params": self.params, "macs": self.macs, "input_size": self.input_size,
                "within_budget": self.within_budget(), "budget": PARAMETER_BUDGET,
                "blocks": [row(b) for b in self.blocks], "layers": [row(layer) for layer in self.layers]}


def unique_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def profile_module(model: nn.Module, input_size: int, in_chs: int = 3) -> ModuleProfile:
    """Count ``model`` on one ``in_chs`` x ``input_size`` x ``input_size`` image (eval mode, no gradients,
    on the device of its parameters); its training mode is restored. ValueError if the forward fails."""
    device = next(model.parameters(), torch.empty(0)).device
    counter = FlopCounterMode(display=False, depth=None)
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [child.register_forward_hook(_shape_recorder(name, shapes)) for name, child in model.named_children()]
    was_training = model.training
    model.eval()
    try:
        with counter, torch.no_grad():
            model(torch.zeros(1, in_chs, input_size, input_size, device=device))
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ValueError(f"the model does not run on a {in_chs}x{input_size}x{input_size} image: {err}") from None
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    flops = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(model).__name__
    total_macs = counter.get_total_flops() // 2
    blocks = [Row(name, type(child).__name__, unique_params(child), flops.get(f"{root}.{name}", 0) // 2,
                  shapes.get(name, ())) for name, child in model.named_children()]
    total_params = unique_params(model)
    rest_params = total_params - sum(b.params for b in blocks)
    rest_macs = total_macs - sum(b.macs for b in blocks)
    if rest_params or rest_macs:  # parameters or matrix products of the model's own forward
        blocks.append(Row(OTHER, root, rest_params, rest_macs))
    layers = [Row(name, type(module).__name__, unique_params(module), flops.get(f"{root}.{name}", 0) // 2)
              for name, module in model.named_modules()
              if name and not any(module.children())]
    layers = [layer for layer in layers if layer.params or layer.macs]
    return ModuleProfile(total_params, total_macs, input_size, tuple(blocks), tuple(layers))


def _shape_recorder(name: str, shapes: dict):
    def record(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            shapes[name] = tuple(output.shape[1:])
    return record
