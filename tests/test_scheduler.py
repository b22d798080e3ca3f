"""The runs folder's one scheduler: after a restart the queue moves with nobody on any page,
and of several schedulers on one folder exactly one ticks."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from lib.base import config
from lib.jobs import launcher
from lib.jobs import queue as jobs
from lib.jobs import scheduler as scheduling
from tests.browser_support import AppServer, running_app
from tests.job_cases import states, tiny, wait_for

RESTART_S = 30  # "within seconds", with room for a busy two-core machine
# Another process taking a runs folder's scheduler lock, then holding it until it is killed.
HOLD_LOCK = ("import sys, time; from lib.jobs.scheduler import SchedulerLock; lock = SchedulerLock(sys.argv[1]); "
             "print(lock.try_acquire(), flush=True); time.sleep(600)")


def count_ticks(monkeypatch, folder: Path) -> list[Path]:
    """Every tick of ``folder``'s queue, from any scheduler in this process (no job is started).
    Ticker threads that earlier tests left on their own folders are not counted."""
    ticked: list[Path] = []
    mine = Path(folder).resolve()

    def tick(queue):
        if Path(queue.runs_dir).resolve() == mine:
            ticked.append(mine)
        return []

    monkeypatch.setattr(jobs.JobQueue, "tick", tick)
    return ticked


def test_of_two_schedulers_on_one_folder_only_one_ticks(tmp_path, monkeypatch):
    jobs.JobQueue(tmp_path, max_running=1)
    ticked = count_ticks(monkeypatch, tmp_path)
    first, second = scheduling.Scheduler(tmp_path), scheduling.Scheduler(tmp_path)
    try:
        assert [first.step(), second.step(), first.step(), second.step()] == [True, False, True, False]
        assert len(ticked) == 2
        first.lock.release()  # the first one stops: the standby takes over at its next try
        assert [second.step(), first.step()] == [True, False]
        assert len(ticked) == 3
    finally:
        first.lock.release()
        second.lock.release()


def test_a_scheduler_killed_without_cleanup_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], cwd=config.PROJECT_ROOT,
                              stdout=subprocess.PIPE, text=True)
    standby = scheduling.Scheduler(tmp_path)
    try:
        assert holder.stdout.readline().strip() == "True"
        assert (tmp_path / scheduling.LOCK_NAME).read_text().strip() == str(holder.pid)  # who schedules
        assert not standby.step()
        holder.kill()  # as in a power cut: nothing is released by hand
        holder.wait(timeout=30)
        assert standby.step()
    finally:
        standby.lock.release()
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
        holder.stdout.close()


def test_a_pages_ticker_stands_by_while_the_folder_has_a_scheduler(tmp_path, monkeypatch):
    jobs.JobQueue(tmp_path, max_running=1)
    ticked = count_ticks(monkeypatch, tmp_path)
    scheduler = scheduling.Scheduler(tmp_path)
    try:
        assert scheduler.step()
        scheduling.start_ticker(tmp_path, interval_s=0.1)
        time.sleep(1.0)
        assert len(ticked) == 1  # the ticker thread tried the lock ten times and never ticked
        scheduler.lock.release()
        wait_for(lambda: len(ticked) > 1, "the ticker to take over", timeout=10)
    finally:
        scheduler.lock.release()
        (tmp_path / jobs.DB_NAME).unlink()  # the ticker ends with its registry
        scheduling._TICKERS[tmp_path.resolve()].join(timeout=10)


# --------------------------------------------------------------------------- the real app, restarted

def dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


def leave_running_without_a_process(db_path: Path, job_id: str) -> None:
    """What the registry holds after a power cut: a job 'running' under a process that is gone."""
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE jobs SET state = 'running', started = ?, pid = ?, pid_start = '0', device = 'cpu', "
                     "attempts = 1 WHERE id = ?", (time.time(), dead_pid(), job_id))


def start_scheduler_beside(server: AppServer, log_path: Path) -> subprocess.Popen:
    """The scheduler process as `make run` starts it: for the app's runs folder, while the app lives."""
    env = dict(os.environ, **{config.RUNS_DIR_ENV: str(server.runs_dir), jobs.MAX_JOBS_ENV: "1"})
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "lib", "scheduler", "--while-alive", str(server.process.pid)],
                                cwd=config.PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)


def stop_if_running(queue: jobs.JobQueue, job_id: str) -> None:
    job = queue.get(job_id)
    if launcher.process_state(job.pid, job.pid_start)[0]:
        launcher.stop(job.pid, force=True)


def test_after_a_restart_the_queue_moves_with_nobody_on_any_page(tmp_path):
    runs_dir = tmp_path / "runs"
    queue = jobs.JobQueue(runs_dir, max_running=1)
    waiting = queue.submit(tiny("waiting"), "ada")
    orphan = queue.submit(tiny("orphan"), "bob")
    leave_running_without_a_process(queue.db_path, orphan)
    # From here on this test only reads the registry: opening a JobQueue would reap the orphan itself.
    log_path = tmp_path / "scheduler.log"
    scheduler = None
    try:
        with running_app(runs_dir, env={jobs.MAX_JOBS_ENV: "1"}) as server:  # asked for nothing but its health
            scheduler = start_scheduler_beside(server, log_path)
            try:
                wait_for(lambda: states(queue)[orphan] == "failed" and states(queue)[waiting] in ("running", "done"),
                         "the dead job to be reaped as failed and the queued one to start", timeout=RESTART_S)
            except pytest.fail.Exception as failure:
                raise AssertionError(f"{failure}\nstates: {states(queue)}\nscheduler's log:\n"
                                     f"{log_path.read_text(errors='replace')[-3000:]}") from None
        assert "stopped without reporting" in queue.get(orphan).reason
        assert scheduler.wait(timeout=30) == 0  # it ends with the app
    finally:
        if scheduler is not None and scheduler.poll() is None:
            scheduler.kill()
            scheduler.wait(timeout=30)
        stop_if_running(queue, waiting)
