"""The job registry and queue, with real `python -m lib train` subprocesses on a tiny subset."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lib.base import config
from lib.jobs import launcher
from lib.jobs import queue as jobs
from lib.store.run_folder import RunFolder
from tests.job_cases import log_has, tiny, wait_finished, wait_for


def pid_alive(pid: int) -> bool:
    return launcher.process_state(pid, None)[0]


def test_registry_survives_reopening(tmp_path):
    queue = jobs.JobQueue(tmp_path, max_running=1)
    first = queue.submit(tiny("first"), "ada")
    second = queue.submit(tiny("second"), "bob")
    queue.cancel(second, by="bob")
    reopened = jobs.JobQueue(tmp_path, max_running=1)
    listed = {job.id: job for job in reopened.list_jobs()}
    assert [job.id for job in reopened.list_jobs()] == [second, first]  # newest first
    assert (listed[first].state, listed[first].user, listed[first].name) == ("queued", "ada", "first")
    assert (listed[second].state, listed[second].reason) == ("cancelled", "cancelled before it started")
    assert json.loads((reopened.run_dir(first) / "run.json").read_text()) == tiny("first")
    assert reopened.db_path == tmp_path / "jobs.sqlite"
    with sqlite3.connect(reopened.db_path) as conn:  # WAL: readers never wait for a writer
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bad_runs_are_refused_at_submit(tmp_path):
    queue = jobs.JobQueue(tmp_path, max_running=1)
    with pytest.raises(ValueError, match="^lr"):
        queue.submit(tiny(lr=-1.0), "ada")
    with pytest.raises(ValueError, match="^name"):
        queue.submit({"name": " ", "model": "face_resnet", "config": {}}, "ada")
    with pytest.raises(ValueError, match="cannot resume a job that is queued"):
        queue.resume(queue.submit(tiny(), "ada"), by="ada")
    assert len(queue.list_jobs()) == 1


def test_max_jobs_from_the_environment(monkeypatch):
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "3")
    assert jobs.default_max_jobs() == 3
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "zero")
    with pytest.raises(ValueError, match="FACELAB_MAX_JOBS"):
        jobs.default_max_jobs()
    monkeypatch.delenv(jobs.MAX_JOBS_ENV)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert jobs.default_max_jobs() == 1  # a CPU-only machine runs one job at a time
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert jobs.default_max_jobs() == 2 and launcher.least_busy_gpu(["cuda:0"]) == "cuda:1"


TICK = ("import json, sys; from lib.jobs.queue import JobQueue; "
        "print(json.dumps(JobQueue(sys.argv[1], max_running=2).tick()))")


def test_queue_limit_holds_when_sessions_tick_at_once(tmp_path):
    """Four jobs submitted at once, four app processes ticking at the same moment: two run."""
    queue = jobs.JobQueue(tmp_path, max_running=2)
    ids = [queue.submit(tiny(f"job{i}", epochs=50), f"user{i}") for i in range(4)]
    tickers = [subprocess.Popen([sys.executable, "-c", TICK, str(tmp_path)], cwd=config.PROJECT_ROOT,
                                stdout=subprocess.PIPE, text=True) for _ in range(4)]
    started = [json.loads(t.communicate(timeout=60)[0]) for t in tickers]
    assert sorted(job for batch in started for job in batch) == ids[:2]  # the oldest two, once each
    states = {job.id: job for job in queue.list_jobs()}
    assert [states[i].state for i in ids] == ["running", "running", "queued", "queued"]
    assert all(pid_alive(states[i].pid) for i in ids[:2])
    assert queue.tick() == []  # still full
    queue.cancel(ids[2], by="user2")  # a queued job is cancelled at once
    queue.cancel(ids[0], by="user0")
    assert wait_finished(queue, ids[0]).state == "cancelled"
    assert queue.get(ids[3]).state == "running"  # the freed slot went to the next in line
    for job_id, owner in ((ids[1], "user1"), (ids[3], "user3")):
        queue.cancel(job_id, force=True, by=owner)
        assert wait_finished(queue, job_id).state == "cancelled"
    assert queue.get(ids[2]).reason == "cancelled before it started"


def test_killed_job_is_failed_on_restart_then_resumes(tmp_path):
    queue = jobs.JobQueue(tmp_path, max_running=1)
    # Enough identities for epochs of a second or more: the kill must land while it trains.
    job_id = queue.submit(tiny("killed", epochs=2, subset={"classes": 40, "pairs": 12}), "ada")
    queue.tick()
    wait_for(lambda: log_has(queue, job_id, "starting: step 0/"), "the job to start training")
    pid = queue.get(job_id).pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), "the process to die")
    # What a write cut short by the kill leaves behind: a temporary file and a staged folder.
    run_dir = queue.run_dir(job_id)
    (run_dir / "probes").mkdir(exist_ok=True)
    unfinished = [run_dir / "probes" / ".epoch_0001.npy.k1ll3d.tmp", run_dir / ".last.k1ll3d.tmp"]
    unfinished[0].write_bytes(b"\x93NUMPY half")
    unfinished[1].mkdir()
    (unfinished[1] / "model.safetensors").write_bytes(b"half")
    # A fresh app process opening the registry notices the dead job.
    subprocess.run([sys.executable, "-c", "import sys; from lib.jobs.queue import JobQueue; JobQueue(sys.argv[1])",
                    str(tmp_path)], cwd=config.PROJECT_ROOT, check=True, timeout=60)
    job = queue.get(job_id)
    assert job.state == "failed"
    assert "stopped without reporting" in job.reason
    assert "starting: step 0/" in job.log_tail
    assert not any(path.exists() for path in unfinished)  # nobody is left to finish those writes
    assert (run_dir / "config.json").is_file()  # what was written whole stays
    queue.resume(job_id, by="ada")  # killed before its first save: it starts over, and runs to the end
    assert queue.tick() == [job_id]
    job = wait_finished(queue, job_id)
    assert (job.state, job.reason, job.exit_code, job.attempts, job.device) == ("done", "", 0, 2, "cpu")
    assert job.started <= job.ended
    folder = RunFolder(job.run_dir)
    metrics = folder.read_metrics()
    assert [row["epoch"] for row in metrics] == [1, 2] and 0.0 <= metrics[-1]["auc"] <= 1.0
    progress = folder.read_progress()
    assert progress["status"] == "done" and progress["step"] == progress["total_steps"]
    assert (job.run_dir / "best" / "meta.json").is_file() and "done:" in folder.log_tail()


def test_cancel_saves_and_resume_continues(tmp_path):
    queue = jobs.JobQueue(tmp_path, max_running=1)
    job_id = queue.submit(tiny("cancel-me", epochs=40), "ada")
    queue.tick()
    run_dir = queue.run_dir(job_id)
    folder = RunFolder(run_dir)
    wait_for(lambda: folder.read_metrics(), "the first epoch")
    queue.cancel(job_id, by="ada")
    job = wait_finished(queue, job_id)
    assert (job.state, job.exit_code) == ("cancelled", 0)
    assert folder.read_progress()["status"] == "cancelled"
    assert folder.has_resume() and (run_dir / "last" / "meta.json").is_file()
    steps_before = folder.read_progress()["step"]
    queue.resume(job_id, by="ada")
    queue.tick()
    wait_for(lambda: log_has(queue, job_id, f"resuming at step {steps_before}/"), "the resumed run")
    launches = [line for line in (run_dir / "log.txt").read_text().splitlines() if line.startswith("=== ")]
    assert len(launches) == 2 and "--resume" in launches[1] and "--resume" not in launches[0]
    queue.cancel(job_id, force=True, by="ada")
    job = wait_finished(queue, job_id)
    assert (job.state, job.reason) == ("cancelled", "stopped at once on request, without saving")


def test_job_users_reads_the_registry_without_touching_it(tmp_path):
    assert jobs.job_users(tmp_path) == {} and not (tmp_path / jobs.DB_NAME).exists()  # nothing created
    queue = jobs.JobQueue(tmp_path, max_running=1)
    first, second = queue.submit(tiny("first"), "ada"), queue.submit(tiny("second"), " bob ")
    assert jobs.job_users(tmp_path) == {first: "ada", second: "bob"}
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / jobs.DB_NAME).write_bytes(b"not a database")
    assert jobs.job_users(damaged) == {}


def test_reason_of_a_process_that_ended_without_reporting(tmp_path):
    queue = jobs.JobQueue(tmp_path, max_running=1)
    job = queue.get(queue.submit(tiny(), "ada"))
    assert launcher.outcome(job, -signal.SIGKILL) == (
        "failed", "the training process was killed by SIGKILL (often: the machine ran out of memory)")
    assert launcher.outcome(job, 2)[1].startswith("the run's settings were rejected")
    Path(job.run_dir / "progress.json").write_text(json.dumps({"status": "failed", "message": "loss is NaN"}))
    assert launcher.outcome(job, 1) == ("failed", "loss is NaN")


def test_only_the_owner_or_an_instructor_controls_a_job(tmp_path, monkeypatch):
    monkeypatch.setenv(config.INSTRUCTORS_ENV, "Prof Raj, ta@example.edu")
    queue = jobs.JobQueue(tmp_path, max_running=1)  # never ticked: the jobs stay queued
    job_id = queue.submit(tiny("adas-run"), "Ada")
    for action, attempt in (("cancel", lambda: queue.cancel(job_id, by="bob")),
                            ("stop", lambda: queue.cancel(job_id, force=True, by="bob"))):
        with pytest.raises(jobs.NotAllowedError, match=f"only Ada, who launched it, or an instructor named in "
                                                       f"FACELAB_INSTRUCTORS may {action} it"):
            attempt()
    assert queue.get(job_id).state == "queued" and not queue.get(job_id).cancel_requested
    queue.cancel(job_id, by=" ada ")  # case and spacing of a typed name do not matter
    with pytest.raises(jobs.NotAllowedError, match="may resume it"):
        queue.resume(job_id, by=("Bob Smith", "bob@example.edu"))
    assert queue.get(job_id).state == "cancelled"
    queue.resume(job_id, by=("Someone Signed In", "TA@example.edu"))  # an instructor, by e-mail
    assert queue.get(job_id).state == "queued"
    queue.cancel(job_id, by="prof raj")
    assert queue.get(job_id).state == "cancelled"


def test_a_job_launched_without_a_name_is_only_an_instructors_to_control(tmp_path, monkeypatch):
    monkeypatch.delenv(config.INSTRUCTORS_ENV, raising=False)
    queue = jobs.JobQueue(tmp_path, max_running=1)
    job_id = queue.submit(tiny("nameless"), "  ")
    assert queue.get(job_id).user == jobs.ANONYMOUS
    for nameless in ("", "anonymous", "Anonymous", ("", "")):
        with pytest.raises(jobs.NotAllowedError, match="launched without a name, so only an instructor named in "
                                                       "FACELAB_INSTRUCTORS \\(none is named on this host\\)"):
            queue.cancel(job_id, by=nameless)
    assert queue.get(job_id).state == "queued"
    monkeypatch.setenv(config.INSTRUCTORS_ENV, "prof")
    queue.cancel(job_id, by="Prof")
    assert queue.get(job_id).state == "cancelled"
