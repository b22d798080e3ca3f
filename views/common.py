"""Small helpers every page shares: the chosen data set, runs folder, user, errors, and the
choices that survive a browser refresh (the page address and the user's state file)."""
from __future__ import annotations

import copy
from pathlib import Path

import streamlit as st

from lib.base import config
from lib.store import user_state

DATA_ROOT_KEY = "facelab.data_root"
USER_KEY = "facelab.user"
MODEL_SPEC_KEY = "facelab.model_spec"
PIPELINE_KEY = "facelab.pipeline"
# Session keys kept in the user's state file, by their field there (lib/store/user_state.py).
SAVED_KEYS = {MODEL_SPEC_KEY: "model_spec", "build.draft": "build_draft", PIPELINE_KEY: "pipeline",
              "augment.draft": "augment_draft", "build.classes_followed": "classes_followed",
              "build.size_followed": "size_followed"}
RESTORED_FOR, LAST_SAVED = "facelab.restored_for", "facelab.last_saved"
DATA_PARAM, NAME_PARAM = "data", "name"  # in the page address: ?data=lfw64&name=ada
MAX_NAME_CHARS = 40  # as the sidebar's name field


def data_root() -> Path:
    """The data set picked in the sidebar; the embedded LFW-64 until one is picked."""
    chosen = st.session_state.get(DATA_ROOT_KEY)
    return Path(chosen) if chosen else config.EMBEDDED_DATA


def runs_dir() -> Path:
    return config.runs_dir()


def user_name() -> str:
    name = str(st.session_state.get(USER_KEY) or "").strip()
    return name or "anonymous"


def show_error(message: str, hint: str = "") -> None:
    """A user's mistake: say what was wrong and how to fix it, never a traceback."""
    text = message if not hint else f"{message}\n\n**How to fix it:** {hint}"
    st.error(text, icon=":material/error:")


def restore_from_address(data_sets: list[str], take_name: bool = True) -> None:
    """After a refresh, the data set and the name the page address carries (a data set by its
    folder name, and only one the sidebar offers). Choices made in this session win."""
    wanted = st.query_params.get(DATA_PARAM)
    if DATA_ROOT_KEY not in st.session_state and wanted:
        match = next((path for path in data_sets if Path(path).name == wanted), None)
        if match:
            st.session_state[DATA_ROOT_KEY] = match
    name = str(st.query_params.get(NAME_PARAM) or "").strip()[:MAX_NAME_CHARS]
    if take_name and USER_KEY not in st.session_state and name:
        st.session_state[USER_KEY] = name


def remember_in_address(with_name: bool = True) -> None:
    """Put the data set and the name in the page address, so a refresh (or a bookmark) keeps them."""
    wanted = {DATA_PARAM: data_root().name}
    name = str(st.session_state.get(USER_KEY) or "").strip()
    if with_name and name:
        wanted[NAME_PARAM] = name
    for param, value in wanted.items():
        if st.query_params.get(param) != value:
            st.query_params[param] = value
    if NAME_PARAM in st.query_params and NAME_PARAM not in wanted:
        del st.query_params[NAME_PARAM]


def sync_user_state() -> None:
    """Give a named user back the model and pipeline saved for them (on the first run that knows the
    name: what this session already holds wins), and save them whenever they change."""
    name = str(st.session_state.get(USER_KEY) or "").strip()
    if not name:
        return
    if st.session_state.get(RESTORED_FOR) != name:
        saved = user_state.load_user_state(runs_dir(), name)
        for key, field in SAVED_KEYS.items():
            if key not in st.session_state and field in saved:
                st.session_state[key] = saved[field]
        st.session_state[RESTORED_FOR] = name
        st.session_state.pop(LAST_SAVED, None)
    save_user_choices()


def save_user_choices() -> None:
    """Write the user's model and pipeline to their state file if they changed since the last write.
    A runs folder that cannot be written loses nothing of the session: the choices stay in it."""
    name = str(st.session_state.get(USER_KEY) or "").strip()
    if not name or st.session_state.get(RESTORED_FOR) != name:
        return
    values = {field: st.session_state[key] for key, field in SAVED_KEYS.items() if key in st.session_state}
    if values == st.session_state.get(LAST_SAVED):
        return
    try:
        user_state.save_user_state(runs_dir(), name, values)
    except (OSError, ValueError):
        return  # tried again at the next change
    st.session_state[LAST_SAVED] = copy.deepcopy(values)
