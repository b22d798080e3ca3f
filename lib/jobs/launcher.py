"""The processes behind training jobs: launching one in its own session, telling
whether it still runs, signalling it, choosing its device, and reading how it
ended (exit code plus the engine's progress.json).

Two backends sit behind `start`, `job_state` and `stop_job`, chosen by FACELAB_LAUNCHER
(lib/base/config.py): "local" (the default) runs each job as a process on this machine;
"slurm" submits it to a Slurm partition (lib/jobs/slurm.py). A job's device says which ran it:
"cpu" or "cuda:N[,M...]" locally, "slurm:<partition>" on the cluster, where `pid` holds the
Slurm job id. A run with gpus_per_job N > 1 runs as `torchrun --standalone --nproc_per_node N`
(one process per GPU, or N gloo processes on the CPU) on either backend.

Linux's /proc gives a process's state and start time: a finished child that
nobody has reaped yet is a zombie that still "exists", and a pid can be reused
by an unrelated process later, so a pid alone does not prove a job is alive.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lib.base import config
from lib.jobs import slurm
from lib.store.run_folder import RunFolder

FORCED = 2  # a job's cancel_requested after a forced stop (SIGKILL)

# Popen objects of the jobs this process started, by pid: polling them gives the
# exact exit code and reaps the child.
_CHILDREN: dict[int, subprocess.Popen] = {}
_CHILDREN_LOCK = threading.Lock()


def gpu_ids() -> list[str]:
    """The GPUs jobs may use, without importing torch: CUDA_VISIBLE_DEVICES when set,
    else the NVIDIA device files. Each running job gets one of them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [part.strip() for part in visible.split(",") if part.strip() and part.strip() != "-1"]
    return sorted((p.name[len("nvidia"):] for p in Path("/dev").glob("nvidia[0-9]*")), key=int)


def process_start(pid: int) -> str | None:
    """The kernel's start time of a process (to tell it from a later one reusing the pid);
    None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_state(pid: int | None, pid_start: str | None) -> tuple[bool, int | None]:
    """(alive, exit code if known) of a job's process."""
    if not pid:
        return False, None
    with _CHILDREN_LOCK:
        child = _CHILDREN.get(pid)
        if child is not None:
            code = child.poll()
            if code is None:
                return True, None
            del _CHILDREN[pid]
            return False, code
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False, None
    except OSError:  # no /proc: ask the kernel whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False, None
        except PermissionError:
            pass
        return True, None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z" or (pid_start is not None and fields[19] != pid_start):
        return False, None  # a zombie, or the pid now belongs to another process
    return True, None


def least_busy_gpu(busy: list[str | None]) -> str:
    """The GPU ("cuda:N") running the fewest of the ``busy`` jobs' devices; "cpu" on a machine
    without a GPU."""
    return least_busy_gpus(busy, 1)


def least_busy_gpus(busy: list[str | None], count: int) -> str:
    """``count`` GPUs running the fewest of the ``busy`` jobs ("cuda:0,1"); "cpu" without a GPU.
    ValueError when the machine has fewer GPUs than asked for."""
    gpus = gpu_ids()
    if not gpus:
        return "cpu"
    if count > len(gpus):
        raise ValueError(f"gpus_per_job: the run asks for {count} GPUs but this machine has {len(gpus)}")
    used = [gpu for device in busy if device and device.startswith("cuda:") for gpu in device[5:].split(",")]
    chosen = sorted(gpus, key=lambda gpu: (used.count(gpu), gpus.index(gpu)))[:count]
    return "cuda:" + ",".join(sorted(chosen, key=gpus.index))


def gpus_per_job(run_dir: Path) -> int:
    """The processes a run trains in (its config's gpus_per_job; 1 when unset or unreadable)."""
    value = RunFolder(run_dir).train_config().get("gpus_per_job", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def train_command(job) -> list[str]:
    return run_command(job.run_dir, resume=bool(job.resume))


def run_command(run_dir: Path, resume: bool) -> list[str]:
    """`python -m lib train` for a run folder, under torchrun when the run asks for several processes."""
    folder = RunFolder(run_dir)
    processes = gpus_per_job(run_dir)
    entry = [sys.executable, "-m", "lib", "train"]
    if processes > 1:  # torchrun as a module: the same Python (and virtual environment) as the app's
        entry = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                 "-m", "lib", "train"]
    command = [*entry, str(folder.run_file), "--out", str(folder.folder)]
    if resume and folder.has_resume():
        command.append("--resume")
    return command


@dataclass(frozen=True)
class Started:
    """What the queue records of a job it started: its process (or Slurm job) and where it runs."""
    pid: int
    pid_start: str | None
    device: str


def start(job, busy: list[str | None], cpu_share: int = 1) -> Started:
    """Start a queued job on the configured backend; ``busy`` are the devices of running jobs, and
    a job on the CPU gets 1/``cpu_share`` of the cores (the queue runs that many at once).
    OSError or ValueError (the queue records them as the reason the job failed to start)."""
    if config.launcher() == "slurm":
        settings = config.slurm_settings()
        job_id = slurm.submit(run_in_allocation, (str(job.run_dir),), settings, runs_dir=Path(job.run_dir).parent,
                              job=job.id, user=job.user, name=job.name, processes=gpus_per_job(job.run_dir))
        return Started(job_id, None, f"slurm:{settings['partition']}")
    device = least_busy_gpus(busy, gpus_per_job(job.run_dir))
    process = launch(job, device, cpu_share)
    return Started(process.pid, process_start(process.pid), device)


