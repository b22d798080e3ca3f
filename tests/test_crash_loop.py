"""Crash safety, proved by a loop: one run killed with SIGKILL again and again, at moments
chosen to land inside every kind of write (a training step, the resume state half
written or not yet renamed, a checkpoint half staged, a checkpoint folder swap cut
between its two renames, a folder being deleted, metrics ahead of the resume state).

tests/crash_wrapper.py runs the real `python -m lib train` and kills itself at the chosen
moment, so the kills land exactly, not by luck. After each one, everything a reader or
a resume meets must be usable: each checkpoint present loads, progress.json and
metrics.jsonl parse, the resume state loads, and the next launch resumes from it. The
last launch, plain `python -m lib train --resume`, finishes the run.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from lib.store.checkpoint import load_checkpoint
from lib.store.run_folder import RunFolder
from tests.train_cases import tiny_run

ROOT = Path(__file__).resolve().parent.parent
WRAPPER = ROOT / "tests" / "crash_wrapper.py"
LAUNCH_TIMEOUT = 150  # seconds for a launch of a few seconds on a busy two-core machine

# One run (10 identities, ~13 steps an epoch, 2 epochs, resume state after every step)
# killed at each of these in turn; each launch resumes from what the one before left.
# "N" counts within one launch. Where the run stands when the kill comes is noted. Each
# launch pays ~3 s of imports, so the chain is as long as a CI run affords (~75 s).
KILL_CHAIN = [
    ("step:3", "inside step 3 of a fresh start"),
    ("save-half@state.pt:2", "resume state half written"),
    ("file-written@state.pt:2", "resume state written, not yet renamed over the old one"),
    ("checkpoint-half@last:1", "end of epoch 1: last's weights staged, its meta.json not"),
    ("swap-staged@best:1", "first best staged, not yet renamed into place"),
    ("metrics-appended:1", "epoch 1 in metrics.jsonl and both checkpoints, resume state still mid-epoch"),
    ("swap-aside@last:1", "old last renamed aside, the new one not yet in"),
    # The save after a swap cut short: the folder aside is then the only copy of last.
    ("aside-delete@last:1", "the next save of last deleting a folder renamed aside"),
    ("swap-aside@best:1", "old best renamed aside, the new one not yet in"),
    ("step:3", "inside the third step of epoch 2"),
]


def launch(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=LAUNCH_TIMEOUT)


def train_args(run_file: Path, out: Path) -> list[str]:
    """The train arguments, resuming when a resume state is there (a run killed before saving
    one has nothing to resume and is started again, as its user would)."""
    args = ["train", str(run_file), "--out", str(out)]
    return args + ["--resume"] if RunFolder(out).has_resume() else args


def saved_step(out: Path) -> int | None:
    """The step the resume state was saved at (it must load), None when there is none."""
    folder = RunFolder(out)
    return folder.load_resume()["step"] if folder.has_resume() else None


def assert_resumed_from(log: str, step: int | None) -> None:
    """The launch started where the resume state said (or from scratch when there was none)."""
    if "starting:" not in log and "resuming at" not in log:
        raise AssertionError(f"the launch never started training:\n{log}")
    if step is None:
        assert "starting: step 0/" in log, log
    else:
        assert f"resuming at step {step}/" in log, log


def assert_json_files_parse(out: Path) -> None:
    """progress.json and config.json, when present, are whole JSON objects; every finished line
    of metrics.jsonl is one (a line cut short by the kill may end the file)."""
    for name in ("progress.json", "config.json"):
        if (out / name).exists():
            assert isinstance(json.loads((out / name).read_text()), dict), name
    metrics = out / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines(keepends=True):
            if line.endswith("\n"):
                assert isinstance(json.loads(line), dict), line


def assert_checkpoints_load(out: Path, scratch: Path) -> list[str]:
    """Each checkpoint folder present loads (a folder left renamed aside, ".last.old", counts: the
    loader renames it back). Checked on a copy, so that the next launch meets the folders exactly as
    the kill left them, which is the harder case for the writer. Returns the names that loaded."""
    loaded = []
    for name in ("last", "best"):
        present = [folder for folder in (out / name, out / f".{name}.old") if folder.is_dir()]
        if not present:
            continue
        copy = scratch / name
        shutil.rmtree(copy.parent, ignore_errors=True)
        for folder in present:
            shutil.copytree(folder, copy.parent / folder.name)
        load_checkpoint(copy)
        loaded.append(name)
    return loaded


def kill_and_check(point: str, run_file: Path, out: Path, scratch: Path) -> list[str]:
    """One launch killed at ``point``; the run folder it leaves is checked. Returns the checkpoints loaded."""
    step_before = saved_step(out)
    result = launch([sys.executable, str(WRAPPER), point, *train_args(run_file, out)])
    assert result.returncode == -signal.SIGKILL, result.stdout
    assert f"SIGKILL at {point}" in result.stdout, result.stdout  # the planned moment, not another death
    if "starting:" in result.stdout or "resuming at" in result.stdout:  # the first kill comes before either
        assert_resumed_from(result.stdout, step_before)
    step_after = saved_step(out)
    assert step_before is None or step_after >= step_before, (step_before, step_after)
    assert_json_files_parse(out)
    return assert_checkpoints_load(out, scratch / point.replace(":", "_").replace("@", "_"))


def temp_leftovers(out: Path) -> list[str]:
    return sorted(str(path.relative_to(out)) for path in out.rglob(".*") if path.name.endswith((".tmp", ".old")))


def test_killed_anywhere_the_run_resumes_and_every_checkpoint_loads(tmp_path, capsys):
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps(tiny_run("crash-loop", resume_every_s=0.0)))
    out, scratch = tmp_path / "run", tmp_path / "scratch"
    started = time.perf_counter()

    survived = []
    for point, where in KILL_CHAIN:
        loaded = kill_and_check(point, run_file, out, scratch)
        survived.append(f"{point:30} {where} (loaded: {', '.join(loaded) or 'no checkpoint yet'})")

    step_before = saved_step(out)
    result = launch([sys.executable, "-m", "lib", *train_args(run_file, out)])
    assert result.returncode == 0, result.stdout
    assert_resumed_from(result.stdout, step_before)
    folder = RunFolder(out)
    progress = folder.read_progress()
    assert progress["status"] == "done" and progress["step"] == progress["total_steps"], progress
    records = folder.read_metrics()
    assert [record["epoch"] for record in records] == [1, 2]
    assert records[-1]["step"] == progress["total_steps"]
    assert load_checkpoint(out / "last").meta.epoch == 2
    assert load_checkpoint(out / "best").meta.metrics["auc"] == max(record["auc"] for record in records)

    with capsys.disabled():
        print(f"\ncrash loop: {len(survived)} of {len(KILL_CHAIN)} kill points survived in "
              f"{time.perf_counter() - started:.0f} s, then the run finished:")
        print("\n".join(f"  {line}" for line in survived))
        print(f"  left behind by the kills (harmless): {', '.join(temp_leftovers(out)) or 'nothing'}")
