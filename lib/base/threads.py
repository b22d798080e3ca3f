"""One CPU thread for interactive work (saliency maps, the margin toy, embeddings).

The app serves several people from one process on a few cores. PyTorch's
intra-op threads spin while they wait for each other, so on a busy machine two
threads per request are slower than one: on 2 shared cores at load 8, one
Integrated Gradients map took 2.2 s with 2 threads and 0.4 s with 1. Work run
inside ``one_thread()`` uses a single thread; the process's setting comes back
when the last such block ends (a counter, so overlapping sessions cannot leave
it at 1 or restore it too early).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import torch

_LOCK = threading.Lock()
_STATE = {"active": 0, "saved": None}


@contextmanager
def one_thread():
    with _LOCK:
        if _STATE["active"] == 0:
            _STATE["saved"] = torch.get_num_threads()
            torch.set_num_threads(1)
        _STATE["active"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _STATE["active"] -= 1
            if _STATE["active"] == 0 and _STATE["saved"] is not None:
                torch.set_num_threads(_STATE["saved"])
