"""FaceLab: learn CNN face classification and verification, hands on.

Entry point: `streamlit run app.py`. Builds the navigation from lib.ui.pages.PAGES
and the sidebar every page shares (device, data set, runs folder, your name).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import streamlit as st

from lib.base import config
from lib.base.device import device_label
from lib.ui.pages import PAGES
from views.common import (
    DATA_ROOT_KEY,
    USER_KEY,
    remember_in_address,
    restore_from_address,
    show_error,
    sync_user_state,
)

st.set_page_config(page_title="FaceLab", page_icon=":material/face:", layout="wide")
LOGIN_ENV = "FACELAB_REQUIRE_LOGIN"
# What st.login() needs in the [auth] section for its one (unnamed) provider.
AUTH_KEYS = ("redirect_uri", "cookie_secret", "client_id", "client_secret", "server_metadata_url")


@st.cache_resource(show_spinner=False)
def _device() -> str:
    return device_label()


@st.cache_resource(show_spinner="Loading FaceLab's libraries ...")
def _load_libraries() -> bool:
    """Import the heavy libraries once, before any page does. Sessions run in threads: a class
    opening pages at the same moment would import pandas/plotly concurrently, and Python's
    import deadlock avoidance can then hand one of them a half-initialised module."""
    import pandas  # noqa: F401
    import plotly.express  # noqa: F401
    import plotly.graph_objects  # noqa: F401
    import torchvision  # noqa: F401

    from lib.eval.projection import warm_up_umap
    warm_up_umap()  # UMAP's import and numba compile take many seconds: start them now, in the background
    return True


def _datasets() -> list[str]:
    try:
        from lib.data.datasets import find_datasets
        return [str(path) for path in find_datasets()]
    except Exception:  # a broken data root must not take the whole app down
        return [str(config.EMBEDDED_DATA)]


def _sidebar() -> None:
    with st.sidebar:
        st.caption(f"Device: **{_device()}**")
        options = _datasets()
        signed_in = _signed_in()
        restore_from_address(options, take_name=not signed_in)  # after a refresh: the address keeps them
        if st.session_state.get(DATA_ROOT_KEY) not in options:
            st.session_state[DATA_ROOT_KEY] = options[0]
        st.selectbox("Data set", options, key=DATA_ROOT_KEY, format_func=_dataset_label,
                     help="Folders in the HW2P2 layout, or verification only (ver_data/ and val_pairs.txt: "
                          "for exploring and evaluating, not training), found under the data roots. Add roots with the "
                          f"{config.DATA_ROOTS_ENV} environment variable (see the README).")
        st.text_input("Your name", key=USER_KEY, placeholder="shown next to the runs you launch",
                      max_chars=40, disabled=signed_in,
                      help="Your signed-in name: the runs you launch are yours to stop and resume."
                      if signed_in else "Jobs keep this name: only you (and the instructors) may stop them.")
        st.caption(f"Runs folder: `{_short(config.runs_dir())}`")
    remember_in_address(with_name=not signed_in)  # a signed-in name comes from the sign-in, not the address


def _dataset_label(path: str) -> str:
    name = path.rstrip("/").split("/")[-1]
    return f"{name} (embedded)" if path == str(config.EMBEDDED_DATA) else name


def _short(path) -> str:
    try:
        return str(path.relative_to(config.PROJECT_ROOT))
    except ValueError:
        return str(path)


def _auth_settings() -> Mapping:
    """The [auth] section of .streamlit/secrets.toml; empty when there is no such file or section."""
    if not st.secrets.load_if_toml_exists():
        return {}
    section = st.secrets.get("auth")
    return section if isinstance(section, Mapping) else {}


def _sign_in_setup_problem() -> str:
    """What keeps sign-in from working, in words; "" when it is set up. Without an [auth] section
    st.user has no is_logged_in at all, and st.login fails on a section that lacks a key."""
    settings = _auth_settings()
    missing = [key for key in AUTH_KEYS if not settings.get(key)]
    if settings and missing:
        return f"the `[auth]` section of `.streamlit/secrets.toml` lacks {', '.join(missing)}"
    if settings or "is_logged_in" in st.user:  # the second: a login state Streamlit was handed directly
        return ""
    return "the `[auth]` section of `.streamlit/secrets.toml` is missing"


def _show_sign_in_setup(problem: str) -> None:
    """A setup mistake of whoever runs the server, shown on every page instead of a traceback."""
    st.title("FaceLab")
    show_error(f"Sign-in is required ({LOGIN_ENV}=1) but not set up: {problem}.",
               f"add an `[auth]` section with {', '.join(AUTH_KEYS)} to `.streamlit/secrets.toml` "
               f"(see Sign-in in the README) and restart FaceLab; or start it without {LOGIN_ENV}=1 "
               "to turn sign-in off.")
    st.stop()


def _login_gate() -> None:
    """On a shared host, FACELAB_REQUIRE_LOGIN=1 puts the app behind Streamlit's
    OpenID Connect login (an [auth] section in .streamlit/secrets.toml, see the README).
    The signed-in name then attributes runs."""
    if os.environ.get(LOGIN_ENV, "") != "1":
        return
    problem = _sign_in_setup_problem()
    if problem:
        _show_sign_in_setup(problem)
    if not st.user.get("is_logged_in"):
        st.title("FaceLab")
        st.info("This FaceLab is shared by a class: sign in to build, train and explore.")
        st.button("Sign in", on_click=st.login, type="primary")
        st.stop()
    # Every run, not only the first: the signed-in identity owns the jobs launched from this
    # session, whatever was typed before (the name field is locked while signed in).
    st.session_state[USER_KEY] = str(st.user.get("name") or st.user.get("email") or "")


def _signed_in() -> bool:
    return os.environ.get(LOGIN_ENV, "") == "1" and bool(st.user.get("is_logged_in"))


def main() -> None:
    _login_gate()
    _load_libraries()
    sections: dict[str, list] = {}
    for info in PAGES:
        if (config.PROJECT_ROOT / info.path).exists():
            page = st.Page(info.path, title=info.title, icon=info.icon, default=info.path == "views/home.py")
            sections.setdefault(info.section, []).append(page)
    navigation = st.navigation(sections)
    _sidebar()
    sync_user_state()  # the model and pipeline saved under the user's name, after a refresh
    navigation.run()


main()
