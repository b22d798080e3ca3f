"""The app shell: home page, sidebar, navigation registry."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

from lib.base import config
from lib.base.device import device_label
from lib.ui.pages import PAGES


def test_home_renders_workflow_and_sidebar():
    app = AppTest.from_file(str(config.PROJECT_ROOT / "app.py"), default_timeout=60).run()
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
    assert not missing, f"pages named in lib/ui/pages.py but missing: {missing}"


def test_login_required_shows_only_the_sign_in(monkeypatch):
    monkeypatch.setenv("FACELAB_REQUIRE_LOGIN", "1")
    app = AppTest.from_file(str(config.PROJECT_ROOT / "app.py"), default_timeout=60)
    app.user = {"is_logged_in": False}
    app.run()
    assert not app.exception
    assert [b.label for b in app.button] == ["Sign in"]
    assert "shared by a class" in app.info[0].value
    assert not app.sidebar.selectbox  # nothing of the app until signed in


def test_signed_in_name_attributes_runs(monkeypatch):
    monkeypatch.setenv("FACELAB_REQUIRE_LOGIN", "1")
    app = AppTest.from_file(str(config.PROJECT_ROOT / "app.py"), default_timeout=60)
    app.user = {"is_logged_in": True, "name": "Grace Hopper", "email": "grace@example.edu"}
    app.run()
    assert not app.exception
    assert app.title[0].value == "FaceLab" and app.sidebar.selectbox
    assert app.sidebar.text_input[0].value == "Grace Hopper"


def test_a_signed_in_name_cannot_be_replaced_by_typing(monkeypatch):
    """Jobs belong to the name they were launched under: a signed-in student who types a
    classmate's name must still launch (and own) runs as themselves."""
    monkeypatch.setenv("FACELAB_REQUIRE_LOGIN", "1")
    app = AppTest.from_file(str(config.PROJECT_ROOT / "app.py"), default_timeout=60)
    app.user = {"is_logged_in": True, "name": "Grace Hopper", "email": "grace@example.edu"}
    app.run()
    assert app.sidebar.text_input[0].disabled  # a browser cannot type into it ...
    app.session_state["facelab.user"] = "Ada Lovelace"  # ... and a name typed before signing in
    app.run()
    assert app.sidebar.text_input[0].value == "Grace Hopper"
    assert app.session_state["facelab.user"] == "Grace Hopper"
