"""Small helpers every page shares: the chosen data set, runs folder, user, errors."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from lib.base import config

DATA_ROOT_KEY = "facelab.data_root"
USER_KEY = "facelab.user"
MODEL_SPEC_KEY = "facelab.model_spec"
PIPELINE_KEY = "facelab.pipeline"


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
