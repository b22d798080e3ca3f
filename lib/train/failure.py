"""How a run that cannot go on is recorded: progress.json says "failed" and why, and a save
that failed because of the disk gets a sentence saying so instead of a torch traceback."""
from __future__ import annotations

import errno
import sys
from typing import Callable

from lib.store.run_folder import RunFolder
from lib.train import distributed


def fail(out_dir, message: str, on_event: Callable | None = None) -> dict:
    """Record a failed run in progress.json (keeping what the last progress said about position).
    In a multi-process run only rank 0 writes; the others just return."""
    if not distributed.is_main():
        return {"status": "failed", "message": message}
    folder = RunFolder(out_dir)
    previous = folder.read_progress()
    fields = {key: previous.get(key, 0) for key in ("epoch", "epochs", "step", "total_steps")}
    try:
        folder.create()
        folder.write_progress(force=True, status="failed", images_per_s=0.0, eta_s=0.0, message=message, **fields)
    except OSError as err:  # a disk still full or read-only: the log (stderr) has to tell
        print(f"failed: {message} (progress.json could not be written: {err.strerror})", file=sys.stderr)
    if on_event:
        on_event({"kind": "failed", "message": message})
    return {"status": "failed", "message": message}


DISK_ERRORS = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its quota",
               errno.EFBIG: "refused a file that large", errno.EROFS: "is read-only"}


def disk_problem(err: BaseException, out_dir) -> str | None:
    """A clear sentence when saving failed because of the disk (full, quota, read-only), else None.
    torch.save reports such errors wrapped in RuntimeErrors, so the whole chain is searched."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_ERRORS:
            return (f"could not save to {out_dir}: the disk {DISK_ERRORS[err.errno]} ({err.strerror}). "
                    "Everything saved before is intact; free some space (or set FACELAB_RUNS_DIR to a "
                    "bigger disk) and resume the job.")
        err = err.__cause__ or err.__context__
    return None
