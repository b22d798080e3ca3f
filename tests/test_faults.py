"""Faults a classroom host meets: the app killed while jobs run, a full disk, a
read-only runs folder. Real processes, real files, real mounts where allowed."""
from __future__ import annotations

import json
import os
import signal
import sqlite3

import pytest
import torch

from lib.jobs import queue as jobs
from lib.store.checkpoint import load_checkpoint
from lib.store.run_folder import RunFolder
from tests.browser_support import AppServer
from tests.disk_conditions import file_size_limit, grow_disk, leftover_temp_files, metric_lines, read_only, small_disk
from tests.job_cases import states, tiny, wait_for
from tests.stream_session import StreamSession

JOB_TIMEOUT = 150  # seconds for a few-second job on a busy two-core machine
# 4 identities, batch 16, resume state every second: jobs of a few seconds that leave a
# resume state behind when they are killed.
FAULT_JOB = {"batch_size": 16, "resume_every_s": 1.0, "subset": {"classes": 4, "images": 64, "pairs": 40}}


def assert_checkpoint_intact(folder, epoch: int | None = None) -> None:
    """Loads with its checked loader, computes finite embeddings, and says which epoch it is."""
    loaded = load_checkpoint(folder)
    images = torch.rand(2, 3, loaded.spec.input_size, loaded.spec.input_size)
    with torch.no_grad():
        embedding = loaded.model.embed(images)
    assert embedding.shape == (2, loaded.spec.head.embedding_dim)
    assert torch.isfinite(embedding).all()
    if epoch is not None:
        assert loaded.meta.epoch == epoch


def open_runs_page(server: AppServer) -> list[str]:
    """What a student sees on the Runs page (the page also starts the app's queue ticker)."""
    with StreamSession(server.url, timeout=120) as session:
        session.open()
        result = session.open("runs")
        assert not [p for p in result.problems() if p.startswith("exception")], result.problems()
        return result.texts()


def integrity(db_path) -> str:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def pull_the_plug(server: AppServer, queue, short: str, long: str, waiting: str) -> None:
    """Kill the app while it runs two jobs, and one of the jobs with it, as in a power cut;
    the other job was started by the dead app and finishes with nobody watching."""
    wait_for(lambda: states(queue)[long] == "running" and metric_lines(queue.run_dir(long)),
             "the long job to finish its first epoch", timeout=JOB_TIMEOUT)
    assert list(states(queue).values()).count("running") <= 2
    victim = queue.get(long).pid
    server.kill()  # the queue's owner dies without any cleanup ...
    os.killpg(victim, signal.SIGKILL)  # ... and so does one job
    wait_for(lambda: RunFolder(queue.run_dir(short)).read_progress().get("status") == "done",
             "the short job to finish with nobody watching", timeout=JOB_TIMEOUT)
    assert states(queue)[waiting] in ("queued", "running")


def check_after_restart(queue, short: str, long: str, waiting: str) -> None:
    final = wait_for(lambda: (s := states(queue))[waiting] == "done" and s,
                     "the waiting job to be started by the restarted app and finish", timeout=JOB_TIMEOUT)
    assert final[short] == "done"
    assert final[long] == "failed"
    assert "without reporting" in queue.get(long).reason or "killed" in queue.get(long).reason
    assert_checkpoint_intact(queue.run_dir(short) / "best")
    assert_checkpoint_intact(queue.run_dir(short) / "last", epoch=2)
    assert_checkpoint_intact(queue.run_dir(long) / "last")  # written before the kill
    assert leftover_temp_files(queue.runs_dir) == []


def check_resumed(queue, long: str, epochs_before: int) -> None:
    log = (queue.run_dir(long) / "log.txt").read_text()
    assert "resuming at step" in log and "resuming at step 0/" not in log
    epochs = [json.loads(line)["epoch"] for line in metric_lines(queue.run_dir(long))]
    assert epochs[-1] == 12 and epochs_before >= 1
    assert sorted(set(epochs)) == list(range(1, 13))  # no epoch lost across the crash
    assert_checkpoint_intact(queue.run_dir(long) / "last", epoch=12)
    assert integrity(queue.db_path) == "ok"


