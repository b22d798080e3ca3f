"""A whole class at once: twenty sessions of the real app, each building a model and
launching a job through the real queue, while the queue keeps its limit and the
app keeps answering; and one student's choices never reach another's session."""
from __future__ import annotations

import os
import sqlite3
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lib.jobs import queue as jobs
from lib.model.net import count_params
from lib.model.presets import PRESETS
from lib.store.checkpoint import load_checkpoint
from lib.store.run_folder import RunFolder
from lib.ui import train_form
from lib.ui.text import as_plain_markdown
from tests.browser_support import AppServer
from tests.job_cases import small_dataset, states, wait_for
from tests.stream_session import StreamSession

SESSIONS = 20
MAX_JOBS = 2
MODELS = ("face_resnet", "face_mobilenet", "face_se_resnet", "face_convnext")
ROOT = Path(__file__).resolve().parent.parent


def metric(result, label: str) -> str:
    return next(e.proto.body for e in result.elements if e.kind == "metric" and e.proto.label == label)


def student(session: StreamSession, index: int, data_root: Path, report: dict) -> None:
    """One student: name, data set, a preset built on the Build page, then Launch on Train."""
    name, model = f"student{index:02d}", MODELS[index % len(MODELS)]
    session.open()
    session.change({("text_input", "Your name"): name, ("selectbox", "Data set"): str(data_root)})
    session.open("build")
    built = session.change({("selectbox", "Start from"): model}, click="Load")
    session.click("Use this model for training")
    train = session.open("train")
    launched = session.change({("number_input", "Epochs"): 1, ("number_input", "Batch size"): 16,
                               ("text_input", "Run name"): f"{name}-{model}"}, click="Launch")
    report[index] = {
        "name": name, "model": model, "build_params": metric(built, "Parameters"),
        "train_params": metric(train, "Parameters"), "identities": metric(train, "Identities"),
        "texts": " ".join(train.texts()), "launched": launched.texts("alert"),
        "problems": built.problems() + train.problems() + launched.problems(),
    }


def runs_page_users(session: StreamSession) -> tuple[set, list]:
    """The users named in the Runs page's job table, and the page's problems."""
    result = session.open("runs")
    users = {user for table in result.tables() if "user" in table.column_names
             for user in table.column("user").to_pylist()}
    return users, result.problems()


