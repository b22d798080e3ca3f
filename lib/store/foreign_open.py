"""Open a model made outside FaceLab, in one of three ways, as a ForeignNet.

1. weights only (.pth/.pt/.bin/.safetensors): the architecture is recognised among
   torchvision's (lib/model/zoo.py) from the tensors' names and shapes;
2. an ONNX export (.onnx) of any architecture (lib/store/onnx_model.py);
3. weights plus the model's own code (``model_code="model.py:Network"``), which runs that
   code and is therefore refused when sign-in is on (lib/store/model_code.py).

``open_model_file`` serves the command line (paths, all three ways); ``open_model_bytes``
serves an upload (the first two ways: nothing from an upload is ever run).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from lib.base.files import file_fingerprint
from lib.model import zoo
from lib.model.foreign_net import ForeignNet
from lib.store.foreign import ForeignWeights, read_weights_bytes, read_weights_file
from lib.store.model_code import build_from_code
from lib.store.onnx_model import check_runs, read_onnx_bytes, read_onnx_file

Progress = Callable[[str], None]
DEFAULT_INPUT_SIZE = 112  # HW2P2's faces; callers pass the data set's size when they know it


@dataclass
class OpenedModel:
    net: ForeignNet
    kind: str                      # "torchvision" | "onnx" | "code"
    name: str                      # the file's name
    fingerprint: str               # hash of the file's bytes (cache key)
    recognition: zoo.Recognition | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        return self.net.description


def open_model_file(path, model_code: str | None = None, model_args: dict | None = None, layer: str | None = None,
                    input_size: int = DEFAULT_INPUT_SIZE, limit: int | None = None,
                    progress: Progress | None = None) -> OpenedModel:
    """Open the model at ``path``; ValueError (with what to do instead) when it cannot be opened."""
    path = Path(path)
    say = progress or (lambda message: None)
    if path.suffix.lower() == ".onnx":
        if model_code:
            raise ValueError("an ONNX file holds its architecture: leave out --model-code")
        say(f"converting the ONNX graph of {path.name}")
        module = read_onnx_file(path, limit)
        return _onnx_model(path.name, module, file_fingerprint(path), layer, input_size)
    say(f"reading {path.name}")
    weights = read_weights_file(path, limit)
    if model_code:
        return _code_model(weights, model_code, model_args, layer)
    return _recognised_model(weights, layer, say)


def open_model_bytes(name: str, data: bytes, layer: str | None = None, input_size: int = DEFAULT_INPUT_SIZE,
                     limit: int | None = None, progress: Progress | None = None) -> OpenedModel:
    """As open_model_file for an uploaded file's bytes; never runs code (no --model-code here)."""
    say = progress or (lambda message: None)
    if name.lower().endswith(".onnx"):
        say(f"converting the ONNX graph of {name}")
        module = read_onnx_bytes(name, data, limit)
        return _onnx_model(name, module, hashlib.sha256(data).hexdigest()[:32], layer, input_size)
    return _recognised_model(read_weights_bytes(name, data, limit), layer, say)


def _recognised_model(weights: ForeignWeights, layer: str | None, say: Progress) -> OpenedModel:
    say("recognising the architecture")
    recognition = zoo.recognise(weights.tensors)
    if not recognition.recognised:
        raise ValueError(f"{weights.name}: {recognition.message}")
    model = zoo.build(recognition.name, recognition.num_classes, device="meta")
    load_weights(model, weights, f"torchvision {recognition.name}")
    net = ForeignNet(model.eval(), recognition.message, layer)
    return OpenedModel(net, "torchvision", weights.name, weights.fingerprint, recognition, list(weights.notes))


def _code_model(weights: ForeignWeights, reference: str, model_args: dict | None, layer: str | None) -> OpenedModel:
    model = build_from_code(reference, model_args)
    class_name = type(model).__name__
    load_weights(model, weights, class_name)
    net = ForeignNet(model.eval(), f"{class_name} from {reference} (the model's own code)", layer)
    return OpenedModel(net, "code", weights.name, weights.fingerprint, None, list(weights.notes))


def _onnx_model(name: str, module: nn.Module, fingerprint: str, layer: str | None, input_size: int) -> OpenedModel:
    check_runs(name, module, input_size)
    net = ForeignNet(module, f"ONNX graph {name} ({sum(1 for _ in module.children())} operators)", layer)
    return OpenedModel(net, "onnx", name, fingerprint)


def load_weights(model: nn.Module, weights: ForeignWeights, what: str) -> None:
    """Give ``model`` the file's tensors (names and shapes must match exactly; float32; finite).
    A model built on the meta device takes the tensors themselves (assign), with no copy."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = zoo.shapes_of(weights.tensors)
    if expected != found:
        raise ValueError(mismatch_message(weights.name, what, expected, found))
    tensors = {}
    for key, value in weights.tensors.items():
        if value.is_floating_point():
            if value.dtype != torch.float32:
                value = value.float()
            if not torch.isfinite(value).all():
                raise ValueError(f"{weights.name}: tensor {key!r} holds NaN or infinite values (a model that "
                                 "diverged); nothing can be computed with it")
        tensors[key] = value
    on_meta = any(t.is_meta for t in model.state_dict().values())
    model.load_state_dict(tensors, strict=True, assign=on_meta)
    if any(t.is_meta for t in model.state_dict().values()):
        raise ValueError(f"{weights.name}: {what} keeps tensors its state dict does not hold")


def mismatch_message(name: str, what: str, expected: dict, found: dict) -> str:
    missing = [key for key in expected if key not in found]
    extra = [key for key in found if key not in expected]
    other = [f"{key} {list(found[key])} (expected {list(expected[key])})"
             for key in expected if key in found and found[key] != expected[key]]
    parts = [f"{label} {len(keys)}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
             for label, keys in (("missing", missing), ("unexpected", extra), ("other shape", other)) if keys]
    return f"{name}: the weights do not fit {what}: {'; '.join(parts)}"
