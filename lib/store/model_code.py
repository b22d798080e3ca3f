"""A model built by its own Python code (``--model-code path/model.py:Network``), then given its weights.

This imports the student's file, so it runs that code with FaceLab's rights: allowed where
FaceLab runs for its owner only (the command line, or the app with sign-in off), refused on a
host shared by a class (lib.base.config.refuse_model_code_when_shared).
Constructor arguments: none, or a JSON object (``--model-args '{"num_classes": 430}'``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

from torch import nn

from lib.base.config import refuse_model_code_when_shared


def parse_code_reference(reference: str) -> tuple[Path, str]:
    """"path/model.py:Network" -> (Path("path/model.py"), "Network")."""
    path_text, _, class_name = str(reference).rpartition(":")
    if not path_text or not class_name.isidentifier():
        raise ValueError(f"--model-code {reference!r}: write FILE.py:ClassName, e.g. model.py:Network")
    path = Path(path_text).expanduser()
    if path.suffix != ".py" or not path.is_file():
        raise ValueError(f"--model-code {reference!r}: {path} is not a Python file")
    return path, class_name


def parse_model_args(text: str | None) -> dict:
    """The constructor's keyword arguments from a JSON object ("" or None: no arguments)."""
    if not text:
        return {}
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--model-args is not valid JSON ({err.msg} at character {err.pos}); "
                         "write e.g. '{\"num_classes\": 430}'") from None
    if not isinstance(values, dict):
        raise ValueError(f"--model-args must be a JSON object of keyword arguments, got {type(values).__name__}")
    return values


def import_model_class(reference: str) -> type[nn.Module]:
    """Import FILE.py and return its ClassName (an nn.Module subclass). Runs the file's code."""
    refuse_model_code_when_shared()
    path, class_name = parse_code_reference(reference)
    module_name = "facelab_user_model_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # as an import would: dataclasses and pickling look it up there
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # so the file may import its neighbours (from blocks import ...)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's own code: any error it raises is theirs to read
        sys.modules.pop(module_name, None)
        raise ValueError(f"{path}: importing it failed: {type(err).__name__}: {err}") from None
    finally:
        if sys.path and sys.path[0] == folder:
            sys.path.pop(0)
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        found = sorted(name for name, value in vars(module).items()
                       if isinstance(value, type) and issubclass(value, nn.Module) and value.__module__ == module_name)
        raise ValueError(f"{path} has no nn.Module class {class_name!r}; its classes: {', '.join(found) or 'none'}")
    return cls


def build_from_code(reference: str, model_args: dict | None = None) -> nn.Module:
    """Construct the class named by ``reference`` with ``model_args`` (random weights)."""
    cls = import_model_class(reference)
    try:
        return cls(**(model_args or {}))
    except Exception as err:  # the user's constructor
        raise ValueError(f"{cls.__name__}(**{model_args or {}}) failed: {type(err).__name__}: {err}; pass the "
                         "constructor's arguments with --model-args '{\"name\": value}'") from None
