"""Cached loading shared by the Explore pages: checkpoints, image sets, embeddings, metrics.

Models are read-only and shared (st.cache_resource); arrays and numbers are
st.cache_data. Embeddings are also cached on disk by lib.explore, so a restart
or another user pays only a file read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from lib.base import config
from lib.explore import foreign
from lib.explore import metrics as explore_metrics
from lib.explore import models as explore
from lib.explore import scope as explore_scope
from lib.store.catalog import list_checkpoints
from lib.store.checkpoint import MODEL_FILE
from lib.ui.build_view import dataset_image_size


def mtime(folder: str) -> float:
    path = Path(folder) / MODEL_FILE
    return path.stat().st_mtime if path.is_file() else 0.0


UPLOADS = "explore.uploads"  # label -> key of the models this session uploaded on Inspect


@st.cache_resource(show_spinner=False, max_entries=12)
def _load_folder(folder: str, modified: float, label: str) -> explore.ExploreModel:
    """``modified`` is part of the key: a checkpoint rewritten in place is loaded again."""
    return explore.open_model(folder, label)


def load(folder: str, modified: float, label: str) -> explore.ExploreModel:
    """A checkpoint folder, or a model this session uploaded (kept in memory by lib.explore.foreign)."""
    if foreign.is_upload(folder):
        return foreign.recall_upload(folder)
    return _load_folder(folder, modified, label)


def add_upload(model: explore.ExploreModel) -> None:
    """Offer an uploaded model in every Explore page's checkpoint picker, for this session."""
    st.session_state.setdefault(UPLOADS, {})[model.label] = foreign.remember_upload(model)


def open_model(folder: str, label: str) -> explore.ExploreModel:
    return load(folder, mtime(folder), label)


@st.cache_data(ttl=30, show_spinner=False)
def image_side(root: str) -> int:
    """The side of the data set's images (one image header; 0 when none can be read)."""
    return dataset_image_size(root)


@st.cache_resource(show_spinner=False, max_entries=6)
def images(root: str, kind: str) -> explore.ImageChoice:
    return explore.image_choice(root, kind)


def embeddings(folder: str, modified: float, label: str, root: str, kind: str, progress=None) -> np.ndarray:
    """Not st.cache_data: lib.explore.models keeps them in memory and on disk, and computing them
    reports progress to the page (a cached function could not replay that)."""
    chosen = images(root, kind)
    return explore.cached_embeddings(load(folder, modified, label), chosen.images, progress, chosen.fingerprint)


@st.cache_data(show_spinner=False, max_entries=32)
def pair_data(root: str) -> tuple[np.ndarray, np.ndarray]:
    from lib.data.datasets import load_pairs
    pairs = load_pairs(root)
    return pairs.pairs.numpy(), pairs.labels.numpy()


@st.cache_data(show_spinner=False, max_entries=32)
def pair_folds(root: str) -> np.ndarray | None:
    """Each pair's fold from the pairs file's fold column (for the k-fold accuracy); None without one."""
    from lib.data.datasets import load_pairs
    folds = load_pairs(root).folds
    return None if folds is None else folds.numpy()


@st.cache_data(show_spinner=False, max_entries=32)
def scope(folder: str, modified: float, label: str, root: str) -> explore_scope.Scope:
    """How the checkpoint relates to the data set: trained on it, its classes, the pairs' people."""
    return explore_scope.model_scope(load(folder, modified, label), root, images(root, "verification").paths)


@st.cache_data(show_spinner=False, max_entries=32)
def summary(folder: str, modified: float, label: str, root: str, kind: str) -> tuple[dict, tuple]:
    """(metrics row, (scores, labels, pairs)) of one checkpoint on one data set."""
    model = load(folder, modified, label)
    pairs, pair_labels = pair_data(root)
    view = explore_metrics.verification_view(embeddings(folder, modified, label, root, "verification"),
                                             pairs, pair_labels, pair_folds(root))
    top1 = None  # closed-set numbers only where the checkpoint's classes are this data set's identities
    if scope(folder, modified, label, root).closed_set:
        top1 = explore_metrics.dev_top1(model, images(root, "dev"), embeddings(folder, modified, label, root, "dev"))
    chosen = images(root, kind)
    angle = explore_metrics.angles(embeddings(folder, modified, label, root, kind), chosen.labels)
    row = explore_metrics.metrics_row(view, top1, angle)
    return row, (view.scores, view.labels, view.pairs, view.result.fpr, view.result.tpr)


def checkpoint_options() -> dict[str, str]:
    """Short label -> folder of every checkpoint FaceLab knows (demos first, then runs), then the
    models this session uploaded."""
    return {**explore.short_labels(list_checkpoints(), config.runs_dir()), **st.session_state.get(UPLOADS, {})}


def default_selection(options: dict[str, str], large: bool = False) -> list[str]:
    """The demo checkpoints (else the first two); only the first of them on a large data set."""
    demos = [label for label, _ in explore.demo_checkpoints() if label in options]
    chosen = demos or list(options)[:2]
    return chosen[:1] if large else chosen


def default_index(options: dict[str, str]) -> int:
    """Where a single checkpoint choice starts: demo-ce (the lesson starts from cross-entropy)."""
    labels = list(options)
    return labels.index(explore.DEMO_NAMES[0]) if explore.DEMO_NAMES[0] in labels else 0
