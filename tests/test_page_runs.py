"""The Runs page on real jobs: one finished, one crashed, one running, one waiting."""
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
from tests.job_cases import log_has, tiny, wait_finished, wait_for

APP = str(config.PROJECT_ROOT / "app.py")


def runs_page() -> AppTest:
    """The page inside the app (its links to other pages need the app's navigation)."""
    app = AppTest.from_file(APP, default_timeout=60).run()
    return app.switch_page("views/runs.py").run()


@pytest.fixture(scope="module")
def queue(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    saved = {name: os.environ.get(name) for name in (config.RUNS_DIR_ENV, jobs.MAX_JOBS_ENV)}
    os.environ[config.RUNS_DIR_ENV], os.environ[jobs.MAX_JOBS_ENV] = str(root), "1"
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
            queue.cancel(job.id)
    queue.cancel(ids["busy"], force=True)
    wait_finished(queue, ids["busy"])
    for name, value in saved.items():
        os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


def open_page(**selection) -> AppTest:
    app = runs_page()
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


def test_crashed_job_shows_its_reason_and_log_not_a_traceback(queue):
    app = open_page(selected=queue.ids["failed"])
    error = app.error[0].value
    assert "This run failed" in error and "no-such-data" in error and "FACELAB_DATA_ROOTS" in error
    assert any("no-such-data" in block.value for block in app.code)  # the log's tail
    assert [b.label for b in app.button] == ["Resume"]


def test_finished_job_shows_its_curves(queue):
    app = open_page(selected=queue.ids["done"])
    assert [chart.key for chart in app.get("plotly_chart")].count(f"runs.curves.{queue.ids['done']}") == 1
    assert any("Watch validation, not training" in c.value for c in app.caption)
    assert "2 / 2" in app.get("progress")[0].proto.text and not app.error


def test_cancel_a_waiting_job_and_resume_a_failed_one(queue):
    app = open_page(selected=queue.ids["waiting"])
    app.button(key=f"runs.cancel.{queue.ids['waiting']}").click().run()
    assert queue.get(queue.ids["waiting"]).state == "cancelled"
    app = open_page(selected=queue.ids["failed"])
    app.button(key=f"runs.resume.{queue.ids['failed']}").click().run()
    resumed = queue.get(queue.ids["failed"])
    assert resumed.state == "queued" and resumed.reason == ""  # the busy job holds the only slot
    queue.cancel(resumed.id)


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
