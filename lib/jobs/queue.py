"""Background training jobs: a registry that survives app restarts, and a queue.

Each job is one subprocess, `python -m lib train runs/<id>/run.json --out
runs/<id>`, started in its own session so it outlives the app that launched
it; its stdout and stderr go to runs/<id>/log.txt. The registry is SQLite in
runs/jobs.sqlite (WAL mode), shared by every browser session, thread and app
process. Starting jobs happens inside a `BEGIN IMMEDIATE` transaction, which
takes SQLite's write lock, so two sessions ticking at the same moment can
never start more jobs than the limit.

States: queued -> running -> done | failed | cancelled; a failed or cancelled
job can be queued again with `resume` (the engine continues from its resume
state). A job's final state comes from the process's exit code (when this
process is its parent) and the engine's progress.json; a process that vanished
without reporting (killed, machine restarted) is marked failed with its log's tail.

Something must tick the queue even when no page is open: lib/jobs/scheduler.py.
With FACELAB_LAUNCHER=slurm a job is a Slurm job instead (lib/jobs/launcher.py, lib/jobs/slurm.py):
its `pid` is the Slurm job id, its device "slurm:<partition>", and while it waits or runs its
`reason` holds Slurm's state ("Slurm: PENDING (Resources)"). Ownership rules are the same.

Everyone sees every job, but only its owner (the name it was launched under) and the
instructors named in FACELAB_INSTRUCTORS may cancel, stop or resume it: see `may_control`.
"""
from __future__ import annotations

import errno
import functools
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lib.base import config
from lib.base.files import remove_unfinished_writes
from lib.jobs import launcher
from lib.store.run_folder import RunFolder

FINISHED = ("done", "failed", "cancelled")
MAX_JOBS_ENV = "FACELAB_MAX_JOBS"
DB_NAME = "jobs.sqlite"
FORCED = launcher.FORCED  # cancel_requested value of a forced stop (SIGKILL)
ANONYMOUS = "anonymous"  # the user of a job launched without a name
SLURM_MAX_JOBS = 200  # jobs submitted to Slurm at once unless FACELAB_MAX_JOBS says otherwise

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    user TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    pid INTEGER,
    pid_start TEXT,
    device TEXT,
    resume INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    log_tail TEXT NOT NULL DEFAULT ''
)
"""


class RunsFolderError(ValueError):
    """The runs folder cannot be written (read-only, full disk): the user's to fix, not a bug."""


class NotAllowedError(ValueError):
    """Someone who is neither a job's owner nor an instructor tried to cancel, stop or resume it."""


_STORAGE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_STORAGE_SQLITE = ("unable to open database", "readonly database", "disk i/o error", "database or disk is full")


def _storage_errors(method):
    """A storage failure inside a JobQueue method becomes a RunsFolderError naming the folder
    and the fix, so every page can show it instead of a traceback."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (OSError, sqlite3.OperationalError) as err:
            if not (getattr(err, "errno", None) in _STORAGE_ERRNOS
                    or any(text in str(err).lower() for text in _STORAGE_SQLITE)):
                raise
            raise RunsFolderError(_storage_message(Path(self.runs_dir), err)) from err
    return wrapper


def _storage_message(folder: Path, err: Exception) -> str:
    existing = folder if folder.exists() else folder.parent
    disk = os.statvfs(existing)
    state = ("is read-only" if not os.access(existing, os.W_OK) else
             "is on a full disk" if disk.f_bavail * disk.f_frsize < 2**20 else "cannot be written")
    detail = getattr(err, "strerror", None) or str(err)
    return (f"the runs folder {folder} {state} ({detail}): jobs cannot be launched or updated, and nothing in "
            f"it was changed. Make it writable or free some space, or set {config.RUNS_DIR_ENV} to another folder.")


@dataclass(frozen=True)
class Job:
    id: str
    name: str
    user: str
    state: str
    created: float
    started: float | None
    ended: float | None
    pid: int | None
    pid_start: str | None
    device: str | None
    resume: int
    attempts: int
    cancel_requested: int
    exit_code: int | None
    reason: str
    log_tail: str
    run_dir: Path

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def can_resume(self) -> bool:
        return self.state in ("failed", "cancelled")


def _person(name: str) -> str:
    """A name as it is compared: case and spacing do not matter ("Ada  Lovelace" is "ada lovelace")."""
    return " ".join(str(name or "").split()).casefold()


def acting_names(by: str | Iterable[str]) -> set[str]:
    """The names someone acts under (a name, or a signed-in name and e-mail), compared as `_person`.
    "anonymous" is nobody's name: a session without one must not own every nameless job."""
    names = [by] if isinstance(by, str) else list(by)
    return {person for person in map(_person, names) if person and person != ANONYMOUS}


def is_instructor(by: str | Iterable[str]) -> bool:
    return bool(acting_names(by) & {_person(name) for name in config.instructors()})


def has_no_owner(job: Job) -> bool:
    """A job launched without a name: user "anonymous" (or empty, in an old registry)."""
    return _person(job.user) in ("", ANONYMOUS)


