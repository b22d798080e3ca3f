"""Shared by the job and page tests: tiny real runs, and waiting for a job's state."""
from __future__ import annotations

import time

from lib.jobs import queue as jobs
from tests.train_cases import tiny_run

WAIT_S = 240  # generous: the test machine's two cores are shared


def tiny(name: str = "tiny", **changes) -> dict:
    """About 40 images of 4 identities, batch 8: a few steps per epoch, seconds per job."""
    values = {"epochs": 1, "subset": {"classes": 4, "pairs": 12}}
    values.update(changes)
    run = tiny_run(**values)
    run["name"] = name
    return run


def wait_for(predicate, what: str, queue: jobs.JobQueue | None = None):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if queue is not None:
            queue.tick()
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def wait_finished(queue: jobs.JobQueue, job_id: str) -> jobs.Job:
    return wait_for(lambda: (job := queue.get(job_id)).finished and job, f"job {job_id} to finish", queue)


def log_has(queue: jobs.JobQueue, job_id: str, text: str) -> bool:
    path = queue.run_dir(job_id) / "log.txt"
    return path.is_file() and text in path.read_text()
