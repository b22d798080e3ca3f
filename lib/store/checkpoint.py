"""Checkpoints: a folder with safetensors weights and a JSON description.

    <folder>/model.safetensors   FaceNet state_dict (tensors only: nothing executes on load)
    <folder>/loss.safetensors    optional: the loss module's own state (e.g. ArcFace class weights)
    <folder>/meta.json           spec, training config, class names, metrics, normalization, versions
                                 (lib/store/meta.py reads and writes it, as a ``CheckpointMeta``)

A checkpoint folder is written beside its final place and renamed into it, so a
crash leaves either the old checkpoint or the new one, never half of one. The
same goes for single files (``atomic_write_text``, ``atomic_torch_save``).

Weights saved from ``nn.DataParallel`` (or ``torch.compile``) carry a
``module.`` (``_orig_mod.``) prefix on every name; ``load_weights_checked``
strips it and then checks every tensor name and shape against the spec, so a
mismatch is reported as a list of problems instead of a cryptic error. A tensor holding
NaN or infinity (the weights of a run that diverged) is refused too, naming the first one:
such a model only gives NaN embeddings, which every page and metric downstream chokes on.
"""
from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from lib.base.files import fsync_file, recover_folder, replace_folder, staging_folder
from lib.model.net import FaceNet
from lib.model.spec import ModelSpec
from lib.store.meta import META_FILE, META_VERSION, CheckpointMeta, json_ready, meta_text, read_meta

MODEL_FILE = "model.safetensors"
LOSS_FILE = "loss.safetensors"
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile
_MAX_LISTED = 8  # problems listed by name before "... and N more"
DIVERGED_HINT = ("the run that saved it diverged; train it again with a lower learning rate (or momentum) "
                 "or with gradient clipping (grad_clip)")


@dataclass
class LoadedCheckpoint:
    model: FaceNet  # in eval mode, on the requested device
    spec: ModelSpec
    meta: CheckpointMeta
    folder: Path
    loss_state: dict[str, torch.Tensor] = field(default_factory=dict)  # empty when the loss owns nothing


# ----------------------------------------------------------------------------- saving

def unwrap(model: nn.Module) -> nn.Module:
    """The FaceNet inside DataParallel / torch.compile wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def tensors_for_file(module: nn.Module) -> dict[str, torch.Tensor]:
    """A state_dict safetensors accepts: CPU, contiguous (channels_last is not), no shared storage."""
    return {name: value.detach().to("cpu").contiguous().clone() for name, value in module.state_dict().items()}


def library_versions() -> dict[str, str]:
    import safetensors
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "safetensors": safetensors.__version__}


def completed_meta(meta: CheckpointMeta | Mapping, model: nn.Module) -> CheckpointMeta:
    """``meta`` (a CheckpointMeta or a dict of meta.json keys) with "spec" (from the model when
    absent), "versions" and "created" filled in, checked as read_meta will check the file."""
    data = meta.to_dict() if isinstance(meta, CheckpointMeta) else dict(meta)
    data.setdefault("version", META_VERSION)  # a dict written now is the current format, NaN refused
    if data.get("spec") is None and isinstance(getattr(model, "spec", None), ModelSpec):
        data["spec"] = model.spec.to_dict()
    if not data.get("versions"):
        data["versions"] = library_versions()
    if not data.get("created"):
        data["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return CheckpointMeta.from_dict(json_ready(data))


def save_checkpoint(folder: str | os.PathLike, model: nn.Module, meta: CheckpointMeta | Mapping,
                    loss_module: nn.Module | None = None) -> Path:
    """Write a checkpoint folder atomically, its meta completed by ``completed_meta``; returns the
    folder. ValueError (nothing written) for a meta that would not read back."""
    folder = Path(folder)
    net = unwrap(model)
    meta = completed_meta(meta, net)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = staging_folder(folder)
    try:
        # Serialized here and written by Python, so a full disk raises OSError with its errno.
        (staged / MODEL_FILE).write_bytes(save(tensors_for_file(net), metadata={"format": "pt"}))
        loss_tensors = tensors_for_file(loss_module) if loss_module is not None else {}
        if loss_tensors:
            (staged / LOSS_FILE).write_bytes(save(loss_tensors, metadata={"format": "pt"}))
        (staged / META_FILE).write_text(meta_text(meta), encoding="utf-8")
        for file in staged.iterdir():
            fsync_file(file)
        replace_folder(staged, folder)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return folder


def publish_checkpoint(source: str | os.PathLike, target: str | os.PathLike, extra_meta: Mapping) -> Path:
    """Copy checkpoint folder ``source`` to ``target`` (atomically), merging ``extra_meta`` (meta.json
    keys such as "recipe" or "run_wall_s", checked like the rest) into its meta."""
    source, target = Path(source), Path(target)
    meta = read_meta(source).merged(extra_meta)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = staging_folder(target)
    try:
        for name in (MODEL_FILE, LOSS_FILE):
            if (source / name).is_file():
                shutil.copyfile(source / name, staged / name)
        (staged / META_FILE).write_text(meta_text(meta), encoding="utf-8")
        replace_folder(staged, target)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------- loading

def strip_wrapper_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a "module." / "_orig_mod." prefix that every key carries (possibly nested)."""
    changed = True
    while changed and state_dict:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in state_dict):
                state_dict = {key[len(prefix):]: value for key, value in state_dict.items()}
                changed = True
    return state_dict


