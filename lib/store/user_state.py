"""A user's choices on the Build and Augment pages, kept on disk between browser sessions.

A browser refresh starts a new Streamlit session with empty session state. The small
choices (data set, name) come back from the page's address; the larger ones (the model
spec, the augmentation pipeline and their drafts) come back from one JSON file per user
name in ``<runs folder>/.user-state/``, written atomically (lib/base/files.py). The file
name is a hash of the user name, so no name can point outside that folder.

Only known fields are kept, and each is checked on the way in: a file from an older
FaceLab, or one edited by hand, gives back what is still valid and drops the rest.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

from lib.base.files import atomic_write_json
from lib.data.augment import validate_pipeline
from lib.model.spec import ModelSpec

STATE_DIR = ".user-state"  # a dot folder: lib/store/run_folder.py does not take it for a run
MAX_FILE_BYTES = 2**20  # a spec and a pipeline take a few KB
SPECS = ("model_spec", "build_draft")
PIPELINES = ("pipeline", "augment_draft")
COUNTS = ("classes_followed", "size_followed")
FIELDS = SPECS + PIPELINES + COUNTS


def state_file(runs_dir: str | Path, user: str) -> Path:
    """The file holding ``user``'s choices."""
    digest = hashlib.sha256(user.strip().encode("utf-8")).hexdigest()[:32]
    return Path(runs_dir) / STATE_DIR / f"{digest}.json"


def load_user_state(runs_dir: str | Path, user: str) -> dict:
    """The valid fields saved for ``user``; {} when there is no file or it cannot be read."""
    path = state_file(runs_dir, user)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return {}
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict) or saved.get("user") != user.strip() or not isinstance(saved.get("values"), dict):
        return {}
    values = {name: value for name, value in saved["values"].items() if name in FIELDS and _valid(name, value)}
    # A spec as the pages hold it (ModelSpec.to_dict()), so "is this the model Train will use?" compares equal.
    return values | {name: ModelSpec.from_dict(values[name]).to_dict() for name in SPECS if name in values}


def save_user_state(runs_dir: str | Path, user: str, values: dict) -> None:
    """Write ``user``'s choices (fields of FIELDS) atomically; OSError when the folder cannot be written."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"user state: unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})")
    path = state_file(runs_dir, user)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"user": user.strip(), "values": copy.deepcopy(values)})


def _valid(name: str, value) -> bool:
    try:
        if name in SPECS:
            ModelSpec.from_dict(value)
        elif name in PIPELINES:
            validate_pipeline(value)
        else:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    except (ValueError, TypeError, KeyError):
        return False
    return True
