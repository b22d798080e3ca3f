"""What the Runs page shows of training runs: a job's row and status sentence, the
latest epoch's numbers, the model's cost, and a comparison table over several runs.

The run folder's files are read through lib.store.run_folder.RunFolder, whose readers
tolerate a folder that is half written (a job that just started, or one that crashed).
"""
from __future__ import annotations

import json
import math
import time
from functools import lru_cache
from pathlib import Path

from lib.jobs import queue as jobs
from lib.store.run_folder import RunFolder, run_folders
from lib.ui.text import as_plain_markdown

# Metrics a run reports per epoch, in the order the Runs page plots them.
CURVES = {
    "train_loss": "training loss",
    "lr": "learning rate",
    "train_acc": "training accuracy",
    "dev_top1": "dev top-1 accuracy",
    "dev_top5": "dev top-5 accuracy",
    "auc": "verification ROC AUC",
    "eer": "verification EER",
    "images_per_s": "images / s",
}
EMPTY = "–"  # what a table cell shows for a value that does not exist (yet); pages pass it as placeholder
STARTING = "loading PyTorch and the data set; the first steps follow in a few seconds"
# Columns of the comparison table: the last epoch's value, and the best AUC.
FINAL_METRICS = ("dev_top1", "dev_top5", "auc", "eer", "train_acc", "train_loss")


def progress_fraction(progress: dict | None) -> float:
    """0..1 from step / total_steps (or epoch / epochs when steps are unknown)."""
    if not progress:
        return 0.0
    for done_key, total_key in (("step", "total_steps"), ("epoch", "epochs")):
        done, total = progress.get(done_key), progress.get(total_key)
        if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total > 0:
            return min(1.0, max(0.0, done / total))
    return 0.0


def format_duration(seconds) -> str:
    """'1 h 02 min', '3 min 05 s', '42 s'; '-' when unknown."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def model_cost(spec: dict | None) -> tuple[int | None, int | None]:
    """(parameters, MACs per image) of a spec dict; MACs is None when they cannot be counted."""
    if not spec:
        return None, None
    return _model_cost_cached(json.dumps(spec, sort_keys=True))


@lru_cache(maxsize=256)
def _model_cost_cached(spec_json: str) -> tuple[int | None, int | None]:
    from lib.model.spec import ModelSpec
    try:
        spec = ModelSpec.from_json(spec_json).validate()
    except (ValueError, TypeError):
        return None, None
    try:
        from lib.model.profile import profile
        report = profile(spec)
        return _get(report, "params"), _get(report, "macs")
    except (ImportError, AttributeError, TypeError, ValueError):
        from lib.model.net import count_params
        return count_params(spec), None


def _get(report, name: str):
    """A total from a profile report, whether it is an object or a dict."""
    for key in (name, f"total_{name}"):
        value = report.get(key) if isinstance(report, dict) else getattr(report, key, None)
        if isinstance(value, (int, float)):
            return int(value)
    raise AttributeError(name)


def final_metrics(run_dir: Path) -> dict:
    """Last epoch's metrics plus the best verification AUC and the epoch it came at."""
    rows = RunFolder(run_dir).read_metrics()
    if not rows:
        return {}
    result = {key: rows[-1].get(key) for key in FINAL_METRICS}
    result["epochs_done"] = rows[-1].get("epoch")
    aucs = [(row.get("auc"), row.get("epoch")) for row in rows if isinstance(row.get("auc"), (int, float))]
    if aucs:
        best_auc, best_epoch = max(aucs, key=lambda pair: pair[0])
        result["best_auc"], result["best_epoch"] = best_auc, best_epoch
    return result


def compare_rows(runs: list[tuple[str, Path]]) -> list[dict]:
    """One row per (label, run folder) for the comparison table and the accuracy-vs-MACs plot."""
    rows = []
    for label, run_dir in runs:
        folder = RunFolder(run_dir)
        params, macs = model_cost(folder.spec())
        final = final_metrics(run_dir)
        row = {"run": label, "loss": folder.train_config().get("loss", "?"),
               "params": params, "MACs": macs, "epochs": final.pop("epochs_done", None)}
        row.update({key: final.get(key) for key in ("dev_top1", "dev_top5", "auc", "eer", "best_auc")})
        row.update({key: final.get(key) for key in ("train_acc", "train_loss")})
        rows.append(row)
    return rows