def test_killing_the_app_while_jobs_run_loses_nothing(tmp_path):
    runs_dir = tmp_path / "runs"
    queue = jobs.JobQueue(runs_dir, max_running=2)  # this test only reads and writes the registry
    short = queue.submit(tiny("short", epochs=2, **FAULT_JOB), "ada")
    long = queue.submit(tiny("long", epochs=12, **FAULT_JOB), "bob")
    waiting = queue.submit(tiny("waiting", epochs=1, **FAULT_JOB), "cy")
    server = AppServer(runs_dir, env={jobs.MAX_JOBS_ENV: "2"}).start()
    try:
        open_runs_page(server)  # the app now owns the queue and starts two jobs
        pull_the_plug(server, queue, short, long, waiting)
        server.start()  # restart: the new app finds the registry as the old one left it
        open_runs_page(server)
        check_after_restart(queue, short, long, waiting)
        epochs_before = len(metric_lines(queue.run_dir(long)))
        queue.resume(long, by="bob")
        wait_for(lambda: states(queue)[long] == "done", "the resumed job to finish", timeout=JOB_TIMEOUT)
    finally:
        server.stop()
    check_resumed(queue, long, epochs_before)


def run_until_finished(queue, job_id: str) -> jobs.Job:
    def finished() -> bool:
        try:
            queue.tick()
            return queue.get(job_id).finished
        except jobs.RunsFolderError:
            return False  # the disk is full at this moment; the app's ticker retries the same way
    wait_for(finished, f"job {job_id} to finish", timeout=JOB_TIMEOUT)
    return queue.get(job_id)


def test_a_full_disk_fails_the_job_clearly_and_keeps_what_was_saved(tmp_path):
    """The first epoch's checkpoints fit, the resume state does not."""
    runs_dir = tmp_path / "runs"
    with small_disk(runs_dir, size_kb=320) as mounted:
        queue = jobs.JobQueue(runs_dir, max_running=1)
        job_id = queue.submit(tiny("filler", epochs=3, **FAULT_JOB), "ada")
        if mounted:
            job = run_until_finished(queue, job_id)
        else:  # no tmpfs: the training process may write 150 KB per file at most
            with file_size_limit(150_000):
                queue.tick()
            job = run_until_finished(queue, job_id)
        assert job.state == "failed"
        explanation = f"{job.reason}\n{RunFolder(job.run_dir).read_progress().get('message', '')}"
        assert "space" in explanation.lower() or "too large" in explanation.lower(), explanation
        assert leftover_temp_files(runs_dir) == []
        for name in ("best", "last"):
            if (job.run_dir / name).exists():
                assert_checkpoint_intact(job.run_dir / name)
        assert integrity(queue.db_path) == "ok"
        assert [j.id for j in queue.list_jobs()] == [job_id]

        if mounted:  # the message says: free some space and resume the job
            grow_disk(runs_dir, 4096)
        queue.resume(job_id, by="ada")
        job = run_until_finished(queue, job_id)
        assert job.state == "done", job.reason
        assert_checkpoint_intact(job.run_dir / "last", epoch=3)


def test_a_read_only_runs_folder_gives_a_clear_error_and_changes_nothing(tmp_path):
    runs_dir = tmp_path / "runs"
    queue = jobs.JobQueue(runs_dir, max_running=1)
    kept = queue.submit(tiny("kept", **FAULT_JOB), "ada")
    before = (runs_dir / jobs.DB_NAME).read_bytes()
    server = AppServer(runs_dir, env={jobs.MAX_JOBS_ENV: "1"})
    with read_only(runs_dir):
        with pytest.raises(jobs.RunsFolderError, match="read-only") as caught:
            jobs.JobQueue(runs_dir).submit(tiny("refused", **FAULT_JOB), "bob")
        assert str(runs_dir) in str(caught.value)
        server.start()
        try:
            with StreamSession(server.url, timeout=120) as session:
                session.open()
                result = session.open("runs")
                assert not [p for p in result.problems() if p.startswith("exception")], result.problems()
                errors = " ".join(p for p in result.problems() if p.startswith("error"))
                assert "read-only" in errors and str(runs_dir) in errors, result.texts()
                result = session.open("train")
                if any(e.kind == "button" and e.label == "Launch" for e in result.elements):
                    result = session.click("Launch")  # the registry could still be read: launching fails
                assert not [p for p in result.problems() if p.startswith("exception")], result.problems()
                assert "read-only" in " ".join(result.problems()), result.problems()
            assert server.healthy()
        finally:
            server.stop()
    assert (runs_dir / jobs.DB_NAME).read_bytes() == before
    assert states(jobs.JobQueue(runs_dir, max_running=1)) == {kept: "queued"}
