"""Jobs on a real one-node Slurm cluster that this test starts itself (Debian's slurm-wlm and munge,
daemons run as root from a slurm.conf written to a temporary folder).

The cluster keeps no accounting (accounting_storage/none), so sacct fails there and FaceLab reads
the state of an ended job from `scontrol show job` instead, as it does on any cluster without
slurmdbd. Where Slurm cannot start (not installed, not root) the test is skipped with the reason;
under CI=true it fails instead, since CI installs Slurm for it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from lib.__main__ import main
from lib.base import config
from lib.jobs import queue as jobs
from lib.jobs import slurm
from lib.store.checkpoint import load_checkpoint
from lib.store.run_folder import RunFolder
from lib.ui import runs
from tests.job_cases import log_has, tiny, wait_finished, wait_for

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
PARTITION = "facelab"


def why_slurm_cannot_start() -> str:
    missing = [name for name in DAEMONS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing): apt-get install -y slurm-wlm munge"
    if os.geteuid() != 0:
        return "the Slurm daemons of this test run as root, and this test does not"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed in the virtual environment: pip install submitit"
    return ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 2048


def write_slurm_conf(root: Path, node: str) -> Path:
    conf = root / "slurm.conf"
    conf.write_text(f"""ClusterName=facelabtest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=20
MinJobAge=600
NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory={min(8192, memory_mb() * 3 // 4)} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def start_daemons(root: Path, node: str, env: dict) -> list[subprocess.Popen]:
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    for folder in ("state", "spool"):
        (root / folder).mkdir()
    log = (root / "daemons.log").open("ab")
    munge = [shutil.which("munged") or "/usr/sbin/munged", "--foreground", "--force", f"--socket={root}/munge.socket",
             f"--key-file={key}", f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log",
             f"--seed-file={root}/munged.seed"]
    commands = [munge, [shutil.which("slurmctld") or "/usr/sbin/slurmctld", "-D", "-i"],
                [shutil.which("slurmd") or "/usr/sbin/slurmd", "-D", "-N", node]]
    started = []
    for command in commands:
        started.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True))
        time.sleep(0.3)  # munged's socket before slurmctld, slurmctld before slurmd
    return started


def stop_daemons(daemons: list[subprocess.Popen], env: dict) -> None:
    """Every job cancelled (its processes belong to slurmstepd, which outlives slurmd), then the
    daemons stopped, youngest first; whatever does not stop in 10 s is killed."""
    subprocess.run(["scancel", "--user=root"], env=env, capture_output=True, timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = subprocess.run(["squeue", "--noheader"], env=env, capture_output=True, text=True, timeout=30)
        if listed.returncode != 0 or not listed.stdout.strip():
            break
        time.sleep(0.5)
    for daemon in reversed(daemons):
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
    for daemon in reversed(daemons):
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=10)


@pytest.fixture
def slurm_cluster(request, monkeypatch, tmp_path):
    """A one-node cluster: munged, slurmctld and slurmd, stopped by a finalizer even on failure;
    FaceLab configured to submit to its partition."""
    reason = why_slurm_cannot_start()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Slurm must run under CI: {reason}")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="fl-slurm-"))  # short: a unix socket path is at most 107 bytes
    root.chmod(0o755)  # munged wants its socket's folder searchable by everyone
    node = socket.gethostname().split(".")[0]
    env = dict(os.environ, SLURM_CONF=str(write_slurm_conf(root, node)))
    daemons = start_daemons(root, node, env)
    request.addfinalizer(lambda: (stop_daemons(daemons, env), shutil.rmtree(root, ignore_errors=True)))
    deadline = time.monotonic() + 30
    while "idle" not in subprocess.run(["sinfo", "--noheader", "--format=%T"], env=env, capture_output=True,
                                       text=True, timeout=30).stdout:
        if time.monotonic() > deadline or any(daemon.poll() is not None for daemon in daemons):
            logs = "\n".join(p.read_text()[-2000:] for p in root.glob("*.log") if p.is_file())
            pytest.fail(f"the Slurm node did not become idle:\n{logs}")
        time.sleep(0.2)
    monkeypatch.setenv("SLURM_CONF", env["SLURM_CONF"])
    monkeypatch.setenv(config.LAUNCHER_ENV, "slurm")
    monkeypatch.setenv(config.SLURM_PARTITION_ENV, PARTITION)
    for key, value in {"gpus": "0", "cpus": "1", "mem_gb": "1", "time_min": "10"}.items():
        monkeypatch.setenv(config.SLURM_NUMBERS[key][0], value)
    monkeypatch.setenv(config.RUNS_DIR_ENV, str(tmp_path / "runs"))
    return env