def may_control(job: Job, by: str | Iterable[str]) -> bool:
    """Whether `by` may cancel, stop or resume `job`: its owner or an instructor.

    A job launched without a name (user "anonymous", or empty in an old registry) belongs to
    no one, so only an instructor may control it. Letting every nameless session control every
    nameless job would hand a class's worth of them to whoever leaves the name field empty, and
    anyone can empty it; a student who wants to stop their own runs types a name before launching.
    """
    if is_instructor(by):
        return True
    return not has_no_owner(job) and _person(job.user) in acting_names(by)


def check_may_control(job: Job, by: str | Iterable[str], action: str) -> None:
    """Raise NotAllowedError, naming who may `action` the job, unless `by` may."""
    if may_control(job, by):
        return
    instructor = f"an instructor named in {config.INSTRUCTORS_ENV}"
    if not config.instructors():
        instructor += " (none is named on this host)"
    if has_no_owner(job):
        who = f"it was launched without a name, so only {instructor} may {action} it"
    else:
        who = f"only {job.user}, who launched it, or {instructor} may {action} it"
    raise NotAllowedError(f"job {job.id}: {who}")


def default_max_jobs() -> int:
    """FACELAB_MAX_JOBS if set, else one job per GPU, or one job on a CPU-only machine; with Slurm
    (which queues jobs itself) SLURM_MAX_JOBS submitted at once."""
    configured = os.environ.get(MAX_JOBS_ENV, "").strip()
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise ValueError(f"{MAX_JOBS_ENV}: expected a whole number >= 1, got {configured!r}")
        return int(configured)
    if config.launcher() == "slurm":
        return SLURM_MAX_JOBS
    return max(1, len(launcher.gpu_ids()))


def new_job_id(name: str) -> str:
    """Sortable, readable and unique: 20250101-120000-my-run-3f2a."""
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:32] or "run"
    while "--" in slug:
        slug = slug.replace("--", "-")
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"


def validate_run(run: dict) -> dict:
    """Check a run {"name", "model", "config"} the way the engine will (lib.train.config), so a
    mistake is reported when it is submitted rather than as a failed job."""
    from lib.train.config import config_from_run  # imports torch: only when submitting
    if not isinstance(run, dict):
        raise ValueError(f"run must be a JSON object, got {type(run).__name__}")
    name = run.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name: expected a non-empty text, got {name!r}")
    config_from_run(run)
    return run


