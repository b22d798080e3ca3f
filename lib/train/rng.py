"""The state of every random generator a training run draws from, so a resumed run
continues exactly where it stopped: the same augmentations, dropout and shuffles.

The state is kept in weights_only-loadable form (tensors, numbers, strings and
containers of them): it travels in the run folder's resume file (lib/store/run_folder.py).
"""
from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> dict:
    """Every random generator the run draws from, in weights_only-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Put back what rng_state saved (the CUDA generators only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    np.random.set_state((saved["kind"], saved["keys"].numpy().astype(np.uint32), saved["pos"],
                         saved["has_gauss"], saved["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
