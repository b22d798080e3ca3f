"""Recognise a torchvision architecture from the names and shapes of a state dict's tensors.

A student's HW2P2 model often is a torchvision network with its own number of classes,
saved as ``torch.save(model.state_dict(), ...)``. The file holds no code and no class
name, only tensors; so each candidate constructor is built on the meta device (no memory,
no initialisation cost) with ``num_classes`` read from the file's final Linear, and its
full ``{name: shape}`` map is compared with the file's. Only an exact match counts as
recognised: a file that differs in one tensor is reported with its closest candidate.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Mapping

import torch
import torchvision.models as tvm
from torch import nn
from torch.overrides import TorchFunctionMode
from torchvision.models import regnet

FAMILIES: dict[str, tuple[str, ...]] = {
    "ResNet": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    "ResNeXt": ("resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d"),
    "Wide ResNet": ("wide_resnet50_2", "wide_resnet101_2"),
    "MobileNetV2": ("mobilenet_v2",),
    "MobileNetV3": ("mobilenet_v3_small", "mobilenet_v3_large"),
    "ConvNeXt": ("convnext_tiny", "convnext_small", "convnext_base"),
    "EfficientNet": ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2"),
    "RegNet": ("regnet_x_400mf", "regnet_x_800mf", "regnet_x_1_6gf", "regnet_x_3_2gf", "regnet_x_8gf",
               "regnet_x_16gf", "regnet_x_32gf", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf",
               "regnet_y_3_2gf", "regnet_y_8gf", "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf"),
}
CANDIDATES: dict[str, str] = {name: family for family, names in FAMILIES.items() for name in names}
OTHER_WAYS = ("export it to ONNX (torch.onnx.export(model, example, 'model.onnx', external_data=False)) and open "
              "the .onnx file, or give the model's own code with --model-code path/model.py:ClassName")
_REGNET_LOCK = threading.Lock()


@dataclass(frozen=True)
class Recognition:
    """What a state dict was found to be. ``name`` is a torchvision constructor name when
    ``recognised``; otherwise the closest candidate, ``differences`` tensors away."""
    recognised: bool
    name: str
    family: str
    num_classes: int
    differences: int
    message: str


def build(name: str, num_classes: int, device: str | torch.device | None = None) -> nn.Module:
    """The torchvision model ``name`` with ``num_classes`` outputs (random weights), on ``device``."""
    if name not in CANDIDATES:
        raise ValueError(f"unknown architecture {name!r}; FaceLab knows {', '.join(CANDIDATES)}")
    builder = getattr(tvm, name)
    on_meta = str(device) == "meta"
    with torch.device(device or "cpu"), _regnet_widths_on_cpu(name, on_meta), \
            (_SkipInitOnMeta() if on_meta else contextlib.nullcontext()):
        return builder(num_classes=num_classes)


class _SkipInitOnMeta(TorchFunctionMode):
    """Random initialisation of a tensor on the meta device changes nothing (it holds no values) yet
    costs as much as the real thing through torch's reference implementations: skip it."""
    SKIPPED = {torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.fill_, torch.Tensor.zero_,
               torch.Tensor.erfinv_, torch.Tensor.clamp_, torch.Tensor.mul_, torch.Tensor.add_}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.SKIPPED and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _regnet_widths_on_cpu(name: str, on_meta: bool):
    """torchvision computes a RegNet's stage widths with tensor arithmetic and ``.tolist()``,
    which the meta device cannot do: compute those few numbers on the CPU, the layers on meta."""
    if not name.startswith("regnet_") or not on_meta:
        yield
        return
    original = regnet.BlockParams.__dict__["from_init_params"]

    def on_cpu(cls, *args, **kwargs):
        with torch.device("cpu"):
            return original.__func__(cls, *args, **kwargs)

    with _REGNET_LOCK:
        regnet.BlockParams.from_init_params = classmethod(on_cpu)
        try:
            yield
        finally:
            regnet.BlockParams.from_init_params = original


@lru_cache(maxsize=None)
def _reference(name: str) -> tuple[str, dict[str, tuple[int, ...]]]:
    """(final Linear's module path, {tensor name: shape}) of ``name`` built once with 1000 classes."""
    model = build(name, 1000, device="meta")
    return last_linear_name(model), {key: tuple(value.shape) for key, value in model.state_dict().items()}


def classifier_name(name: str) -> str:
    """Module path of the final Linear of a candidate ("fc", "classifier.1", "classifier.3", ...)."""
    return _reference(name)[0]


def shape_map(name: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of ``name``'s state dict (parameters and buffers) with ``num_classes``.
    In torchvision's classifiers the number of classes sizes the final Linear only, so the map is
    built once per architecture and that layer's two shapes are set (a test checks it against real builds)."""
    linear, shapes = _reference(name)
    shapes = dict(shapes)
    shapes[f"{linear}.weight"] = (num_classes, shapes[f"{linear}.weight"][1])
    shapes[f"{linear}.bias"] = (num_classes,)
    return shapes


def last_linear_name(model: nn.Module) -> str:
    """The name of the last nn.Linear in the module's registration order ("" when there is none)."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return names[-1] if names else ""


def shapes_of(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


def count_differences(expected: Mapping[str, tuple], found: Mapping[str, tuple]) -> int:
    """Tensors missing, extra, or of another shape."""
    missing_or_other = sum(1 for key, shape in expected.items() if found.get(key) != shape)
    extra = sum(1 for key in found if key not in expected)
    return missing_or_other + extra


def classes_for(name: str, found: Mapping[str, tuple]) -> int:
    """The number of classes the file's tensors give the candidate's final Linear (1000 if absent)."""
    shape = found.get(f"{classifier_name(name)}.weight")
    return int(shape[0]) if shape is not None and len(shape) == 2 and shape[0] > 0 else 1000


def looks_like_facenet(found: Mapping[str, tuple]) -> bool:
    """FaceLab's own FaceNet (lib/model/net.py): "stem." layers and a "classifier" Linear at the top level."""
    return any(key.startswith("stem.") for key in found) and "classifier.weight" in found


def recognise(state: Mapping[str, torch.Tensor],
              progress: Callable[[str], None] | None = None) -> Recognition:
    """Compare the state dict with every candidate; an exact {name: shape} match is recognised."""
    found = shapes_of(state)
    if looks_like_facenet(found):
        return Recognition(False, "facenet", "FaceLab FaceNet", int(found["classifier.weight"][0]), 0,
                           "these are the weights of a FaceLab FaceNet, whose blocks and widths come from its spec: "
                           "the spec is not in this file. Open the checkpoint folder (model.safetensors with its "
                           "meta.json) instead")
    best: tuple[int, str, int] | None = None
    for name, family in CANDIDATES.items():
        if progress:
            progress(name)
        num_classes = classes_for(name, found)
        differences = count_differences(shape_map(name, num_classes), found)
        if differences == 0:
            return Recognition(True, name, family, num_classes, 0,
                               f"torchvision {name} ({family}) with {num_classes} classes")
        if best is None or differences < best[0]:
            best = (differences, name, num_classes)
    differences, name, num_classes = best
    tried = ", ".join(FAMILIES)
    return Recognition(False, name, CANDIDATES[name], num_classes, differences,
                       f"the weights match no architecture FaceLab knows (tried {tried}). The closest is "
                       f"torchvision {name}, with {differences} of {len(found)} tensors missing, extra or of "
                       f"another shape. To open it anyway, {OTHER_WAYS}")
