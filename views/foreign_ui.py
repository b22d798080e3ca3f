"""Inspect's second way in: a model made elsewhere (a state dict, an ONNX file, or the student's
own code where the app runs for its owner), opened, sized and normalized as its training did."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import streamlit as st

from lib.base import config
from lib.data.datasets import channel_stats
from lib.explore import foreign
from lib.explore.models import ExploreModel
from lib.model.module_profile import profile_module
from lib.store.foreign_open import open_model_bytes, open_model_file
from lib.ui.text import as_plain_markdown
from views import explore_state as state
from views.common import data_root, show_error

HOW = ("The three ways and their snippets are in the README (\"Inspect your own HW2P2 model\"): a state dict of a "
       "torchvision architecture, an ONNX export of any model, or the model's own code.")


@st.cache_resource(show_spinner=False, max_entries=4)
def _opened(name: str, data: bytes, layer: str, side: int, code: str, args: str):
    """Opening costs seconds (recognition, ONNX conversion): once per file and choice, shared."""
    if not code:
        return open_model_bytes(name, data, layer or None, side)
    try:
        model_args = json.loads(args) if args.strip() else None
    except json.JSONDecodeError as err:
        raise ValueError(f"constructor arguments are not JSON ({err.msg}, column {err.colno}): give an object "
                         "like {\"num_classes\": 7000}") from None
    if model_args is not None and not isinstance(model_args, dict):
        raise ValueError("constructor arguments: give a JSON object, like {\"num_classes\": 7000}")
    with tempfile.TemporaryDirectory() as folder:  # the reader takes a path; nothing of it is kept
        path = Path(folder) / Path(name).name
        path.write_bytes(data)
        return open_model_file(path, model_code=code, model_args=model_args, layer=layer or None, input_size=side)


@st.cache_data(show_spinner=False, max_entries=4)
def _profile(_model: ExploreModel, key: str, side: int):
    return profile_module(_model.model.model, side)


def _code_fields() -> tuple[str, str]:
    with st.expander("Not a torchvision architecture? Use the model's own code"):
        if config.sign_in_required():
            st.caption("Refused on this host: running a model's own code would run it on a server a whole class "
                       "shares. Export the model to ONNX instead, or use `python -m lib inspect` on your machine.")
            return "", ""
        code = st.text_input("Model code on this machine, FILE.py:Class", key="inspect.foreign.code",
                             placeholder="my_hw2p2/model.py:Network",
                             help="Imported, so its code runs: allowed because this app runs for its owner "
                                  "(sign-in is off).")
        args = st.text_input("Constructor arguments (JSON)", key="inspect.foreign.args",
                             placeholder='{"num_classes": 7000}')
        return code.strip(), args


def open_foreign(files: list[tuple[str, bytes]], default_side: int) -> ExploreModel:
    """The uploaded model, ready to explore and offered on the other Explore pages; stops the page
    with a message saying what was wrong when it cannot be opened."""
    if len(files) != 1:
        show_error("Upload one model file at a time.", HOW)
        st.stop()
    name, data = files[0]
    left, middle, right = st.columns(3)
    side = int(left.number_input("Input size (px)", 16, 1024, int(default_side or 112), 8, key="inspect.foreign.size",
                                 help="The side of the images it was trained on; the data set's by default."))
    choice = middle.selectbox("Normalization", [*foreign.NORMALIZATIONS, foreign.DATA_SET_NORMALIZATION],
                              key="inspect.foreign.norm", help="The transforms.Normalize its training used.")
    layer = right.text_input("Embedding layer", key="inspect.foreign.layer", placeholder="the input of the last Linear",
                             help="A module name as in model.named_modules(), e.g. layer4 (its output, "
                                  "average-pooled). Blank: the penultimate features.")
    code, args = _code_fields()
    try:
        mean, std = foreign.NORMALIZATIONS.get(choice) or channel_stats(data_root())
        with st.spinner("Opening the model..."):
            opened = _opened(name, data, layer.strip(), side, code, args)
            model = foreign.explore_foreign(opened, f"upload: {Path(name).name}", mean, std, side)
    except ValueError as err:
        show_error(f"This model cannot be opened: {as_plain_markdown(str(err))}", HOW)
        st.stop()
    state.add_upload(model)
    for note in opened.notes:
        st.caption(as_plain_markdown(note))
    return model


def show_foreign_facts(model: ExploreModel, side: int) -> None:
    """What it is: the architecture found, where its embedding comes from, its counts per block."""
    opened = model.source
    st.markdown(as_plain_markdown(opened.description))
    st.caption(f"Embedding: {as_plain_markdown(model.model.embedding_source)}. Classes: {model.num_classes:,}. "
               f"Normalization: mean {model.mean}, std {model.std}. The Embeddings and Saliency pages now offer it "
               f"as {as_plain_markdown(model.label)}.")
    try:
        counts = _profile(model, model.fingerprint, side)
    except ValueError as err:
        show_error(f"It does not run on {side}x{side} images: {as_plain_markdown(str(err))}",
                   "Set the input size it was trained on.")
        st.stop()
    st.markdown(f"**Budget:** {counts.budget_verdict()}. **MACs** per {side}x{side} image: {counts.macs:,} "
                "(multiply-accumulates, counted by FlopCounterMode; 1 MAC = 2 FLOPs).")
    st.dataframe([{"block": row.name, "kind": row.kind, "parameters": row.params, "MACs": row.macs,
                   "output": "x".join(str(v) for v in row.out_shape)} for row in counts.blocks],
                 hide_index=True, key="inspect.foreign.blocks")