def job_row(job) -> dict:
    """What the Runs page's table shows for one job (a lib.jobs.queue.Job)."""
    progress = RunFolder(job.run_dir).read_progress()
    running = job.state == "running"
    best = final_metrics(job.run_dir)
    epochs = progress.get("epochs")
    epoch = progress.get("epoch")
    return {
        "run": job.name,
        "status": job.state,
        "user": job.user,
        "progress": 1.0 if job.state == "done" else progress_fraction(progress),
        "epoch": f"{epoch} / {epochs}" if epoch is not None and epochs else EMPTY,
        "ETA": format_duration(progress.get("eta_s")) if running and _is_number(progress.get("eta_s")) else EMPTY,
        "images/s": _throughput(job, progress),
        "best AUC": best.get("best_auc"),
        "dev top-1": best.get("dev_top1"),
        "started": _clock(job.started or job.created),
    }


def _throughput(job, progress: dict) -> int | None:
    """Images per second now (running) or over the last epoch (finished)."""
    if job.state == "running" and _is_number(progress.get("images_per_s")):
        return round(progress["images_per_s"])
    rows = RunFolder(job.run_dir).read_metrics() if job.state != "queued" else []
    value = rows[-1].get("images_per_s") if rows else None
    return round(value) if _is_number(value) else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _clock(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else EMPTY


def status_line(job) -> str:
    """One sentence about where a job is: 'epoch 3 / 10, step 120 / 400, 350 images/s, about 2 min left'."""
    progress = RunFolder(job.run_dir).read_progress()
    if job.state == "queued":
        return "waiting for a free slot; it starts when a running job ends"
    parts = []
    if progress.get("epoch") is not None and progress.get("epochs"):
        parts.append(f"epoch {progress['epoch']} / {progress['epochs']}")
    if progress.get("step") is not None and progress.get("total_steps"):
        parts.append(f"step {progress['step']} / {progress['total_steps']}")
    if job.state == "running" and _is_number(progress.get("images_per_s")):
        parts.append(f"{progress['images_per_s']:.0f} images/s")
    if job.state == "running" and _is_number(progress.get("eta_s")):
        parts.append(f"about {format_duration(progress['eta_s'])} left")
    if job.state == "running" and job.cancel_requested:
        parts.append("stopping: saving its state")
    return ", ".join(parts) or (STARTING if job.state == "running" else job.state)


def metric_runs(runs_dir: Path) -> list[Path]:
    """Every run folder with at least one finished epoch, newest first (runs started with
    the command line are listed too; a folder's name is its job id)."""
    finished = [run.folder for run in run_folders(runs_dir) if run.read_metrics()]
    return sorted(finished, key=lambda p: p.name, reverse=True)


def run_labels(jobs) -> dict[str, str]:
    """Job id -> a short label: the run's name, with the id's end when names repeat."""
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.name] = counts.get(job.name, 0) + 1
    return {job.id: job.name if counts[job.name] == 1 else f"{job.name} ({job.id[-4:]})" for job in jobs}


def run_warnings(rows: list[dict]) -> list[str]:
    """The engine's warnings recorded with the epochs (e.g. a margin loss stuck near chance), once each."""
    seen: list[str] = []
    for row in rows:
        warning = row.get("warning")
        if isinstance(warning, str) and warning and warning not in seen:
            seen.append(warning)
    return seen


def headline(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(label, value, change since the previous epoch) of the latest epoch, for metric cards."""
    if not rows:
        return []
    last, previous = rows[-1], rows[-2] if len(rows) > 1 else {}
    cards = []
    for key, label in (("dev_top1", "dev top-1"), ("auc", "verification AUC"), ("eer", "EER"),
                       ("train_acc", "training accuracy")):
        value = last.get(key)
        if _is_number(value):
            before = previous.get(key)
            change = value - before if _is_number(before) else 0.0
            delta = f"{change:+.3f}" if abs(change) >= 0.0005 else ""  # no arrow for a change that rounds to 0
            cards.append((label, f"{value:.3f}", delta))
    return cards


def acting_names(user_info, typed_name: str) -> tuple[str, ...]:
    """The names a browser session acts under on jobs. Signed in: the signed-in name and
    e-mail only, since the name field in the sidebar can be set to anyone's. Otherwise the
    name typed in the sidebar (empty: the session owns no job)."""
    if user_info.get("is_logged_in") is True:
        return tuple(str(user_info.get(key) or "") for key in ("name", "email"))
    return (typed_name,)


def control_note(job, names) -> str:
    """Markdown telling someone who may not cancel or resume a job who can; "" when they may,
    or when the job is done (nobody can change it any more)."""
    if job.state == "done" or jobs.may_control(job, names):
        return ""
    if jobs.has_no_owner(job):
        who = "It was launched without a name, so only an instructor can cancel or resume it."
    else:
        who = f"Only **{as_plain_markdown(job.user)}**, who launched it, or an instructor can cancel or resume it."
    if not jobs.acting_names(names):
        who += " Type your name in the sidebar before launching to control your own runs."
    return who
