"""A crash shows the browser a generic message: no traceback, no exception message (they carry
paths, code and other people's names); the server's log keeps the details."""
from __future__ import annotations

import tomllib

from streamlit.testing.v1 import AppTest

from lib.base import config


def test_config_hides_error_details():
    settings = tomllib.loads((config.PROJECT_ROOT / ".streamlit" / "config.toml").read_text())
    assert settings["client"]["showErrorDetails"] == "none"


def test_an_exception_reaches_the_page_without_its_details():
    app = AppTest.from_string('raise ValueError("/home/alice/private/runs: bad file")').run()
    shown = app.exception[0]
    assert "alice" not in shown.message and "ValueError" not in shown.message
    assert shown.stack_trace == []
