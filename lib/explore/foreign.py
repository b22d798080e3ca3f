"""Models made elsewhere on the Explore pages: a student's own HW2P2 model opened from an upload
(or, where the app runs for its owner, from their code) and explored beside FaceLab's checkpoints.

An upload lives in this process, keyed by its fingerprint, so every Explore page's checkpoint
picker can offer it ("uploaded models join the list") without writing the student's file to
disk. The registry is bounded (the oldest upload is dropped first); a session whose upload was
dropped is asked to upload it again.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

from lib.eval.foreign_eval import COURSE_MEAN, COURSE_STD
from lib.explore.models import ExploreModel
from lib.model.limits import check_explorable, module_usage

UPLOAD_PREFIX = "upload:"
MAX_UPLOADS = 8  # models kept in memory at once, for every session together
# How the student's training normalized its pixels: the course notebook's Normalize(0.5, 0.5),
# torchvision's ImageNet statistics (pretrained weights), or the data set's own.
NORMALIZATIONS = {
    "course notebook (mean 0.5, std 0.5)": (COURSE_MEAN, COURSE_STD),
    "ImageNet (torchvision's pretrained weights)": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
DATA_SET_NORMALIZATION = "this data set's own mean and std"

_UPLOADS: OrderedDict[str, ExploreModel] = OrderedDict()
_LOCK = threading.Lock()


def explore_foreign(opened, label: str, mean, std, image_size: int) -> ExploreModel:
    """An OpenedModel (lib/store/foreign_open.py) ready for the Explore pages; ResourceRefused (a
    ValueError) when one batch of its activations would not fit this host (measured on meta)."""
    check_explorable(module_usage(opened.net, (3, int(image_size), int(image_size))))
    # The embedding depends on the layer it is read from and the pixels on the normalization:
    # both are part of the cache key of its embeddings, with the file's own hash.
    key = f"{opened.fingerprint}|{opened.net.layer}|{tuple(mean)}|{tuple(std)}"
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:32]
    return ExploreModel(label, Path(opened.name), opened.net.eval(), None, tuple(mean), tuple(std), None,
                        fingerprint, source=opened)


def remember_upload(model: ExploreModel) -> str:
    """Keep ``model`` for the pickers; returns its key (what the pickers pass as its folder)."""
    key = UPLOAD_PREFIX + model.fingerprint
    with _LOCK:
        _UPLOADS[key] = model
        _UPLOADS.move_to_end(key)
        while len(_UPLOADS) > MAX_UPLOADS:
            _UPLOADS.popitem(last=False)
    return key


def recall_upload(key: str) -> ExploreModel:
    with _LOCK:
        model = _UPLOADS.get(key)
    if model is None:
        raise ValueError("this uploaded model is no longer in memory (the app keeps the latest "
                         f"{MAX_UPLOADS} uploads); upload it again on the Inspect page")
    return model


def is_upload(key: str) -> bool:
    return str(key).startswith(UPLOAD_PREFIX)
