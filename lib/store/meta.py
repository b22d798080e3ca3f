"""Checkpoint metadata: meta.json, read and written only here, as a checked ``CheckpointMeta``.

    {"version": 2, "spec": {...ModelSpec...}, "config": {...}, "classes": [...],
     "metrics": {...}, "normalize": {"mean": [...], "std": [...]}, "epoch": 3, ...}

Every value is checked on the way in, so a page never meets a NaN metric, a string where a
number belongs, or a spec that cannot be built: the ValueError names the file, the field
and the bad value. The weights beside it are lib/store/checkpoint.py's.
"""
from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path

from lib.base.files import json_default, recover_folder
from lib.base.json_text import parse_json
from lib.model.spec import ModelSpec

META_FILE = "meta.json"
_MAX_SHOWN = 80  # characters of a bad value quoted in an error message

# The meta.json format save_checkpoint writes. Format 1 (every checkpoint written before the
# "version" key existed, the demo checkpoints included) has the same keys but no version, and it
# wrote a metric without a value (k-fold accuracy on too few pairs) as NaN, which is not JSON;
# format 2 writes null there and refuses NaN.
META_VERSION = 2


# ----------------------------------------------------------------------------- meta.json

@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std of the 0..1 pixels the model was trained on: its input normalization."""
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True, kw_only=True)
class CheckpointMeta:
    """What meta.json says about a checkpoint, checked. Only the spec is required (a model saved
    outside training knows nothing else); None and empty mean "not recorded"."""
    version: int = META_VERSION
    spec: ModelSpec
    config: dict = field(default_factory=dict)    # the run's TrainConfig.to_dict()
    classes: tuple[str, ...] = ()                 # identity names, in the classifier's order
    metrics: dict = field(default_factory=dict)   # the saved epoch's record: name -> number, text or None
    normalize: Normalization | None = None
    epoch: int | None = None                      # epochs finished when saved
    step: int | None = None                       # optimizer steps done when saved
    loss: str | None = None                       # a key of lib.losses.registry.LOSSES
    name: str | None = None                       # the run's name
    wall_s: float | None = None                   # training seconds up to this save
    versions: dict = field(default_factory=dict)  # python, torch, torchvision, safetensors -> version
    created: str | None = None                    # ISO 8601 time of the save, UTC
    recipe: str | None = None                     # published: the run file that made it
    run_wall_s: float | None = None               # published: seconds the whole run took
    run_epochs: int | None = None                 # published: epochs the run trained
    machine: dict | None = None                   # published: CPU count and load at the end
    extras: dict = field(default_factory=dict)    # keys this format does not know (see from_dict)

    @classmethod
    def from_dict(cls, data, source: str = META_FILE) -> CheckpointMeta:
        """The meta of a meta.json object; format 1 is read as format 2, so the result is always the
        current format. ValueError naming ``source``, the field and its value when a field has the
        wrong type, a number is not finite, the spec is missing or the format is newer than this."""
        try:
            return cls._parse(data)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def _parse(cls, data) -> CheckpointMeta:
        if not isinstance(data, dict):
            raise ValueError(f"must be a JSON object, got {type(data).__name__}")
        if data.get("spec") is None:
            raise ValueError("has no model spec ('spec'); FaceLab's training writes it next to the weights")
        if _format_version(data.get("version", 1)) == 1:
            data = _upgraded_from_format_1(data)
        values = {name: parse(name, data[name]) for name, parse in _FIELD_PARSERS.items()
                  if data.get(name) is not None}
        # Unknown keys are kept and written back, not dropped: publish_checkpoint rewrites meta.json,
        # and a key added by hand (or by a later FaceLab that kept format 2) should survive that.
        # Nothing reads them, so they cannot change what a checkpoint does.
        extras = {key: value for key, value in data.items() if key not in _FIELD_PARSERS and key != "version"}
        return cls(**values, extras=extras)

    def to_dict(self) -> dict:
        """The JSON object meta.json holds: fields not recorded (None) left out, unknown keys last."""
        data = {name: _plain(getattr(self, name)) for name in ("version", *_FIELD_PARSERS)
                if getattr(self, name) is not None}
        data.update((key, copy.deepcopy(value)) for key, value in self.extras.items() if key not in data)
        return data

    def merged(self, updates: Mapping) -> CheckpointMeta:
        """This meta with ``updates`` (meta.json keys and values) applied, checked like a file."""
        return CheckpointMeta.from_dict(json_ready({**self.to_dict(), **updates}))


def recordable_metrics(metrics: Mapping) -> dict:
    """``metrics`` as meta.json records them: a number that is not finite (k-fold accuracy on too
    few pairs is NaN) becomes None, which JSON can hold and no reader mistakes for a value."""
    return {key: None if _not_finite(value) else value for key, value in metrics.items()}


def _not_finite(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and not _fits_float(value)


def _fits_float(value: Real) -> bool:
    """Finite, and (an integer) small enough for a float: math.isfinite raises OverflowError past that."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _upgraded_from_format_1(data: dict) -> dict:
    """Format 1 as format 2: its NaN metrics (values it did not have) become None."""
    if not isinstance(data.get("metrics"), dict):
        return data  # nothing to upgrade; a wrong type is reported by the metrics check
    return {**data, "metrics": recordable_metrics(data["metrics"])}


