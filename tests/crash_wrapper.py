"""`python tests/crash_wrapper.py POINT train RUN.json --out DIR [--resume]`: `python -m lib train`
that kills itself with SIGKILL at POINT, so a test can crash it exactly inside a write.

The code under test is unchanged: the wrapper only wraps a few functions it calls (the
atomic writes of lib/base/files.py, the checkpoint writer, one training step) to count the
moments they reach, and at the chosen one the process really dies, with no cleanup, as
under `kill -9` or a power cut.

POINT is ``NAME[@TARGET]:N``, the N-th time (in this process) that NAME is reached for
TARGET (a file or checkpoint folder name; any when left out):

    step                  a training step ran (the weights moved), the engine has not counted it
    save-half             half of a torch.save (the resume state) written to its temporary file
    file-written          an atomic write's temporary file written and synced, not yet renamed
    checkpoint-half       a checkpoint's weights written to its staging folder, meta.json not yet
    swap-staged           a checkpoint's staging folder finished, about to be renamed into place
    swap-aside            the old checkpoint folder renamed aside, the new one not yet in place
    aside-delete          a folder renamed aside being deleted: dies after its first file went
    metrics-appended      an epoch's line appended to metrics.jsonl, the resume state not yet saved

Before dying it prints "crash_wrapper: SIGKILL at POINT" to stderr, so a test can tell the
planned moment was reached rather than some other death.
"""
from __future__ import annotations

import io
import os
import shutil
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# First, for what it sets before torch loads (idle OpenMP threads sleep), as `python -m lib train`.
import torch  # noqa: E402

import lib.base.files as files  # noqa: E402
import lib.commands.train  # noqa: E402,F401
import lib.store.checkpoint as checkpoint  # noqa: E402
import lib.train.engine as engine  # noqa: E402
from lib.__main__ import main  # noqa: E402
from lib.store.run_folder import RunFolder  # noqa: E402


class KillPoint:
    """Counts the arrivals at one named moment and says when to die."""

    def __init__(self, text: str):
        head, _, nth = text.rpartition(":")
        self.name, _, self.target = head.partition("@")
        self.nth = int(nth)
        self.seen = 0

    def arrives(self, name: str, target: str = "") -> bool:
        """Count an arrival at ``name`` for ``target``; True when this is the one to die at."""
        if name != self.name or (self.target and target != self.target):
            return False
        self.seen += 1
        return self.seen == self.nth

    def __str__(self) -> str:
        return f"{self.name}@{self.target}:{self.nth}" if self.target else f"{self.name}:{self.nth}"


POINT = KillPoint(sys.argv[1])


def die() -> None:
    sys.stdout.flush()
    print(f"crash_wrapper: SIGKILL at {POINT}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def written_name(path) -> str:
    """The name a temporary or staging entry (".state.pt.k2j3.tmp", ".last.x8f1.tmp") stands in for."""
    name = Path(path).name
    return name[1:-len(".tmp")].rsplit(".", 1)[0] if name.startswith(".") and name.endswith(".tmp") else name


def aside_name(path) -> str:
    """The folder a folder renamed aside (".last.old") was."""
    return Path(path).name[1:-len(".old")]


class Delegating:
    """A stand-in for a module inside lib/base/files.py: what it does not define comes from the module."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        return getattr(self._module, name)


class TorchSavingHalf(Delegating):
    def save(self, obj, handle, *args, **kwargs):
        if not POINT.arrives("save-half", written_name(handle.name)):
            return torch.save(obj, handle, *args, **kwargs)
        buffer = io.BytesIO()
        torch.save(obj, buffer, *args, **kwargs)
        data = buffer.getbuffer()
        handle.write(data[: len(data) // 2])
        handle.flush()
        die()


class OsSwapping(Delegating):
    def replace(self, source, target):
        source, target = Path(source), Path(target)
        if target.name.endswith(".old"):  # the old folder goes aside
            os.replace(source, target)
            if POINT.arrives("swap-aside", source.name):
                die()
            return
        if source.name.endswith(".tmp") and source.is_dir() and POINT.arrives("swap-staged", target.name):
            die()
        os.replace(source, target)


class ShutilDeleting(Delegating):
    def rmtree(self, path, *args, **kwargs):
        if Path(path).name.endswith(".old") and POINT.arrives("aside-delete", aside_name(path)):
            unlink = os.unlink  # the real rmtree runs, and dies right after deleting its first file

            def unlink_then_die(*unlink_args, **unlink_kwargs):
                unlink(*unlink_args, **unlink_kwargs)
                die()

            os.unlink = unlink_then_die
        return shutil.rmtree(path, *args, **kwargs)


def wrap_atomic_writes() -> None:
    files.torch = TorchSavingHalf(torch)
    files.os = OsSwapping(os)
    files.shutil = ShutilDeleting(shutil)
    fsync_file = files.fsync_file

    def fsync_then_maybe_die(path):
        fsync_file(path)
        if POINT.arrives("file-written", written_name(path)):
            die()

    files.fsync_file = fsync_then_maybe_die  # the atomic writes' own calls; checkpoint.py keeps its import


def wrap_checkpoint_writer() -> None:
    staging_folder, meta_text = checkpoint.staging_folder, checkpoint.meta_text
    saving = {"folder": ""}

    def staging_folder_noted(folder):
        saving["folder"] = Path(folder).name
        return staging_folder(folder)

    def meta_text_or_die(meta):  # save_checkpoint calls it after writing the weights
        if POINT.arrives("checkpoint-half", saving["folder"]):
            die()
        return meta_text(meta)

    checkpoint.staging_folder, checkpoint.meta_text = staging_folder_noted, meta_text_or_die


def wrap_training() -> None:
    train_step, append_metrics = engine.train_step, RunFolder.append_metrics

    def step_then_maybe_die(*args, **kwargs):
        result = train_step(*args, **kwargs)
        if POINT.arrives("step"):
            die()
        return result

    def append_then_maybe_die(self, record):
        append_metrics(self, record)
        if POINT.arrives("metrics-appended"):
            die()

    engine.train_step, RunFolder.append_metrics = step_then_maybe_die, append_then_maybe_die


if __name__ == "__main__":
    wrap_atomic_writes()
    wrap_checkpoint_writer()
    wrap_training()
    sys.exit(main(sys.argv[2:]))
