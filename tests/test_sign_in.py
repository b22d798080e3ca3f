"""Sign-in switched on by FACELAB_REQUIRE_LOGIN=1 but not set up: every page says what is missing
and how to fix it, instead of a traceback."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from lib.base import config
from lib.ui.pages import PAGES

AUTH_KEYS = ("redirect_uri", "cookie_secret", "client_id", "client_secret", "server_metadata_url")
COMPLETE = {"redirect_uri": "https://facelab.example.edu/oauth2callback", "cookie_secret": "x" * 32,
            "client_id": "facelab", "client_secret": "s3cret",
            "server_metadata_url": "https://login.example.edu/.well-known/openid-configuration"}


@pytest.fixture
def login_required(monkeypatch):
    monkeypatch.setenv("FACELAB_REQUIRE_LOGIN", "1")


def _app(page: str | None = None, auth: dict | None = None) -> AppTest:
    app = AppTest.from_file(str(config.PROJECT_ROOT / "app.py"), default_timeout=60)
    if auth is not None:
        app.secrets["auth"] = auth
    if page:
        app.switch_page(page)
    return app.run()


def _setup_message(app: AppTest) -> str:
    assert not app.exception, [e.message for e in app.exception]
    assert len(app.error) == 1
    assert not app.button and not app.sidebar.selectbox  # nothing of the app, no sign-in that cannot work
    return app.error[0].value


@pytest.mark.parametrize("page", [info.path for info in PAGES])
def test_every_page_says_the_auth_section_is_missing(login_required, page):
    message = _setup_message(_app(page))
    assert "`[auth]` section of `.streamlit/secrets.toml` is missing" in message
    assert all(key in message for key in AUTH_KEYS)
    assert "without FACELAB_REQUIRE_LOGIN=1" in message  # how to turn sign-in off


def test_an_incomplete_auth_section_names_the_missing_keys(login_required):
    partial = {key: COMPLETE[key] for key in ("redirect_uri", "cookie_secret")}
    message = _setup_message(_app(auth=partial))
    assert "lacks client_id, client_secret, server_metadata_url" in message


def test_a_complete_auth_section_offers_the_sign_in(login_required):
    app = _app(auth=COMPLETE)
    assert not app.exception and not app.error
    assert [b.label for b in app.button] == ["Sign in"]
