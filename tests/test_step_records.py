"""Training curves within the epoch: steps.jsonl against the engine's own epoch records, a resume
that re-does steps, TensorBoard-style smoothing against pandas, and the Runs page's step chart."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from lib.base import config
from lib.jobs import queue as jobs
from lib.store.run_folder import RunFolder
from lib.train.engine import train
from lib.train.step_log import TARGET_RECORDS, record_every
from lib.ui.run_plots import smooth
from tests.job_cases import tiny, wait_finished
from tests.train_cases import tiny_config

APP = str(config.PROJECT_ROOT / "app.py")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 2-epoch tiny run (26 steps: one record per step, see record_every)."""
    folder = tmp_path_factory.mktemp("steps") / "run"
    summary = train(tiny_config(), folder)
    assert summary["status"] == "done"
    return RunFolder(folder)


def raw_steps(folder: RunFolder) -> list[int]:
    """The step of every line of steps.jsonl as written (the reader would hide a duplicate)."""
    return [json.loads(line)["step"] for line in folder.steps_file.read_text().splitlines()]


def test_record_every_keeps_a_run_under_the_target():
    assert record_every(26) == 1  # short runs: every step
    assert record_every(2000) == 1 and record_every(2001) == 2
    assert record_every(100_000) == 50  # 2,000 records over the run
    assert all(total / record_every(total) <= TARGET_RECORDS for total in (1, 1999, 4001, 123_457, 10**7))


def test_one_record_per_step_and_epoch_means_match_the_epoch_records(finished):
    steps, epochs = finished.read_steps(), finished.read_metrics()
    assert raw_steps(finished) == list(range(1, 27)) and epochs[-1]["step"] == 26
    for record in epochs:
        mine = [s for s in steps if s["epoch"] == record["epoch"]]
        assert max(s["step"] for s in mine) == record["step"]  # each epoch's records end where it did
        images = sum(s["images"] for s in mine)
        # Batches differ in size (the last one is short): the epoch's mean weights each by its images.
        assert sum(s["loss"] * s["images"] for s in mine) / images == pytest.approx(record["train_loss"], rel=1e-9)
        assert sum(s["acc"] * s["images"] for s in mine) / images == pytest.approx(record["train_acc"], rel=1e-9)
    assert steps[-1]["lr"] == pytest.approx(epochs[-1]["lr"])  # the scheduler's rate after the last step
    assert all(s["images_per_s"] > 0 for s in steps)


def test_resume_after_a_kill_re_does_steps_without_recording_them_twice(tmp_path, finished):
    folder = RunFolder(tmp_path / "run")
    assert train(tiny_config(), folder.folder, max_steps=5)["status"] == "stopped"
    saved = tmp_path / "state-at-step-5.pt"
    shutil.copy(folder.resume_file, saved)
    assert train(tiny_config(), folder.folder, resume=True, max_steps=3)["step"] == 8
    # As if the job died after step 8 with its last resume state from step 5: steps 6-8 come again.
    shutil.copy(saved, folder.resume_file)
    assert train(tiny_config(), folder.folder, resume=True)["status"] == "done"
    assert raw_steps(folder) == list(range(1, 27))
    # The re-done steps are the same steps (same RNG state), so the epoch means still add up.
    first = [s for s in folder.read_steps() if s["epoch"] == 1]
    mean = sum(s["loss"] * s["images"] for s in first) / sum(s["images"] for s in first)
    assert mean == pytest.approx(folder.read_metrics()[0]["train_loss"], rel=1e-6)
    assert [s["loss"] for s in folder.read_steps()] == pytest.approx([s["loss"] for s in finished.read_steps()],
                                                                      rel=1e-4)


def test_smoothing_is_tensorboards_debiased_moving_average():
    values = np.random.default_rng(0).normal(size=50)
    for weight in (0.0, 0.6, 0.95):
        reference = pd.Series(values).ewm(alpha=1 - weight, adjust=True).mean().to_numpy()
        assert np.allclose(smooth(values, weight), reference)
    assert np.allclose(smooth([2.0] * 5, 0.9), 2.0)  # debiased: starts at the value, not near 0
    with pytest.raises(ValueError, match="smoothing"):
        smooth(values, 1.0)


def test_runs_page_draws_steps_for_a_run_with_the_file_and_epochs_without(tmp_path, monkeypatch):
    monkeypatch.setenv(config.RUNS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "1")
    queue = jobs.JobQueue(tmp_path)
    job_id = queue.submit(tiny("live-curves", epochs=2), "ada")
    queue.tick()
    assert wait_finished(queue, job_id).state == "done"
    folder = RunFolder(queue.run_dir(job_id))
    records = folder.read_steps()
    assert records and records[-1]["step"] == folder.read_metrics()[-1]["step"]

    def chart(app: AppTest) -> dict:
        [found] = [c for c in app.get("plotly_chart") if c.key == f"runs.curves.{job_id}"]
        return json.loads(found.proto.spec)

    app = AppTest.from_file(APP, default_timeout=60).run().switch_page("views/runs.py").run()
    assert not app.exception
    figure = chart(app)
    assert figure["layout"]["xaxis"]["title"]["text"].startswith("training step")
    traces = {trace.get("name"): trace for trace in figure["data"]}
    assert traces["training loss"]["x"] == [r["step"] for r in records]
    assert traces["dev top-1"]["x"] == [r["step"] for r in folder.read_metrics()]  # epochs on the step axis
    assert len([s for s in figure["layout"]["shapes"] if s["type"] == "line"]) >= 2 * 4  # epoch ends, 4 panels
    assert app.slider(key="runs.smoothing").value == 0.6
    app.slider(key="runs.smoothing").set_value(0.0).run()
    raw = {trace.get("name"): trace for trace in chart(app)["data"]}["training loss"]["y"]
    assert raw == pytest.approx([r["loss"] for r in records])  # smoothing 0: the raw values
    assert any("Latest, at step" in caption.value for caption in app.caption)

    os.remove(folder.steps_file)  # a run from before steps.jsonl
    app = AppTest.from_file(APP, default_timeout=60).run().switch_page("views/runs.py").run()
    assert not app.exception
    assert chart(app)["layout"]["xaxis"]["title"]["text"] == "epoch"
    assert not [s for s in app.slider if s.key == "runs.smoothing"]
