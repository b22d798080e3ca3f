"""An ONNX export of any architecture, turned into a differentiable torch module without running its code.

An ONNX file is a protobuf graph of standard operators plus the weights: reading it
runs nothing from the file. onnx2pytorch rebuilds the graph as an ``nn.Module`` made of
torch layers (a ``Gemm`` becomes an ``nn.Linear``, a ``Conv`` an ``nn.Conv2d``), so
gradients flow back to the pixels for saliency, and forward hooks see every layer.
Chosen over onnx2torch, whose last release predates the opset-18+ graphs that
``torch.onnx.export`` writes in PyTorch 2.9 and later (it stops at ReduceMean-18).

Weights bigger than 2 GB, or exported with ``external_data=True`` (the default of the
dynamo exporter), sit in a file beside the .onnx; such a file is read from the same
folder only, within the same size cap as the graph.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from lib.store.foreign import check_size, max_weights_bytes


def read_onnx_file(path: str | os.PathLike, limit: int | None = None) -> nn.Module:
    """The ONNX model at ``path`` as a torch module in eval mode; ValueError when it cannot be used."""
    from onnx import external_data_helper

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    limit = max_weights_bytes() if limit is None else limit
    check_size(path.name, path.stat().st_size, limit)
    model = _parse(path.name, path.read_bytes())
    sidecars = _external_files(model)
    if sidecars:
        total = path.stat().st_size
        for location in sidecars:
            sidecar = path.parent / location
            if Path(location).name != location or not sidecar.is_file():
                raise ValueError(f"{path.name}: its weights are in {location!r}, which must be a file in the same "
                                 "folder; or export with external_data=False to get one file")
            total += sidecar.stat().st_size
        check_size(f"{path.name} with its weights file", total, limit)
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    return convert(path.name, model)


def read_onnx_bytes(name: str, data: bytes, limit: int | None = None) -> nn.Module:
    """As read_onnx_file, for one uploaded file (which must hold its weights: external_data=False)."""
    check_size(name, len(data), limit)
    model = _parse(name, data)
    if _external_files(model):
        raise ValueError(f"{name}: its weights are in a separate file; export with "
                         "torch.onnx.export(..., external_data=False) to get one .onnx file")
    return convert(name, model)


def _parse(name: str, data: bytes):
    import onnx
    from google.protobuf.message import DecodeError
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name}: not a readable ONNX file ({err})") from None
    if not model.graph.node:
        raise ValueError(f"{name}: not an ONNX model (its graph has no operators)")
    return model


def _external_files(model) -> list[str]:
    from onnx import external_data_helper
    locations = []
    for tensor in model.graph.initializer:
        if external_data_helper.uses_external_data(tensor):
            info = external_data_helper.ExternalDataInfo(tensor)
            if info.location not in locations:
                locations.append(info.location)
    return locations


def inline_shared_initializers(model) -> None:
    """The TorchScript exporter (dynamo=False) stores equal weights once and hands them on through
    Identity nodes, which onnx2pytorch cannot turn into a layer's weight: give each its own copy."""
    import onnx
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in initializers:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
            initializers[copy.name] = copy
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def convert(name: str, model) -> nn.Module:
    from onnx2pytorch import ConvertModel
    inline_shared_initializers(model)
    try:
        module = ConvertModel(model)
    except NotImplementedError as err:
        raise ValueError(f"{name}: uses an ONNX operator FaceLab cannot rebuild in PyTorch ({err}); open the "
                         "model's own code with --model-code instead") from None
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError, IndexError) as err:
        raise ValueError(f"{name}: the ONNX graph could not be rebuilt in PyTorch ({type(err).__name__}: "
                         f"{str(err)[:200]})") from None
    return module.eval()


def check_runs(name: str, module: nn.Module, input_size: int) -> None:
    """Run two blank images through the module, so a graph exported for one input shape (a fixed batch
    of 1, another image size) is reported when it is opened, not in the middle of an evaluation."""
    try:
        with torch.no_grad():
            module(torch.zeros(2, 3, input_size, input_size))
    except (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError) as err:
        raise ValueError(f"{name}: the ONNX model does not run on a batch of 3x{input_size}x{input_size} images "
                         f"({str(err)[:200]}); export it at that image size and with a dynamic batch dimension: "
                         "torch.onnx.export(..., dynamic_shapes={'x': {0: torch.export.Dim('batch')}})") from None