def _listed(kind: str, names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    more = f" ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return f"{len(names)} {kind}: {shown}{more}"


def weight_problems(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    """Names missing or unexpected, and shapes that differ, in words."""
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    shapes = [f"{name} is {tuple(state_dict[name].shape)} in the file but {tuple(tensor.shape)} in the model"
              for name, tensor in expected.items()
              if name in state_dict and tuple(state_dict[name].shape) != tuple(tensor.shape)]
    problems = []
    if missing:
        problems.append(_listed("tensors missing from the file", missing))
    if unexpected:
        problems.append(_listed("tensors the model does not have", unexpected))
    if shapes:
        problems.append(_listed("shape mismatches", shapes))
    return problems


def non_finite_tensor(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The first floating-point tensor holding NaN or inf, described ("'name' holds 2 NaN, 1 inf of
    its 16 values"); None when all are finite. One flag per tensor, read back together: a single device
    sync however many tensors, so training can afford the check every few steps."""
    named = [(name, tensor) for name, tensor in tensors.items() if tensor.is_floating_point()]
    if not named:
        return None
    flags = torch.stack([torch.isfinite(tensor).all() for _, tensor in named]).tolist()
    if all(flags):
        return None
    name, tensor = named[flags.index(False)]
    nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
    counts = ", ".join(part for part in (f"{nan} NaN" if nan else "", f"{inf} inf" if inf else "") if part)
    return f"{name!r} holds {counts} of its {tensor.numel()} values"


def check_finite(tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """ValueError naming ``source`` and its first tensor holding NaN or inf."""
    bad = non_finite_tensor(tensors)
    if bad is not None:
        raise ValueError(f"{source} holds weights that are not finite numbers ({bad}): {DIVERGED_HINT}")


def load_weights_checked(state_dict: dict[str, torch.Tensor], spec: ModelSpec,
                         source: str = MODEL_FILE) -> FaceNet:
    """A FaceNet built from ``spec`` holding ``state_dict``; ValueError listing every mismatch, or
    naming ``source`` and its first tensor holding NaN or inf."""
    state_dict = strip_wrapper_prefix(dict(state_dict))
    check_finite(state_dict, source)
    model = FaceNet(spec)
    problems = weight_problems(state_dict, model.state_dict())
    if problems:
        raise ValueError(f"weights do not fit the model {spec.name!r}: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)
    return model


def load_checkpoint(folder: str | os.PathLike, device: str = "cpu") -> LoadedCheckpoint:
    """Rebuild the model of a checkpoint folder (eval mode); ValueError if the folder is unusable."""
    folder = Path(folder)
    meta = read_meta(folder)
    spec = meta.spec
    weights = folder / MODEL_FILE
    if not weights.is_file():
        raise ValueError(f"{folder}: no {MODEL_FILE}")
    try:
        state_dict = load_file(str(weights))
        loss_state = load_file(str(folder / LOSS_FILE)) if (folder / LOSS_FILE).is_file() else {}
    except Exception as err:  # safetensors raises its own error type for damaged files
        raise ValueError(f"{folder}: the weights cannot be read ({err})") from None
    model = load_weights_checked(state_dict, spec, source=f"{folder}: {MODEL_FILE}").to(device).eval()
    check_finite(loss_state, f"{folder}: {LOSS_FILE}")
    return LoadedCheckpoint(model=model, spec=spec, meta=meta, folder=folder, loss_state=loss_state)


def is_checkpoint(folder: Path) -> bool:
    recover_folder(folder)
    return (folder / META_FILE).is_file() and (folder / MODEL_FILE).is_file()
