"""The app shell: home page, sidebar, navigation registry."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

from lib import config
from lib.device import device_label
from lib.pages import PAGES


def test_home_renders_workflow_and_sidebar():
    app = AppTest.from_file("app.py", default_timeout=60).run()
    assert not app.exception
    assert app.title[0].value == "FaceLab"
    sidebar_text = " ".join(c.value for c in app.sidebar.caption)
    assert device_label() in sidebar_text
    data_select = app.sidebar.selectbox[0]
    assert data_select.value == str(config.EMBEDDED_DATA)


def test_every_registered_page_exists_once():
    paths = [p.path for p in PAGES]
    assert len(paths) == len(set(paths))
    missing = [p for p in paths if not (config.PROJECT_ROOT / p).exists()]
    assert not missing, f"pages named in lib/pages.py but missing: {missing}"


def test_user_name_is_per_session():
    first = AppTest.from_file("app.py", default_timeout=60).run()
    first.sidebar.text_input[0].input("ada").run()
    second = AppTest.from_file("app.py", default_timeout=60).run()
    assert first.session_state["facelab.user"] == "ada"
    assert second.sidebar.text_input[0].value in ("", None)
