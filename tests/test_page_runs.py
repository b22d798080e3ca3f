"""The Runs page on real jobs: one finished, one crashed, one running, one waiting.

Each page is one browser session: its name in the sidebar, or who it signed in as, decides
which jobs it may cancel and resume (their owner's and, for an instructor, everyone's)."""
from __future__ import annotations

import os

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch.utils.flop_counter import FlopCounterMode

from lib.base import config
from lib.jobs import queue as jobs
from lib.store.checkpoint import load_checkpoint
from lib.ui.text import as_plain_markdown
from tests.job_cases import log_has, tiny, wait_finished, wait_for
from views.common import USER_KEY

APP = str(config.PROJECT_ROOT / "app.py")
INSTRUCTOR = "Prof Raj"
LINK = "[Sign in again](https:evil.example)"
IMAGE = "<img src=x onerror=alert(1)>"
CONTROLS = ("cancel", "kill", "resume")


def runs_page(name: str = "", signed_in: dict | None = None) -> AppTest:
    """The page inside the app (its links to other pages need the app's navigation), for a
    session that typed `name` in the sidebar and, when given, signed in as `signed_in`."""
    app = AppTest.from_file(APP, default_timeout=60)
    if signed_in:
        app.user = {"is_logged_in": True, **signed_in}
    app.run()
    if name and signed_in:  # the name field is locked while signed in: a name typed before it
        app.session_state[USER_KEY] = name
        app.run()
    elif name:
        app.text_input(key=USER_KEY).set_value(name).run()
    return app.switch_page("views/runs.py").run()


@pytest.fixture(scope="module")
def queue(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    saved = {name: os.environ.get(name) for name in (config.RUNS_DIR_ENV, jobs.MAX_JOBS_ENV, config.INSTRUCTORS_ENV)}
    os.environ[config.RUNS_DIR_ENV], os.environ[jobs.MAX_JOBS_ENV] = str(root), "1"
    os.environ[config.INSTRUCTORS_ENV] = f"{INSTRUCTOR}, ta@example.edu"
    queue = jobs.JobQueue(root)
    ids = {"done": queue.submit(tiny("finished-run", epochs=2), "ada")}
    queue.tick()
    wait_finished(queue, ids["done"])
    ids["failed"] = queue.submit(tiny("broken-data", data_root=str(root / "no-such-data")), "bob")
    queue.tick()
    wait_finished(queue, ids["failed"])
    ids["busy"] = queue.submit(tiny("busy", epochs=500), "cy")
    ids["waiting"] = queue.submit(tiny("waiting"), "dee")
    queue.tick()
    wait_for(lambda: log_has(queue, ids["busy"], "starting:"), "the busy job to train")
    queue.ids = ids
    yield queue
    for job in queue.list_jobs():  # the waiting ones first, so none takes the freed slot
        if job.state == "queued":
            queue.cancel(job.id, by=INSTRUCTOR)
    queue.cancel(ids["busy"], force=True, by=INSTRUCTOR)
    wait_finished(queue, ids["busy"])
    for name, value in saved.items():
        os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


def open_page(name: str = "", signed_in: dict | None = None, **selection) -> AppTest:
    app = runs_page(name, signed_in)
    for key, value in selection.items():
        app.selectbox(key=f"runs.{key}").set_value(value).run()
    assert not app.exception
    return app


def test_empty_runs_folder_explains_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(config.RUNS_DIR_ENV, str(tmp_path))
    app = runs_page()
    assert not app.exception
    assert "No runs yet" in app.info[0].value and "Launch" in app.info[0].value


def test_table_lists_every_job_with_state_user_and_progress(queue):
    app = open_page()
    table = app.dataframe[0].value.set_index("run")
    assert table.loc["finished-run", "status"] == "done" and table.loc["finished-run", "user"] == "ada"
    assert table.loc["finished-run", "progress"] == 1.0 and table.loc["finished-run", "epoch"] == "2 / 2"
    assert table.loc["broken-data", "status"] == "failed"
    assert table.loc["busy", "status"] == "running" and table.loc["waiting", "status"] == "queued"
    assert "At most 1 job(s) run at once" in " ".join(c.value for c in app.caption)
    assert table.loc["waiting", "epoch"] == "–" and pd.isna(table.loc["waiting", "best AUC"])
    assert {frame.proto.placeholder for frame in app.dataframe} == {"–"}  # a missing number shows "–", not "None"


def control_buttons(app: AppTest, job_id: str) -> list[str]:
    """Keys of the cancel, stop-now and resume buttons the page shows for a job."""
    keys = {f"runs.{control}.{job_id}" for control in CONTROLS}
    return [button.key for button in app.button if button.key in keys]


def test_crashed_job_shows_its_reason_and_log_not_a_traceback(queue):
    app = open_page("bob", selected=queue.ids["failed"])
    error = app.error[0].value
    assert "This run failed" in error
    assert as_plain_markdown("no-such-data") in error and as_plain_markdown("FACELAB_DATA_ROOTS") in error
    assert any("no-such-data" in block.value for block in app.code)  # the log's tail
    assert [b.label for b in app.button] == ["Resume"]


def test_finished_job_shows_its_curves(queue):
    app = open_page(selected=queue.ids["done"])
    assert [chart.key for chart in app.get("plotly_chart")].count(f"runs.curves.{queue.ids['done']}") == 1
    assert any("Watch validation, not training" in c.value for c in app.caption)
    assert "2 / 2" in app.get("progress")[0].proto.text and not app.error


def test_cancel_a_waiting_job_and_resume_a_failed_one(queue):
    app = open_page("dee", selected=queue.ids["waiting"])
    app.button(key=f"runs.cancel.{queue.ids['waiting']}").click().run()
    assert queue.get(queue.ids["waiting"]).state == "cancelled"
    app = open_page("bob", selected=queue.ids["failed"])
    app.button(key=f"runs.resume.{queue.ids['failed']}").click().run()
    resumed = queue.get(queue.ids["failed"])
    assert resumed.state == "queued" and resumed.reason == ""  # the busy job holds the only slot
    queue.cancel(resumed.id, by="bob")


def test_only_the_owner_and_instructors_get_the_buttons(queue):
    job_id = queue.submit(tiny("eves-run"), "eve")  # waits: the busy job holds the only slot
    owner = open_page("eve", selected=job_id)
    assert control_buttons(owner, job_id) == [f"runs.cancel.{job_id}"]
    other = open_page("mallory", selected=job_id)
    assert "eves-run" in other.dataframe[0].value["run"].tolist()  # everyone sees every job
    assert control_buttons(other, job_id) == []
    assert any("Only **eve**, who launched it, or an instructor" in c.value for c in other.caption)
    nameless = open_page(selected=job_id)
    assert control_buttons(nameless, job_id) == []
    assert any("Type your name in the sidebar" in c.value for c in nameless.caption)
    instructor = open_page(INSTRUCTOR.upper(), selected=job_id)
    assert control_buttons(instructor, job_id) == [f"runs.cancel.{job_id}"]
    owner.button(key=f"runs.cancel.{job_id}").click().run()
    assert queue.get(job_id).state == "cancelled" and not owner.exception
    assert control_buttons(open_page("mallory", selected=job_id), job_id) == []
    assert control_buttons(open_page("eve", selected=job_id), job_id) == [f"runs.resume.{job_id}"]


def test_a_nameless_job_is_only_an_instructors_to_control(queue):
    job_id = queue.submit(tiny("nameless-run"), "")
    for name in ("", "anonymous"):  # typing the placeholder name does not make it yours
        app = open_page(name, selected=job_id)
        assert control_buttons(app, job_id) == []
        assert any("launched without a name" in c.value for c in app.caption)
    assert control_buttons(open_page(INSTRUCTOR, selected=job_id), job_id) == [f"runs.cancel.{job_id}"]
    queue.cancel(job_id, by=INSTRUCTOR)


def test_signed_in_sessions_act_as_who_signed_in_not_the_name_typed(queue, monkeypatch):
    monkeypatch.setenv("FACELAB_REQUIRE_LOGIN", "1")
    job_id = queue.submit(tiny("graces-run"), "Grace Hopper")
    grace = {"name": "Grace Hopper", "email": "grace@example.edu"}
    assert control_buttons(open_page(signed_in=grace, selected=job_id), job_id) == [f"runs.cancel.{job_id}"]
    impostor = open_page("Grace Hopper", signed_in={"name": "Mallory", "email": "mallory@example.edu"},
                         selected=job_id)
    assert control_buttons(impostor, job_id) == []
    teaching_assistant = {"name": "Terry", "email": "ta@example.edu"}  # an instructor named by e-mail
    assert control_buttons(open_page(signed_in=teaching_assistant, selected=job_id), job_id) == [
        f"runs.cancel.{job_id}"]
    queue.cancel(job_id, by=tuple(grace.values()))


def markdown_texts(app: AppTest) -> list[str]:
    """Every text on the page that Streamlit renders as markdown: bodies, labels, progress text."""
    bodies = [element.value for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning",
                                         "error", "success") for element in getattr(app, kind)]
    labels = [element.label for kind in ("expander", "tabs", "metric", "button", "selectbox", "multiselect",
                                         "text_input") for element in getattr(app, kind)]
    return bodies + labels + [bar.proto.text for bar in app.get("progress")]


