"""Training jobs on a Slurm cluster: submitted through submitit, watched with squeue (then sacct,
or scontrol where accounting is off), cancelled with scancel.

The app runs on a login or web node with the runs folder on a file system the compute nodes
share. Each queued job becomes one Slurm job (one node; N GPUs for a run with gpus_per_job N,
else FACELAB_SLURM_GPUS) that runs `python -m lib train` (under torchrun for several processes)
on a compute node, appending its output to the run folder's log.txt, which the Runs page reads
as it grows. submitit keeps its own files (the pickled call, Slurm's stdout and stderr) in
<runs>/.slurm/<job id>/, out of the run folders. Slurm queues the jobs itself, so the app submits
every queued job at once (FACELAB_MAX_JOBS still caps how many it keeps submitted).

Slurm's job name and comment carry the name of the user who launched the job, so the cluster's
own tools (squeue, sacct) show whose job it is although every job runs under the app's account.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SUBMITIT_DIR = ".slurm"  # in the runs folder; a dot folder, so run_folders() skips it
# States in which a Slurm job still holds (or waits for) a node; any other state is an end.
# UNREACHABLE is FaceLab's: squeue did not answer, so nothing is known and the job is left alone.
ALIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
         "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "UNREACHABLE"}
# Ends that the training process may not have lived to record: the reason comes from Slurm.
ENDED_BADLY = {"CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
               "DEADLINE"}
LIVE_CACHE_S = 1.0  # one squeue answers for every running job of a scheduler tick
SAVE_GRACE_S = 60.0  # how long a job told to stop by its time limit may take to save


@dataclass(frozen=True)
class SlurmState:
    state: str  # Slurm's word: PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, ... or UNKNOWN
    reason: str = ""  # why it waits or ended (squeue's %r, sacct's or scontrol's Reason)
    exit_code: int | None = None  # of the batch step; -N for a signal N
    source: str = "squeue"

    @property
    def alive(self) -> bool:
        return self.state in ALIVE

    def describe(self) -> str:
        """'Slurm: PENDING (Resources)', as the Runs page shows it."""
        reason = "" if self.reason in ("", "None", "(null)") else f" ({self.reason})"
        return f"Slurm: {self.state}{reason}"


def ended_badly(note: str) -> str:
    """The Slurm state named by a `describe()` text when it is an end the engine may not have
    recorded (CANCELLED, TIMEOUT, OUT_OF_MEMORY...); "" otherwise."""
    words = note.split()
    state = words[1] if len(words) > 1 and words[0] == "Slurm:" else ""
    return state if state in ENDED_BADLY else ""


def user_text(text: str, limit: int) -> str:
    """A user's name or run name as Slurm options may hold it: letters, digits and ._@- kept,
    anything else (spaces, quotes, newlines that would start a new #SBATCH line) becomes _."""
    kept = "".join(c if c.isascii() and (c.isalnum() or c in "._@-") else "_" for c in str(text).strip())
    return kept[:limit] or "anonymous"


def submit(function, args: tuple, settings: dict, *, runs_dir: Path, job: str, user: str, name: str,
           processes: int = 1) -> int:
    """Submit ``function(*args)`` as a Slurm job through submitit; returns Slurm's job id.
    OSError when sbatch cannot be run, ValueError (with sbatch's message) when it refuses."""
    import submitit  # only where Slurm is the launcher

    from lib.base.config import PROJECT_ROOT
    executor = submitit.SlurmExecutor(folder=Path(runs_dir) / SUBMITIT_DIR / job, max_num_timeout=0)
    gpus = settings["gpus"] and max(settings["gpus"], processes)  # 0: a CPU-only partition
    executor.update_parameters(
        partition=settings["partition"], time=settings["time_min"], nodes=1, ntasks_per_node=1,
        cpus_per_task=settings["cpus"] * processes, mem=f"{settings['mem_gb'] * processes}GB",
        job_name=f"facelab-{user_text(user, 40)}-{user_text(name, 40)}",
        comment=f"FaceLab_job_{user_text(job, 80)}_launched_by_{user_text(user, 80)}",
        setup=[f"cd {shlex.quote(str(PROJECT_ROOT))}"], **({"gpus_per_node": gpus} if gpus else {}))
    try:
        submitted = executor.submit(function, *args)
    except subprocess.CalledProcessError as err:
        output = (err.output or b"").decode(errors="replace") if isinstance(err.output, bytes) else str(err.output)
        raise ValueError(f"sbatch refused the job: {output.strip() or err}") from None
    return int(submitted.job_id)


def run_training(command: list[str], folder, cwd: Path) -> None:
    """On the compute node: run the training command, its output appended to the run folder's log.
    Raises when it fails, so Slurm records the job as FAILED."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with folder.open_log() as log:
        where = f"Slurm job {os.environ.get('SLURM_JOB_ID', '?')} on {os.uname().nodename}"
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {where}: {' '.join(command[1:])}\n".encode())
        log.flush()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            code = process.wait()
        except BaseException:  # submitit's handler of the time-limit signal raises here
            process.send_signal(signal.SIGTERM)  # the engine finishes its step, saves and exits
            try:
                process.wait(timeout=SAVE_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
    if code != 0:
        raise RuntimeError(f"the training process exited with code {code} (see {folder.log_file})")


def cancel(slurm_id: int, force: bool = False) -> None:
    """scancel: Slurm sends SIGTERM (the engine saves and stops), then SIGKILL after its KillWait.
    force: SIGKILL to every process of the job at once, then the cancel."""
    if force:
        subprocess.run(["scancel", "--signal=KILL", "--full", str(slurm_id)], capture_output=True, timeout=30)
    result = subprocess.run(["scancel", str(slurm_id)], capture_output=True, text=True, timeout=30)
    if result.returncode != 0 and "already completing or completed" not in result.stderr:
        raise ValueError(f"scancel {slurm_id} failed: {result.stderr.strip() or result.returncode}")


_live: dict[str, tuple[str, str]] | None = None
_live_at = 0.0


def live_jobs() -> dict[str, tuple[str, str]] | None:
    """Slurm job id -> (state, reason) of this account's jobs in squeue (cached LIVE_CACHE_S);
    None when squeue fails (the controller down or restarting)."""
    global _live, _live_at
    if time.monotonic() - _live_at > LIVE_CACHE_S:
        output = _run(["squeue", "--me", "--noheader", "--format=%i|%T|%r"])
        _live = None if output is None else {}
        for line in (output or "").splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3:
                _live[parts[0]] = (parts[1], parts[2])
        _live_at = time.monotonic()
    return _live


def job_state(slurm_id: int | None) -> SlurmState:
    """Where a Slurm job is. squeue for a job waiting or running; for one that ended, sacct, or
    `scontrol show job` where accounting is off (sacct then fails, and scontrol remembers a job
    for MinJobAge, 300 s by default); UNKNOWN once neither knows it."""
    if not slurm_id:
        return SlurmState("UNKNOWN", "no Slurm job id recorded", source="")
    key, live = str(slurm_id), live_jobs()
    if live is None:  # a job must not be reaped as ended because the controller is busy
        return SlurmState("UNREACHABLE", "squeue did not answer; asking again at the next tick")
    if key in live and live[key][0] in ALIVE:
        return SlurmState(*live[key])
    return _from_sacct(key) or _from_scontrol(key) or SlurmState(
        "UNKNOWN", "Slurm no longer knows this job, and accounting (sacct) is off", source="")


def _from_sacct(key: str) -> SlurmState | None:
    output = _run(["sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={key}",
                   "--format=State,ExitCode,Reason"])
    lines = [line for line in (output or "").splitlines() if line.strip()]
    if not lines:
        return None
    state, exit_code, reason = (lines[-1].split("|") + ["", ""])[:3]
    return SlurmState(state.split()[0], reason, _exit_code(exit_code), source="sacct")


def _from_scontrol(key: str) -> SlurmState | None:
    output = _run(["scontrol", "show", "job", "--oneliner", key])
    fields = dict(part.split("=", 1) for part in (output or "").split() if "=" in part)
    if "JobState" not in fields:
        return None
    return SlurmState(fields["JobState"], fields.get("Reason", ""), _exit_code(fields.get("ExitCode", "")),
                      source="scontrol")


def _exit_code(text: str) -> int | None:
    """Slurm's "code:signal" as a returncode (-signal when a signal ended it)."""
    code, _, sig = text.partition(":")
    if not code.isdigit():
        return None
    return -int(sig) if sig.isdigit() and int(sig) else int(code)


def _run(command: list[str]) -> str | None:
    """A Slurm command's output; None when it fails (not installed, controller down, accounting off)."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None
