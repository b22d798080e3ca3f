"""Weights made outside FaceLab, read without running any code from the file.

Accepted:
- a PyTorch file (.pth, .pt, .bin) written by ``torch.save(model.state_dict(), ...)``, or a
  checkpoint dict such as the course notebook's ``{"model_state_dict": ..., "optimizer_state_dict":
  ..., "scheduler_state_dict": ..., "epoch": ...}`` (also "state_dict", "model", "net", ...);
- a .safetensors file of such weights (no FaceLab meta.json needed).

A PyTorch file is a pickle, and a pickle may name any Python function to call while it is
loaded. It is therefore read only with ``torch.load(..., weights_only=True)``, whose
unpickler builds tensors, containers and numbers and refuses every other global: a file
asking for ``os.system`` or a class of the student's code is refused before anything runs.
The file's size is checked before a byte is read. Prefixes that training wrappers add to every
name (``module.`` from DataParallel/DDP, ``_orig_mod.`` from torch.compile) are removed.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from lib.base import config

MAX_WEIGHTS_BYTES_ENV = "FACELAB_MAX_WEIGHTS_BYTES"
DEFAULT_MAX_WEIGHTS_BYTES = 2**30  # 1 GiB: a 35M-parameter model is 140 MB in float32
# Where checkpoint dicts keep the model's weights, most specific first.
STATE_KEYS = ("model_state_dict", "state_dict", "model_state", "model", "net", "network", "weights")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")  # how torch's weights-only unpickler names what it refused


@dataclass
class ForeignWeights:
    """The model's tensors, read from a file, and what was adjusted on the way."""
    name: str
    tensors: dict[str, torch.Tensor]
    fingerprint: str                               # hash of the file's bytes (cache key)
    notes: list[str] = field(default_factory=list)
    extras: dict = field(default_factory=dict)     # the checkpoint dict's plain numbers ("epoch", ...)


def max_weights_bytes() -> int:
    return config.positive_whole_number(MAX_WEIGHTS_BYTES_ENV, DEFAULT_MAX_WEIGHTS_BYTES, "bytes")


def check_size(name: str, size: int, limit: int | None = None) -> None:
    limit = max_weights_bytes() if limit is None else limit
    if size > limit:
        raise ValueError(f"{name}: {size / 2**20:.1f} MiB is over the {limit / 2**20:.0f} MiB limit for a model file "
                         f"(set {MAX_WEIGHTS_BYTES_ENV} to allow more)")
    if size == 0:
        raise ValueError(f"{name}: the file is empty")


def read_weights_file(path: str | os.PathLike, limit: int | None = None) -> ForeignWeights:
    """The weights in a .pth/.pt/.bin/.safetensors file; ValueError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    check_size(path.name, path.stat().st_size, limit)
    return read_weights_bytes(path.name, path.read_bytes(), limit)


def read_weights_bytes(name: str, data: bytes, limit: int | None = None) -> ForeignWeights:
    """As read_weights_file, for bytes (an upload): the kind is told by the content, not the name."""
    check_size(name, len(data), limit)
    fingerprint = hashlib.sha256(data).hexdigest()[:32]
    if _is_safetensors(data):
        try:
            tensors = load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError) as err:
            raise ValueError(f"{name}: damaged safetensors file ({err})") from None
        weights = ForeignWeights(name, dict(tensors), fingerprint)
    elif data[:2] == b"PK" or data[:1] == b"\x80":  # torch.save's zip, or a legacy bare pickle
        weights = _from_checkpoint(name, _torch_load(name, data), fingerprint)
    else:
        raise ValueError(f"{name}: neither a PyTorch file (torch.save) nor safetensors; save the weights with "
                         "torch.save(model.state_dict(), 'model.pth')")
    weights.tensors = strip_wrapper_prefixes(weights.tensors, weights.notes)
    if not weights.tensors:
        raise ValueError(f"{name}: the file holds no tensors")
    return weights


def _is_safetensors(data: bytes) -> bool:
    header = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    return 2 <= header <= len(data) - 8 and data[8:9] == b"{"


def _torch_load(name: str, data: bytes):
    """torch.load with the weights-only unpickler: no global outside tensors and containers is built."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(refusal_message(name, str(err))) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{name}: damaged or unreadable PyTorch file ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'})") from None


def refusal_message(name: str, error: str) -> str:
    """Why a pickle was refused, naming the Python object it asked for."""
    match = _GLOBAL.search(error)
    wanted = match.group(1) if match else "a Python object"
    if wanted.split(".")[0] in ("os", "posix", "nt", "subprocess", "builtins", "sys", "shutil", "socket"):
        what = f"it asks to call {wanted} when loaded, which could run any command"
    else:
        what = (f"it asks for {wanted}, which is code, not weights (a whole model saved with torch.save(model), "
                "or an object of your own classes)")
    return (f"{name}: refused, nothing from it was run: {what}. FaceLab reads only tensors: save "
            "torch.save(model.state_dict(), 'model.pth') (or the course's checkpoint dict) and open that file")


def _from_checkpoint(name: str, loaded, fingerprint: str) -> ForeignWeights:
    """The model's state dict out of what torch.load returned: the dict itself, or one of its entries."""
    if not isinstance(loaded, dict):
        raise ValueError(f"{name}: holds a {type(loaded).__name__}, not a state dict; save model.state_dict()")
    if _all_tensors(loaded):
        return ForeignWeights(name, dict(loaded), fingerprint)
    for key in STATE_KEYS:
        value = loaded.get(key)
        if isinstance(value, dict) and value and _all_tensors(value):
            extras = {k: v for k, v in loaded.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
            note = f"the model's weights were read from the checkpoint's {key!r} entry"
            return ForeignWeights(name, dict(value), fingerprint, [note], extras)
    keys = ", ".join(repr(k) for k in list(loaded)[:8])
    raise ValueError(f"{name}: a dict without model weights (keys: {keys}); FaceLab looks for a state dict or one "
                     f"of the entries {', '.join(STATE_KEYS)}")


def _all_tensors(values: dict) -> bool:
    return bool(values) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in values.items())


def strip_wrapper_prefixes(tensors: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    """Remove a prefix every name shares: DataParallel/DDP's ``module.``, torch.compile's ``_orig_mod.``."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if tensors and all(key.startswith(prefix) for key in tensors):
                tensors = {key[len(prefix):]: value for key, value in tensors.items()}
                notes.append(f"the {prefix!r} prefix of every name was removed (weights saved from "
                             f"{'DataParallel/DDP' if prefix == 'module.' else 'torch.compile'})")
                changed = True
    return tensors