class Monitor(threading.Thread):
    """Samples, every quarter second, what the registry says runs, what really runs (training
    processes of this runs folder), and how long /_stcore/health takes to answer."""

    def __init__(self, server: AppServer, runs_dir: Path):
        super().__init__(daemon=True)
        self.server, self.runs_dir = server, runs_dir
        self.running, self.processes, self.health = [], [], []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            with sqlite3.connect(self.runs_dir / jobs.DB_NAME, timeout=30) as conn:
                self.running.append(conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'running'").fetchone()[0])
            self.processes.append(len(training_processes(self.runs_dir)))
            started = time.monotonic()
            try:
                with urllib.request.urlopen(f"{self.server.url}/_stcore/health", timeout=20) as reply:
                    ok = reply.status == 200
            except OSError:
                ok = False
            self.health.append((ok, time.monotonic() - started))
            self.stopped.wait(0.25)


def training_processes(runs_dir: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"train" in command and any(str(runs_dir).encode() in part for part in command) \
                and (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            found.append(int(proc.name))
    return found


@pytest.fixture
def classroom(tmp_path):
    runs_dir, data_root = tmp_path / "runs", small_dataset(tmp_path / "data" / "class")
    jobs.JobQueue(runs_dir, max_running=MAX_JOBS)  # the registry exists before the monitor reads it
    server = AppServer(runs_dir, env={"FACELAB_DATA_ROOTS": str(data_root.parent),
                                      jobs.MAX_JOBS_ENV: str(MAX_JOBS)}).start()
    monitor = Monitor(server, runs_dir)
    monitor.start()
    yield server, monitor, runs_dir, data_root
    monitor.stopped.set()
    monitor.join(timeout=30)
    queue = jobs.JobQueue(runs_dir, max_running=MAX_JOBS)
    for job in queue.list_jobs():
        if not job.finished:
            queue.cancel(job.id, force=True, by=job.user)
    server.stop()


def run_the_class(url: str, data_root: Path) -> tuple[dict, list]:
    """Twenty sessions at once do their steps, then every one of them opens the Runs page."""
    report: dict = {}
    sessions = [StreamSession(url, timeout=600).__enter__() for _ in range(SESSIONS)]
    try:
        with ThreadPoolExecutor(max_workers=SESSIONS) as pool:
            futures = [pool.submit(student, sessions[i], i, data_root, report) for i in range(SESSIONS)]
            failures = [repr(future.exception()) for future in futures if future.exception() is not None]
            assert failures == [], failures
            seen = list(pool.map(runs_page_users, sessions))
    finally:
        for session in sessions:
            session.close()
    assert sorted(report) == list(range(SESSIONS))
    return report, seen


def check_each_session_kept_its_own_choices(report: dict, seen: list, queue, data_root: Path) -> None:
    by_user = {job.user: job for job in queue.list_jobs()}
    assert len(queue.list_jobs()) == SESSIONS and len(by_user) == SESSIONS  # one job each, none lost
    for entry in report.values():
        assert entry["problems"] == [], entry["problems"]
        assert any("Launched" in text for text in entry["launched"]), entry["launched"]
        assert f"Launching as **{as_plain_markdown(entry['name'])}**" in entry["texts"]  # its name, its data, its model
        assert entry["identities"] == "6"
        on_six = count_params(replace(PRESETS[entry["model"]], num_classes=6))
        assert entry["build_params"] == f"{on_six:,}"  # Build follows the data set's 6 identities
        assert entry["train_params"] == train_form.format_count(on_six)
        run = queue.read_run(by_user[entry["name"]].id)
        assert run["model"]["name"] == entry["model"] and run["config"]["data_root"] == str(data_root)
    for users, problems in seen:  # every session sees every run, whoever launched it
        assert problems == [] and users == {entry["name"] for entry in report.values()}, (sorted(users), problems)


def end_the_lesson(queue) -> list:
    """Once the queue has drained a slot (a job done, a waiting one started), stop the rest."""
    wait_for(lambda: "done" in states(queue).values() and sum(j.started is not None for j in queue.list_jobs())
             > MAX_JOBS, "a job to finish and a waiting one to start in its place", timeout=600)
    for job in queue.list_jobs():
        if not job.finished:
            queue.cancel(job.id, by=job.user)
    return wait_for(lambda: all(j.finished for j in queue.list_jobs()) and queue.list_jobs(),
                    "every job to reach a final state", timeout=300)


def check_the_queue(final: list, monitor: Monitor, runs_dir: Path) -> None:
    assert {job.state for job in final} <= {"done", "cancelled"}, [(j.name, j.state, j.reason) for j in final]
    assert max(monitor.running) <= MAX_JOBS and max(monitor.processes) <= MAX_JOBS
    assert max(monitor.running) == MAX_JOBS  # the limit was reached, so it was really tested
    started = [job.started is not None for job in sorted(final, key=lambda job: (job.created, job.id))]
    assert started == sorted(started, reverse=True), "jobs started out of their queue order"
    assert all(ok for ok, _ in monitor.health) and max(seconds for _, seconds in monitor.health) < 10
    # One run folder per job (dot folders hold the students' saved page choices, not runs).
    runs = sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert runs == sorted(job.id for job in final)
    for job in final:
        if job.state == "done":
            assert len(load_checkpoint(job.run_dir / "best").meta.classes) == 6
    # The queue splits the cores among the jobs it runs at once: each training process says how many it got.
    share = max(1, (os.cpu_count() or 1) // MAX_JOBS)
    logs = [RunFolder(job.run_dir).log_tail(lines=400, max_chars=100_000) for job in final]
    trained = [log for log in logs if "starting: step" in log]
    assert len(trained) >= MAX_JOBS and all(f"on cpu, {share} CPU threads" in log for log in trained), trained
    assert training_processes(runs_dir) == []
    with sqlite3.connect(runs_dir / jobs.DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_class_of_twenty_launches_at_once(classroom):
    server, monitor, runs_dir, data_root = classroom
    report, seen = run_the_class(server.url, data_root)
    queue = jobs.JobQueue(runs_dir, max_running=MAX_JOBS)
    check_each_session_kept_its_own_choices(report, seen, queue, data_root)
    final = end_the_lesson(queue)
    monitor.stopped.set()
    monitor.join(timeout=30)
    check_the_queue(final, monitor, runs_dir)


def app_session() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()


def test_one_students_choices_never_reach_another(tmp_path, monkeypatch):
    """Three sessions in one server process: what one picks on Build and Augment stays in that
    session; the others keep the defaults. (Names in the sidebar: the class test above.)"""
    monkeypatch.setenv("FACELAB_RUNS_DIR", str(tmp_path / "runs"))
    first, second, third = app_session(), app_session(), app_session()
    first.switch_page("views/build.py").run()
    first.selectbox(key="build.preset").select("face_mobilenet").run()
    next(b for b in first.button if b.label == "Load").click().run()
    next(b for b in first.button if "Use this model" in b.label).click().run()
    first.switch_page("views/augment.py").run()
    names = first.multiselect(key="augment.names")
    names.set_value([name for name in names.value if name != "RandomHorizontalFlip"]).run()
    next(b for b in first.button if b.label.startswith("Use this pipeline")).click().run()

    second.switch_page("views/build.py").run()
    third.switch_page("views/augment.py").run()
    second.switch_page("views/train.py").run()

    assert first.session_state["facelab.model_spec"]["name"] == "face_mobilenet"
    assert all(step["name"] != "RandomHorizontalFlip" for step in first.session_state["facelab.pipeline"])
    for other in (second, third):
        for key in ("facelab.model_spec", "facelab.pipeline"):
            assert key not in other.session_state, key
    assert "Nothing built yet" in " ".join(c.value for c in second.caption)
    assert "RandomHorizontalFlip" in " ".join(m.value for m in second.markdown)
    assert "RandomHorizontalFlip" in third.multiselect(key="augment.names").value
    first.switch_page("views/train.py").run()
    assert first.radio(key="train.source").value == "Build page"
    assert "RandomHorizontalFlip" not in " ".join(m.value for m in first.markdown)
    shown = next(m.value for m in first.metric if m.label == "Parameters")
    assert shown == train_form.format_count(count_params(PRESETS["face_mobilenet"]))  # 298 identities, as LFW-64