def scontrol_fields(slurm_id: int) -> dict:
    text = subprocess.run(["scontrol", "show", "job", "--oneliner", str(slurm_id)], capture_output=True, text=True,
                          timeout=30).stdout
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


def slurm_said(queue: jobs.JobQueue, job_id: str, state: str) -> bool:
    return queue.get(job_id).reason.startswith(f"Slurm: {state}")


def test_a_job_trains_on_slurm_and_another_is_cancelled_and_resubmitted(slurm_cluster, tmp_path, capsys):
    run_file = tmp_path / "first.json"  # the command line submits the first job, the Train page's call the second
    run_file.write_text(json.dumps(tiny("first")))
    assert main(["train", str(run_file), "--submit", "--user", "Ada Lovelace"]) == 0
    first = capsys.readouterr().out.split()[1].rstrip(":")
    queue = jobs.JobQueue(config.runs_dir())
    second = queue.submit(tiny("second", epochs=50), "Ada Lovelace")
    assert queue.tick() == [second]  # Slurm queues jobs itself: each is submitted at once
    assert queue.get(first).state == "running" and queue.get(first).user == "Ada Lovelace"
    job = queue.get(second)
    assert job.device == f"slurm:{PARTITION}" and job.pid
    fields = scontrol_fields(job.pid)  # the user who launched it, in Slurm's own records
    assert fields["JobName"] == "facelab-Ada_Lovelace-second" and "Ada_Lovelace" in fields["Comment"]

    # Cancel the long job once it trains on the node; nobody but its owner or an instructor may.
    wait_for(lambda: slurm_said(queue, second, "RUNNING") and log_has(queue, second, "starting: step"),
             "the second job to train on the Slurm node", queue)
    assert runs.status_line(queue.get(second)).startswith("Slurm: RUNNING")  # what the Runs page shows
    with pytest.raises(jobs.NotAllowedError):
        queue.cancel(second, by="Eve")
    queue.cancel(second, by="Ada Lovelace")
    cancelled = wait_finished(queue, second)
    assert cancelled.state == "cancelled" and slurm.job_state(cancelled.pid).state == "CANCELLED"
    assert RunFolder(cancelled.run_dir).has_resume()  # SIGTERM from scancel: it saved before it stopped

    done = wait_finished(queue, first)
    assert done.state == "done", done.reason + done.log_tail
    assert slurm.job_state(done.pid) == slurm.SlurmState("COMPLETED", "None", 0, source="scontrol")
    assert log_has(queue, first, "epoch 1:") and log_has(queue, first, f"Slurm job {done.pid}")
    load_checkpoint(done.run_dir / "best")

    # Resume resubmits: a new Slurm job (which continues from the saved state once on a node;
    # cancelled here before it gets that far, which Slurm records as CANCELLED too).
    queue.resume(second, by="Ada Lovelace")
    queue.tick()
    again = queue.get(second)
    assert again.state == "running" and again.pid != cancelled.pid and scontrol_fields(again.pid)["JobState"]
    queue.cancel(second, by="Ada Lovelace")
    assert wait_finished(queue, second).state == "cancelled"
    assert slurm.job_state(again.pid).state == "CANCELLED"


def test_a_users_name_cannot_add_lines_to_the_batch_script():
    # submitit writes the job name and comment into "#SBATCH --job-name=..." lines of the script.
    assert slurm.user_text("Ada\n#SBATCH --uid=0", 40) == "Ada__SBATCH_--uid_0"
    assert slurm.user_text("  ", 40) == "anonymous" and len(slurm.user_text("x" * 99, 40)) == 40


def test_the_runs_page_shows_slurms_state_and_why_it_ended(tmp_path):
    def job(state: str, reason: str) -> jobs.Job:
        return jobs.Job(id="j", name="n", user="ada", state=state, created=0.0, started=None, ended=None,
                        pid=7, pid_start=None, device="slurm:gpu", resume=0, attempts=1, cancel_requested=0,
                        exit_code=None, reason=reason, log_tail="", run_dir=tmp_path)

    pending = job("running", slurm.SlurmState("PENDING", "Resources").describe())
    assert runs.job_row(pending)["status"] == "pending (Slurm)"
    assert runs.status_line(pending) == "Slurm: PENDING (Resources): waiting in the cluster's queue for a compute node"
    assert runs.status_line(job("running", "Slurm: RUNNING")).startswith("Slurm: RUNNING · ")
    assert runs.job_row(job("failed", "Slurm: TIMEOUT"))["status"] == "failed"
    assert slurm.ended_badly(slurm.SlurmState("TIMEOUT", "None").describe()) == "TIMEOUT"
    assert slurm.ended_badly("Slurm: COMPLETED") == "" and slurm.ended_badly("") == ""