def test_names_from_users_show_as_text_not_links_or_html(tmp_path, monkeypatch):
    monkeypatch.setenv(config.RUNS_DIR_ENV, str(tmp_path))
    queue = jobs.JobQueue(tmp_path, max_running=1)
    hostile = [queue.submit(tiny(IMAGE), LINK), queue.submit(tiny(LINK), IMAGE)]
    queue.cancel(hostile[0], by=LINK)  # cancelled before they start: nothing trains
    queue.cancel(hostile[1], by=IMAGE)
    for viewer in (LINK, "carol"):  # the owner (buttons) and someone else (who may control it)
        for job_id in hostile:
            app = open_page(viewer, selected=job_id)
            texts = markdown_texts(app)
            assert not any("<img" in text or "](https:" in text for text in texts), texts
            user = queue.get(job_id).user
            assert any(f"by {as_plain_markdown(user)} ·" in text for text in texts)


def test_compare_table_counts_params_and_macs_of_what_trained(queue):
    app = open_page()
    assert queue.ids["done"] in app.multiselect(key="runs.compare").value
    rows = app.dataframe[1].value.set_index("run")
    row = rows.loc["finished-run"]
    model = load_checkpoint(queue.run_dir(queue.ids["done"]) / "best").model
    assert row["params"] == sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    assert row["MACs"] == counter.get_total_flops() // 2
    assert row["epochs"] == 2 and 0.0 <= row["auc"] <= 1.0 and row["loss"] == "ce"
    compare_charts = [chart for chart in app.get("plotly_chart") if not (chart.key or "").startswith("runs.curves")]
    assert len(compare_charts) == 2  # the overlaid curves and accuracy against MACs
