"""Shared by the job, page, classroom and fault tests: tiny real runs, a small data set of a
student's own, and waiting for a job's state."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from lib.base import config
from lib.jobs import queue as jobs
from lib.store.run_folder import RunFolder
from tests.train_cases import tiny_run

WAIT_S = 240  # generous: the test machine's two cores are shared


def tiny(name: str = "tiny", **changes) -> dict:
    """About 40 images of 4 identities, batch 8: a few steps per epoch, seconds per job."""
    return tiny_run(name, **{"epochs": 1, "subset": {"classes": 4, "pairs": 12}, **changes})


def wait_for(predicate, what: str, queue: jobs.JobQueue | None = None, timeout: float = WAIT_S,
             interval: float = 0.2):
    """Poll until predicate() is truthy and return its value (ticking ``queue`` first, as the
    app's scheduler does); fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        if queue is not None:
            queue.tick()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout:.0f} s still waiting for: {what}")
        time.sleep(interval)


def wait_finished(queue: jobs.JobQueue, job_id: str) -> jobs.Job:
    return wait_for(lambda: (job := queue.get(job_id)).finished and job, f"job {job_id} to finish", queue)


def log_has(queue: jobs.JobQueue, job_id: str, text: str) -> bool:
    return text in RunFolder(queue.run_dir(job_id)).log_tail(lines=10_000, max_chars=1_000_000)


def states(queue) -> dict[str, str]:
    return {job.id: job.state for job in queue.list_jobs()}


def small_dataset(dest: Path, identities: int = 6, train_per: int = 8, dev_per: int = 2, pairs: int = 24) -> Path:
    """A few identities of the embedded LFW-64 copied into a new HW2P2-layout folder: what a student
    with their own (small) data would point FaceLab at, and an epoch of a second or two."""
    source = config.EMBEDDED_DATA
    people = [d.name for d in sorted((source / "cls_data" / "train").iterdir())
              if len(list(d.iterdir())) >= train_per and (source / "cls_data" / "dev" / d.name).is_dir()
              and len(list((source / "cls_data" / "dev" / d.name).iterdir())) >= dev_per][:identities]
    for split, count in (("train", train_per), ("dev", dev_per)):
        for person in people:
            target = dest / "cls_data" / split / person
            target.mkdir(parents=True)
            for image in sorted((source / "cls_data" / split / person).iterdir())[:count]:
                shutil.copy(image, target / image.name)
    lines = (source / "val_pairs.txt").read_text().splitlines()
    chosen = [line for line in lines if line.endswith(" 1")][:pairs // 2]
    chosen += [line for line in lines if line.endswith(" 0")][:pairs - len(chosen)]
    (dest / "ver_data").mkdir(parents=True)
    for name in {part for line in chosen for part in line.split()[:2]}:
        shutil.copy(source / name, dest / name)
    (dest / "val_pairs.txt").write_text("\n".join(chosen) + "\n")
    return dest
