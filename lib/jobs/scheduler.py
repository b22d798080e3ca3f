"""The runs folder's one scheduler: ticks the job queue whether or not anyone has a page open.

Several may offer to (the `python -m lib scheduler` process that `make run` starts beside the
app, the thread the Runs and Train pages start, in any number of app processes); an advisory
lock in the runs folder (`SchedulerLock`) makes exactly one of them tick and the others stand by.
Pages may still tick the queue directly to look fresher: tick() is safe to run concurrently
(BEGIN IMMEDIATE).
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from pathlib import Path

from lib.base import config
from lib.jobs.queue import DB_NAME, JobQueue

LOCK_NAME = "scheduler.lock"
SCHEDULER_INTERVAL_S = 2.0


class SchedulerLock:
    """flock on runs/scheduler.lock: whoever holds it is the runs folder's one scheduler.

    The kernel drops the lock when its holder exits or dies, however it dies (SIGKILL, power
    cut), so there is never a stale lock to clean up, and a standby takes over at its next try.
    The file is opened close-on-exec, so a training process started by the holder never keeps
    the lock alive after the holder is gone."""

    def __init__(self, runs_dir: Path):
        self.path = Path(runs_dir) / LOCK_NAME
        self._file = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free (never waits); True while this holder has it."""
        if self._file is not None and self._still_the_lock_file():
            return True
        self.release()
        handle = open(self.path, "a+b")  # noqa: SIM115 - kept open for as long as the lock is held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        except BaseException:
            handle.close()
            raise
        self._file = handle
        self._write_holder()
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the lock
            self._file = None

    def _still_the_lock_file(self) -> bool:
        """A runs folder removed and made again has a new lock file that someone else may lock:
        holding the old, unlinked one would then make two schedulers."""
        try:
            return os.fstat(self._file.fileno()).st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    def _write_holder(self) -> None:
        """The holder's pid in the file, for an operator wondering which process schedules."""
        self._file.truncate(0)
        self._file.write(f"{os.getpid()}\n".encode())
        self._file.flush()


class Scheduler:
    """Ticks one runs folder's queue while it holds the folder's SchedulerLock, and stands by
    (trying the lock at every interval) while another process or thread holds it."""

    def __init__(self, runs_dir: Path, interval_s: float = SCHEDULER_INTERVAL_S, max_running: int | None = None):
        self.runs_dir = Path(runs_dir).resolve()
        self.interval_s = interval_s
        self.max_running = max_running
        self.lock = SchedulerLock(self.runs_dir)

    def step(self) -> bool:
        """Tick the queue if this is the folder's scheduler; returns whether it ticked."""
        if not self.lock.try_acquire():
            return False
        JobQueue(self.runs_dir, self.max_running).tick()
        return True

    def run(self, keep_going, stop: threading.Event | None = None, on_error=None) -> None:
        """Step every interval while keep_going() holds and `stop` is not set, then let go of
        the lock. A failing step (busy or unwritable runs folder, bad FACELAB_MAX_JOBS) is
        handed to on_error and tried again at the next interval."""
        stop = stop or threading.Event()
        try:
            while not stop.is_set() and keep_going():
                try:
                    self.step()
                except (sqlite3.Error, OSError, ValueError) as err:
                    if on_error is not None:
                        on_error(err)
                stop.wait(self.interval_s)
        finally:
            self.lock.release()


_TICKERS: dict[Path, threading.Thread] = {}
_TICKERS_LOCK = threading.Lock()


def start_ticker(runs_dir: Path | None = None, interval_s: float = 3.0) -> None:
    """Offer this process as the scheduler of a runs folder: a daemon thread (one per folder and
    process) that ticks the queue while it holds the folder's SchedulerLock and stands by
    otherwise. It serves only a folder that already has a registry, and ends when the registry
    is removed, so starting it never creates a runs folder."""
    folder = Path(runs_dir or config.runs_dir()).resolve()
    with _TICKERS_LOCK:
        if folder in _TICKERS and _TICKERS[folder].is_alive():
            return
        thread = threading.Thread(target=_schedule_while_registered, args=(folder, interval_s),
                                  name=f"facelab-jobs-{folder.name}", daemon=True)
        _TICKERS[folder] = thread
        thread.start()


def _schedule_while_registered(folder: Path, interval_s: float) -> None:
    Scheduler(folder, interval_s).run(keep_going=(folder / DB_NAME).exists)
