"""`python -m lib scheduler [--runs-dir DIR] [--while-alive PID]`: start queued jobs and reap
finished ones, every few seconds, with nobody on any page.

`make run` starts it beside the app, because Streamlit runs app.py only when a browser
connects: a scheduler living in the app would leave the queue standing still after a restart
until someone opened a page. Any number of these (and of app processes) may run on one runs
folder: the folder's lock (lib.jobs.scheduler.SchedulerLock) lets exactly one of them tick, and
another takes over within seconds when that one stops or dies.

Stops on SIGTERM or Ctrl-C after the tick in progress (a job is never left started but
unrecorded), or when the process given by --while-alive (the app) has ended. Exit code 0
when stopped, 1 when the runs folder cannot be made.
"""
from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from lib.base import config
from lib.jobs import launcher, scheduler


def add_arguments(parser) -> None:
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help=f"the runs folder to schedule (default: {config.RUNS_DIR_ENV}, else runs/)")
    parser.add_argument("--while-alive", type=int, default=None, metavar="PID",
                        help="stop when this process (the app) has ended")
    parser.add_argument("--interval", type=float, default=scheduler.SCHEDULER_INTERVAL_S,
                        help="seconds between two ticks, and between two tries of a standby")


def run(args) -> int:
    runs_dir = Path(args.runs_dir or config.runs_dir()).resolve()
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"scheduler: cannot make the runs folder {runs_dir}: {err}", file=sys.stderr)
        return 1
    stop = _stop_on_signals()
    print(f"scheduler: runs folder {runs_dir} (one scheduler per folder; others stand by)", flush=True)
    scheduler.Scheduler(runs_dir, args.interval).run(keep_going=_app_alive(args.while_alive), stop=stop,
                                                on_error=_report_once())
    return 0


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so the tick in progress finishes before the loop ends.
    The handler sets it from a new thread: a handler runs between two bytecodes of the main
    thread, which may be inside the event's own wait and hold the lock set() needs."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: threading.Thread(target=stop.set, daemon=True).start())
    return stop


def _app_alive(pid: int | None):
    if pid is None:
        return lambda: True
    return lambda: launcher.process_state(pid, None)[0]  # a zombie counts as ended


def _report_once():
    """A failing runs folder fails at every tick: say each distinct problem once, not every 2 s."""
    seen: set[str] = set()

    def report(err: Exception) -> None:
        message = str(err)
        if message not in seen:
            seen.add(message)
            print(f"scheduler: {message} (trying again)", file=sys.stderr, flush=True)
    return report