def run_in_allocation(run_dir: str) -> None:
    """What a Slurm job runs on its compute node (the runs folder is on a shared file system).
    It resumes whenever the folder has a resume state: a job resumed from the Runs page, or one
    Slurm requeued after preemption, continues rather than starting over."""
    slurm.run_training(run_command(Path(run_dir), resume=True), RunFolder(run_dir), config.PROJECT_ROOT)


def is_slurm(job) -> bool:
    return str(job.device or "").startswith("slurm:")


def job_state(job) -> tuple[bool, int | None, str]:
    """(alive, exit code if known, Slurm's state and reason: "" for a local job) of a running job."""
    if is_slurm(job):
        found = slurm.job_state(job.pid)
        return found.alive, found.exit_code, found.describe()
    alive, exit_code = process_state(job.pid, job.pid_start)
    return alive, exit_code, ""


def stop_job(job, force: bool = False) -> None:
    """Cancel a running job: scancel for a Slurm job (Slurm sends SIGTERM, then SIGKILL after its
    KillWait), else SIGTERM or SIGKILL to its process (see `stop`)."""
    if is_slurm(job):
        slurm.cancel(job.pid, force=force)
        return
    alive, _ = process_state(job.pid, job.pid_start)
    if alive:
        stop(job.pid, force=force)


def launch(job, device: str, cpu_share: int = 1) -> subprocess.Popen:
    command = train_command(job)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if device == "cpu" and cpu_share > 1 and "OMP_NUM_THREADS" not in env:
        # Jobs sharing the cores, each with a thread per core, wait on each other at every parallel
        # region: on 2 cores loaded 3x, a bf16 step ran 5x slower with 2 threads than with 1.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cpu_share))
    if device.startswith("cuda:"):
        env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
    with RunFolder(job.run_dir).open_log() as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {device}: {' '.join(command[1:])}\n".encode())
        log.flush()
        # A session of its own: the job survives the app, and a forced stop reaches its workers too.
        process = subprocess.Popen(command, cwd=config.PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    with _CHILDREN_LOCK:
        _CHILDREN[process.pid] = process
    return process


def stop(pid: int, force: bool = False) -> None:
    """Graceful: SIGTERM to the training process alone (it stops its data-loader workers
    itself after saving; signalling them too would crash the step it is finishing).
    Forced: SIGKILL to the whole process group (it leads its own session)."""
    try:
        if force:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def reap_children() -> None:
    """Poll every child this process started: a finished one is reaped at once (no
    zombie) and keeps its exit code for `process_state`."""
    with _CHILDREN_LOCK:
        for child in _CHILDREN.values():
            child.poll()


def outcome(job, exit_code: int | None, cluster: str = "") -> tuple[str, str]:
    """(final state, reason) of a job whose process has ended; ``cluster`` is Slurm's last word
    on a Slurm job ("Slurm: TIMEOUT ..."), which explains an end the engine could not record."""
    progress = RunFolder(job.run_dir).read_progress()
    fresh = _progress_is_fresh(job)
    status = progress.get("status") if fresh else None
    message = str(progress.get("message") or "").strip()
    if status == "done" and exit_code in (0, None):
        return "done", ""
    if status == "cancelled":
        return "cancelled", cluster
    if status == "stopped":  # --max-steps: resumable, like a cancel
        return "cancelled", message
    ended = slurm.ended_badly(cluster)  # CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL...: Slurm says why
    if ended == "CANCELLED" or (ended and status != "failed"):
        return ("cancelled" if ended == "CANCELLED" else "failed"), cluster
    if job.cancel_requested == FORCED:
        return "cancelled", "stopped at once on request, without saving"
    if job.cancel_requested:
        return "cancelled", "stopped before it could save (it was still starting up)"
    if status == "failed":
        return "failed", message or "training reported a failure"
    if exit_code == 0:
        return "done", ""
    return "failed", _crash_reason(exit_code)


def _crash_reason(exit_code: int | None) -> str:
    if exit_code == 2:
        return "the run's settings were rejected (see the log below)"
    if exit_code is not None and exit_code < 0:
        name = signal.Signals(-exit_code).name if -exit_code in signal.valid_signals() else str(-exit_code)
        hint = " (often: the machine ran out of memory)" if -exit_code == signal.SIGKILL else ""
        return f"the training process was killed by {name}{hint}"
    if exit_code is not None:
        return f"the training process exited with code {exit_code} (see the log below)"
    return "the training process stopped without reporting (killed, or the machine restarted)"


def _progress_is_fresh(job) -> bool:
    """progress.json written by this attempt, not left over from before a resume."""
    written = RunFolder(job.run_dir).progress_written_at()
    if written is None:
        return False
    return job.started is None or written >= job.started - 1.0
