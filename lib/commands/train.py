"""`python -m lib train RUN.json [--out DIR] [--resume]`: one training job, headless.

RUN.json is ``{"name": ..., "model": <preset or spec>, "config": {...}}`` (see
recipes/). Progress lines go to stdout; the run folder gets config.json,
metrics.jsonl, progress.json and the checkpoints. SIGTERM (or Ctrl-C) cancels
gracefully: the current step finishes, ``last`` and the resume state are saved.
``--resume`` continues DIR from its resume state (RUN.json may then be left out).
``--max-steps N`` stops after N optimizer steps (smoke tests, benchmarks): ``last`` and the
resume state are saved and progress.json says "stopped" (or "done" if the schedule ended first).

``--submit`` queues RUN.json as a job of the runs folder instead (as the Train page does: a local
process, or a Slurm job with FACELAB_LAUNCHER=slurm), under ``--user NAME`` or the login name.

Under ``torchrun --nproc_per_node N -m lib train ...`` (a run with gpus_per_job N, started so by
the launcher) the N processes train one job together; rank 0 alone prints and writes.

Exit codes: 0 done, cancelled or stopped, 1 failed (reason in progress.json), 2 bad config.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from lib.base import config as paths

# Idle OpenMP threads sleep instead of spinning: on a CPU shared with other jobs, spinning
# threads burn the cores the other threads of this run are waiting for. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def add_arguments(parser) -> None:
    parser.add_argument("run_file", nargs="?", metavar="RUN.json", help="run file (recipes/*.json or your own)")
    parser.add_argument("--out", metavar="DIR", help="run folder (default: runs/<name>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its resume state")
    parser.add_argument("--max-steps", type=_positive_int, metavar="N",
                        help="stop after N optimizer steps, saving the last checkpoint and the resume state")
    parser.add_argument("--submit", action="store_true",
                        help="queue RUN.json as a job, as the Train page does (a local process, or Slurm with "
                             "FACELAB_LAUNCHER=slurm), instead of training here; prints the job id")
    parser.add_argument("--user", metavar="NAME", help="with --submit: who launches it (default: your login name)")
    parser.add_argument("--publish", metavar="CHECKPOINT_DIR",
                        help="when the run is done, copy its best checkpoint there (e.g. checkpoints/demo-ce)")


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of steps >= 1, got {text!r}")
    return int(text)


class StopFlag:
    """Set by SIGTERM/SIGINT; the trainer checks it after every step."""

    def __init__(self):
        self.signal_name = ""

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        self.signal_name = signal.Signals(signum).name
        print(f"{self.signal_name} received: finishing the current step, then saving", flush=True)

    def __call__(self) -> bool:
        return bool(self.signal_name)


def print_event(event: dict) -> None:
    kind = event["kind"]
    if kind == "start":
        verb = "resuming at" if event["resumed"] else "starting:"
        where = event["device"] + (f", {event['threads']} CPU threads" if event["device"] == "cpu" else "")
        print(f"{verb} step {event['step']}/{event['total_steps']} on {where}, {event['precision']}", flush=True)
    elif kind == "epoch":
        print(f"epoch {event['epoch']}: loss {event['train_loss']:.4f} train acc {event['train_acc']:.3f} "
              f"| dev top-1 {event['dev_top1']:.3f} top-5 {event['dev_top5']:.3f} | AUC {event['auc']:.4f} "
              f"EER {event['eer']:.4f} | {event['images_per_s']:.0f} img/s, {event['elapsed_s']:.0f} s", flush=True)
    elif kind == "warning":
        print(f"warning: {event['message']}", flush=True)
    elif kind in ("done", "cancelled", "stopped"):
        print(f"{kind}: {event['step']}/{event['total_steps']} steps, best AUC {event['best_auc']:.4f}, "
              f"{event['elapsed_s']:.0f} s", flush=True)
    elif kind == "failed":
        print(f"failed: {event['message']}", flush=True)


def _load_config(args, out: Path | None):
    from lib.store.run_folder import RunFolder
    from lib.train.config import TrainConfig, load_run_file
    if args.run_file:
        return load_run_file(args.run_file)
    saved = RunFolder(out).read_config() if args.resume and out is not None else {}
    if saved:
        return TrainConfig.from_dict(saved).validate()
    raise ValueError("give a RUN.json (or --resume with --out DIR of an existing run)")


def _default_out(name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name) or "run"
    return paths.runs_dir() / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def submit(args) -> int:
    """Queue the run in the runs folder's job queue and start it if there is room."""
    import getpass
    import json

    from lib.jobs.queue import JobQueue
    try:
        run = json.loads(Path(args.run_file).read_text(encoding="utf-8"))
        queue = JobQueue(paths.runs_dir())
        job_id = queue.submit(run, args.user or getpass.getuser())
        queue.tick()
        job = queue.get(job_id)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"job {job_id}: {job.state} on {job.device or 'the queue'}", flush=True)
    return 0


def run(args) -> int:
    from lib.train.engine import fail, train
    if args.submit:
        if not args.run_file or args.out or args.resume or args.max_steps or args.publish:
            print("error: --submit takes RUN.json alone (the job gets its own run folder)", file=sys.stderr)
            return 2
        return submit(args)
    out = Path(args.out) if args.out else None
    if args.resume and out is None:
        print("error: --resume needs --out DIR (the run folder to continue)", file=sys.stderr)
        return 2
    stop = StopFlag()
    stop.install()
    try:
        config = _load_config(args, out)
        out = out or _default_out(config.name)
        if os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 speaks for the job
            print(f"run folder: {out}", flush=True)
        summary = train(config, out, on_event=print_event, should_stop=stop, resume=args.resume,
                        max_steps=args.max_steps)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        if out is not None:
            fail(out, f"bad configuration: {err}")
        return 2
    if summary["status"] == "done" and args.publish:
        publish(out, Path(args.publish), args.run_file, summary)
    return 1 if summary["status"] == "failed" else 0


def publish(out: Path, target: Path, run_file: str | None, summary: dict) -> None:
    """Copy the run's best checkpoint, recording how it was made and what the run cost."""
    from lib.store.checkpoint import publish_checkpoint
    from lib.store.run_folder import RunFolder
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    extra = {"recipe": str(run_file) if run_file else "", "run_wall_s": round(summary["elapsed_s"], 1),
             "run_epochs": summary["epoch"], "machine": {"cpus": os.cpu_count(), "load_average_1min_at_end": load}}
    publish_checkpoint(RunFolder(out).best, target, extra)
    print(f"published the best checkpoint to {target}", flush=True)