class JobQueue:
    """The job registry of one runs folder, and the queue that starts its jobs."""

    @_storage_errors
    def __init__(self, runs_dir: Path | None = None, max_running: int | None = None):
        self.runs_dir = Path(runs_dir or config.runs_dir())
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.runs_dir / DB_NAME
        self.max_running = max_running or default_max_jobs()
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
        self.reap()  # jobs whose process died while no app was watching

    # --- storage -----------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        # One short-lived connection per call: safe across Streamlit's threads.
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn

    @contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE takes the write lock at once, so read-decide-write is atomic
        across every process using this runs folder."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def _job(self, row: sqlite3.Row) -> Job:
        return Job(**dict(row), run_dir=self.run_dir(row["id"]))

    def run_dir(self, job_id: str) -> Path:
        return self.runs_dir / job_id

    # --- queries -------------------------------------------------------------
    @_storage_errors
    def list_jobs(self) -> list[Job]:
        """Every job, newest first."""
        conn = self._connect()
        try:
            rows = conn.execute("SELECT * FROM jobs ORDER BY created DESC, id DESC").fetchall()
        finally:
            conn.close()
        return [self._job(row) for row in rows]

    @_storage_errors
    def get(self, job_id: str) -> Job:
        conn = self._connect()
        try:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        finally:
            conn.close()
        if row is None:
            raise ValueError(f"job {job_id!r}: no such job in {self.db_path}")
        return self._job(row)

    def read_run(self, job_id: str) -> dict:
        return RunFolder(self.run_dir(job_id)).read_run()

    # --- commands ------------------------------------------------------------
    @_storage_errors
    def submit(self, run: dict, user: str) -> str:
        """Queue a run (validated, written to runs/<id>/run.json); `tick()` starts it."""
        validate_run(run)
        for _ in range(100):  # a class launching one recipe in the same second may draw an id twice
            job_id = new_job_id(run["name"])
            run_dir = self.run_dir(job_id)
            try:
                run_dir.mkdir(parents=True)
                break
            except FileExistsError:
                continue
        try:
            RunFolder(run_dir).write_run(run)
            with self._transaction() as conn:
                conn.execute("INSERT INTO jobs (id, name, user, state, created) VALUES (?, ?, ?, 'queued', ?)",
                             (job_id, run["name"].strip(), (user or "").strip() or ANONYMOUS, time.time()))
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)  # no half-submitted job left behind
            raise
        return job_id

    @_storage_errors
    def tick(self) -> list[str]:
        """Reap finished jobs, then start queued ones (oldest first) up to the limit.
        Returns the ids started."""
        started = []
        with self._transaction() as conn:
            self._reap(conn)
            running = [self._job(r) for r in conn.execute("SELECT * FROM jobs WHERE state = 'running'")]
            free = self.max_running - len(running)
            if free <= 0:
                return started
            queued = conn.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY created, id LIMIT ?",
                                  (free,)).fetchall()
            busy = [job.device for job in running]
            for row in queued:
                job = self._job(row)
                busy.append(self._start(conn, job, busy))
                started.append(job.id)
        return started

    @_storage_errors
    def reap(self) -> list[str]:
        """Mark jobs whose process has ended as done, failed or cancelled; returns their ids."""
        with self._transaction() as conn:
            return self._reap(conn)

    @_storage_errors
    def cancel(self, job_id: str, force: bool = False, *, by: str | Iterable[str]) -> None:
        """Queued: cancelled at once. Running: SIGTERM (the engine finishes its step, saves,
        and stops), or SIGKILL with force=True; the state follows when the process exits.
        `by` (a name, or several for one person) must own the job or be an instructor."""
        with self._transaction() as conn:
            job = self._job(self._row(conn, job_id))
            check_may_control(job, by, "stop" if force else "cancel")
            if job.state == "queued":
                conn.execute("UPDATE jobs SET state = 'cancelled', ended = ?, reason = ? WHERE id = ?",
                             (time.time(), "cancelled before it started", job_id))
                return
            if job.state != "running":
                raise ValueError(f"job {job_id}: cannot cancel a job that is {job.state}")
            conn.execute("UPDATE jobs SET cancel_requested = ? WHERE id = ?", (FORCED if force else 1, job_id))
            launcher.stop_job(job, force=force)

    @_storage_errors
    def resume(self, job_id: str, *, by: str | Iterable[str]) -> None:
        """Queue a failed or cancelled job again; it continues from its saved state
        (`--resume`) when it has one, else starts over. `by` as for `cancel`."""
        with self._transaction() as conn:
            job = self._job(self._row(conn, job_id))
            check_may_control(job, by, "resume")
            if not job.can_resume:
                hint = " (start a new run to train longer)" if job.state == "done" else ""
                raise ValueError(f"job {job_id}: cannot resume a job that is {job.state}{hint}")
            conn.execute("UPDATE jobs SET state = 'queued', resume = 1, pid = NULL, pid_start = NULL, "
                         "ended = NULL, exit_code = NULL, cancel_requested = 0, reason = '', log_tail = '' "
                         "WHERE id = ?", (job_id,))

    # --- internals -----------------------------------------------------------
    @staticmethod
    def _row(conn: sqlite3.Connection, job_id: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise ValueError(f"job {job_id!r}: no such job")
        return row

    def _reap(self, conn: sqlite3.Connection) -> list[str]:
        launcher.reap_children()
        ended = []
        for row in conn.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall():
            job = self._job(row)
            alive, exit_code, cluster = launcher.job_state(job)
            if alive:
                if cluster != job.reason:  # Slurm's state of a job waiting or running, for the Runs page
                    conn.execute("UPDATE jobs SET reason = ? WHERE id = ?", (cluster, job.id))
                continue
            state, reason = launcher.outcome(job, exit_code, cluster)
            # The job's processes are gone: a write they were killed in the middle of stays unfinished.
            remove_unfinished_writes(job.run_dir)
            tail = RunFolder(job.run_dir).log_tail() if state == "failed" else ""
            conn.execute("UPDATE jobs SET state = ?, ended = ?, exit_code = ?, reason = ?, log_tail = ? "
                         "WHERE id = ?", (state, time.time(), exit_code, reason, tail, job.id))
            ended.append(job.id)
        return ended

    def _start(self, conn: sqlite3.Connection, job: Job, busy: list) -> str | None:
        """Start a job on the configured launcher; returns the device it got (None if it failed)."""
        try:
            started = launcher.start(job, busy, cpu_share=self.max_running)
        except (OSError, ValueError) as err:
            conn.execute("UPDATE jobs SET state = 'failed', ended = ?, reason = ? WHERE id = ?",
                         (time.time(), f"could not start the training process: {err}", job.id))
            return None
        conn.execute("UPDATE jobs SET state = 'running', started = ?, pid = ?, pid_start = ?, device = ?, "
                     "reason = '', attempts = attempts + 1 WHERE id = ?",
                     (time.time(), started.pid, started.pid_start, started.device, job.id))
        return started.device


def job_users(runs_dir: Path) -> dict[str, str]:
    """job id -> who launched it, read from a runs folder's registry without opening a JobQueue
    (nothing is created or reaped): {} when the folder has no registry, or it is busy or damaged."""
    path = Path(runs_dir) / DB_NAME
    if not path.is_file():
        return {}
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return {str(i): str(u) for i, u in conn.execute("SELECT id, user FROM jobs")}
        finally:
            conn.close()
    except sqlite3.Error:
        return {}  # a busy or damaged registry only costs the user in a label
