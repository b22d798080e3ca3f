"""A browser refresh starts a new session: the data set and name come back from the page address,
the built model and the augmentation pipeline from the user's state file."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from streamlit.testing.v1 import AppTest

from lib.base import config
from lib.model.net import count_params
from lib.model.presets import PRESETS
from lib.store import user_state
from lib.ui.train_form import format_count
from tests.synthetic_data import make_dataset

APP = str(config.PROJECT_ROOT / "app.py")
PIPELINE = [{"name": "RandomHorizontalFlip", "params": {"p": 0.5}}]


@pytest.fixture(autouse=True)
def folders(tmp_path, monkeypatch):
    make_dataset(tmp_path / "data" / "five", {f"id{k}": 2 for k in range(5)}, {"id0": 1})
    monkeypatch.setenv(config.DATA_ROOTS_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(config.RUNS_DIR_ENV, str(tmp_path / "runs"))
    return tmp_path


def opened(address: dict, **session) -> AppTest:
    """The app as a browser opens it at ``?data=...&name=...`` (a refresh: a new, empty session)."""
    app = AppTest.from_file(APP, default_timeout=90)
    app.query_params.update(address)
    for key, value in session.items():
        app.session_state[key] = value
    app.run()
    assert not app.exception
    return app


def test_the_address_brings_back_the_data_set_and_the_name(folders):
    app = opened({"data": "five", "name": "ada"})
    assert app.session_state["facelab.data_root"] == str(folders / "data" / "five")
    assert app.session_state["facelab.user"] == "ada"
    assert app.text_input(key="facelab.user").value == "ada"
    stranger = opened({"data": "../../etc", "name": ""})  # not a data set the sidebar offers: the default
    assert stranger.session_state["facelab.data_root"] == str(config.EMBEDDED_DATA)


def test_the_built_model_and_the_pipeline_come_back_after_a_refresh(folders):
    built = replace(PRESETS["face_mobilenet"], name="ada_net", drop_path_rate=0.0)
    first = opened({"data": "five", "name": "ada"},
                   **{"facelab.model_spec": built.to_dict(), "facelab.pipeline": PIPELINE})
    saved = json.loads(user_state.state_file(folders / "runs", "ada").read_text())
    assert saved["user"] == "ada" and saved["values"]["pipeline"] == PIPELINE
    first.switch_page("views/build.py").run()
    first.number_input(key="build.stage1.depth").set_value(3).run()  # a draft in progress is kept too
    again = opened({"data": "five", "name": "ada"})
    again.switch_page("views/train.py").run()
    assert again.radio(key="train.source").value == "Build page"
    params = next(metric.value for metric in again.metric if metric.label == "Parameters")
    assert params == format_count(count_params(replace(built, num_classes=5)))
    text = " ".join(markdown.value for markdown in again.markdown)
    assert "from the Augment page" in text and "`RandomHorizontalFlip`" in text and "ColorJitter" not in text
    again.switch_page("views/build.py").run()
    assert again.number_input(key="build.stage1.depth").value == 3
    other = opened({"data": "five", "name": "bob"})  # another name: nothing of ada's
    assert "facelab.model_spec" not in other.session_state and "facelab.pipeline" not in other.session_state


def test_a_state_file_gives_back_only_what_is_still_valid(folders):
    runs = folders / "runs"
    user_state.save_user_state(runs, "ada", {"pipeline": PIPELINE, "model_spec": PRESETS["face_resnet"].to_dict()})
    path = user_state.state_file(runs, "ada")
    assert path.parent == runs / user_state.STATE_DIR and path.name != "ada.json"
    saved = json.loads(path.read_text())
    saved["values"]["pipeline"] = [{"name": "NoSuchTransform", "params": {}}]
    saved["values"]["classes_followed"] = "many"
    path.write_text(json.dumps(saved))
    assert set(user_state.load_user_state(runs, "ada")) == {"model_spec"}
    assert user_state.load_user_state(runs, "../ada") == {}
    with pytest.raises(ValueError, match="unknown field 'secret'"):
        user_state.save_user_state(runs, "ada", {"secret": 1})


def test_a_real_reload_in_chromium_keeps_the_data_set_the_name_and_the_built_model(folders):
    from tests import browser_support as browser

    browser.require_chromium()
    with browser.running_app(folders / "runs", env={config.DATA_ROOTS_ENV: str(folders / "data")}) as server:
        with browser.chromium(width=1280) as page:
            page.goto(server.url)
            browser.wait_idle(page, 120)
            browser.fill_text(page, "Your name", "ada")
            browser.choose(page, "Data set", "five")
            browser.open_page(page, "Build")
            browser.click(page, "Use this model for training")
            page.reload()
            browser.wait_idle(page, 120)
            assert "data=five" in page.url and "name=ada" in page.url
            assert browser.widget(page, "stTextInput", "Your name").locator("input").input_value() == "ada"
            browser.open_page(page, "Train")
            assert page.get_by_text("training images of 5 identities").count() == 1  # the data set five
            assert page.get_by_role("radio", name="Build page").is_checked()
            assert browser.problems(page) == []