def _format_version(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"version: {_shown(value)} is not a meta.json format number")
    if value > META_VERSION:
        raise ValueError(f"version: format {value} is newer than this FaceLab reads (up to {META_VERSION}); "
                         "update FaceLab to open this checkpoint")
    return value


def json_ready(data: Mapping) -> dict:
    """``data`` as meta.json will hold it: paths as text, tensors and numpy numbers as plain numbers.
    TypeError for a value JSON cannot hold."""
    return json.loads(json.dumps(data, default=json_default))


def _plain(value):
    if isinstance(value, ModelSpec):
        return json.loads(value.to_json(indent=None))  # its stages as a list, as the file holds them
    if isinstance(value, Normalization):
        return value.to_dict()
    if isinstance(value, tuple):
        return list(value)
    return copy.deepcopy(value) if isinstance(value, dict) else value


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _spec(name: str, value) -> ModelSpec:
    try:
        return ModelSpec.from_dict(value).validate()
    except (TypeError, KeyError, ValueError) as err:
        raise ValueError(f"{name}: {err}") from None


def _text(name: str, value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name}: {_shown(value)} is not text")
    return value


def _finite(name: str, value) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _fits_float(value):
        raise ValueError(f"{name}: {_shown(value)} is not a finite number")
    return value


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: {_shown(value)} is not a whole number >= 0")
    return value


def _seconds(name: str, value) -> float:
    if _finite(name, value) < 0:
        raise ValueError(f"{name}: {_shown(value)} is negative")
    return float(value)


def _object(name: str, value) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{name}: {_shown(value)} is not a JSON object")
    return value


def _names(name: str, value) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{name}: {_shown(value)} is not a list of names")
    return tuple(_text(f"{name}[{index}]", item) for index, item in enumerate(value))


def _texts(name: str, value) -> dict:
    for key, item in _object(name, value).items():
        _text(f"{name}.{key}", item)
    return value


def _scalars(name: str, value) -> dict:
    """An object of finite numbers, text or null (metrics, machine)."""
    for key, item in _object(name, value).items():
        if item is not None and not isinstance(item, str):
            _finite(f"{name}.{key}", item)
    return value


def _channel_values(name: str, value) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{name}: {_shown(value)} is not a list of numbers")
    return tuple(float(_finite(f"{name}[{index}]", item)) for index, item in enumerate(value))


def _normalization(name: str, value) -> Normalization:
    value = _object(name, value)
    mean, std = (_channel_values(f"{name}.{key}", value.get(key)) for key in ("mean", "std"))
    if len(mean) != len(std):
        raise ValueError(f"{name}: {len(mean)} means but {len(std)} standard deviations")
    for index, item in enumerate(std):
        if item <= 0:
            raise ValueError(f"{name}.std[{index}]: {item!r} is not positive")
    return Normalization(mean, std)


# How each field is read from meta.json, in the order to_dict writes them.
_FIELD_PARSERS = {
    "spec": _spec, "config": _object, "classes": _names, "metrics": _scalars, "normalize": _normalization,
    "epoch": _count, "step": _count, "loss": _text, "name": _text, "wall_s": _seconds, "versions": _texts,
    "created": _text, "recipe": _text, "run_wall_s": _seconds, "run_epochs": _count, "machine": _scalars,
}


def meta_from_json(data: str | bytes, source: str = META_FILE) -> CheckpointMeta:
    """The checked meta of meta.json's text; ValueError naming ``source`` when it is not usable."""
    return CheckpointMeta.from_dict(parse_json(data, source), source)


def meta_text(meta: CheckpointMeta) -> str:
    return json.dumps(meta.to_dict(), indent=2, default=json_default) + "\n"



def read_meta(folder: str | os.PathLike) -> CheckpointMeta:
    """The checked meta.json of a checkpoint folder (an interrupted replacement recovered first);
    ValueError naming the file and the problem."""
    folder = Path(folder)
    recover_folder(folder)
    file = folder / META_FILE
    if not file.is_file():
        raise ValueError(f"{folder}: not a checkpoint (no {META_FILE})")
    return meta_from_json(file.read_text(encoding="utf-8"), str(file))


def peek_meta(folder: str | os.PathLike) -> CheckpointMeta | None:
    """The meta of a checkpoint folder as it is now, or None when it is missing or unusable. For
    pages that look at folders a running job may be replacing: unlike read_meta it never moves a
    folder back (which could collide with the job's own rename)."""
    try:
        return meta_from_json((Path(folder) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
