"""What the Runs page shows of training runs: a job's row and status sentence, the
latest epoch's numbers, the model's cost, and a comparison table over several runs.

The run folder's files are read through lib.store.run_folder.RunFolder, whose readers
tolerate a folder that is half written (a job that just started, or one that crashed).
"""
from __future__ import annotations

import json
import math
import re
import time
from functools import lru_cache
from pathlib import Path

from lib.eval import cutoffs
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


def data_set_name(config: dict) -> str:
    """The data set a run trained on, by its folder's name (numbers from different data sets do not
    compare), with the training subset when it used one."""
    root = config.get("data_root")
    if not root:
        return EMPTY
    subset = config.get("subset") or {}
    parts = [f"{subset[key]} {key}" for key in ("classes", "images", "pairs") if subset.get(key)]
    return Path(str(root)).name + (f" ({', '.join(parts)})" if parts else "")


def compare_rows(runs: list[tuple[str, Path]]) -> list[dict]:
    """One row per (label, run folder) for the comparison table and the accuracy-vs-MACs plot."""
    rows = []
    for label, run_dir in runs:
        folder = RunFolder(run_dir)
        params, macs = model_cost(folder.spec())
        final = final_metrics(run_dir)
        config = folder.train_config()
        row = {"run": label, "data set": data_set_name(config), "loss": config.get("loss", "?"),
               "params": params, "MACs": macs, "epochs": final.pop("epochs_done", None)}
        row.update({key: final.get(key) for key in ("dev_top1", "dev_top5", "auc", "eer", "best_auc")})
        row.update({key: final.get(key) for key in ("train_acc", "train_loss")})
        row["cut-offs"] = cutoff_cell(folder.read_metrics())
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
        "status": cluster_state(job) or job.state,
        "user": job.user,
        "progress": 1.0 if job.state == "done" else progress_fraction(progress),
        "epoch": f"{epoch} / {epochs}" if epoch is not None and epochs else EMPTY,
        "ETA": format_duration(progress.get("eta_s")) if running and _is_number(progress.get("eta_s")) else EMPTY,
        "images/s": _throughput(job, progress),
        "best AUC": best.get("best_auc"),
        "dev top-1": best.get("dev_top1"),
        "cut-offs": cutoff_cell(RunFolder(job.run_dir).read_metrics()),
        "started": _clock(job.started or job.created),
    }


def best_epoch_metrics(rows: list[dict]) -> dict:
    """The epoch with the best verification AUC: the numbers the run's best checkpoint holds."""
    scored = [row for row in rows if _is_number(row.get("auc"))]
    return max(scored, key=lambda row: row["auc"]) if scored else {}


def cutoff_cell(rows: list[dict]) -> str:
    """Whether the best checkpoint's validation numbers pass the course's cut-offs: "early ✓ · final –";
    "?" when the cut-offs file cannot be read (the Inspect page says why)."""
    try:
        settings = cutoffs.load_settings()
    except ValueError:
        return "?"
    return cutoffs.short_text(cutoffs.verdicts(best_epoch_metrics(rows), settings))


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


def cluster_state(job) -> str:
    """Slurm's state of a job that waits or runs on a cluster ("pending", "running"...); "" otherwise.
    The scheduler records it in the job's reason while the job lives (lib/jobs/queue.py)."""
    words = job.reason.split() if job.state == "running" and job.reason.startswith("Slurm: ") else []
    return f"{words[1].lower()} (Slurm)" if len(words) > 1 else ""


def status_line(job) -> str:
    """One sentence about where a job is: 'epoch 3 / 10, step 120 / 400, 350 images/s, about 2 min left';
    a Slurm job's starts with Slurm's state and reason: 'Slurm: PENDING (Resources) · ...'."""
    progress = RunFolder(job.run_dir).read_progress()
    if job.state == "queued":
        return "waiting for a free slot; it starts when a running job ends"
    if cluster_state(job).startswith("pending"):
        return f"{job.reason}: waiting in the cluster's queue for a compute node"
    line = _progress_line(job, progress)
    return f"{job.reason} · {line}" if cluster_state(job) else line


def _progress_line(job, progress: dict) -> str:
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


_EPOCH_PREFIX = re.compile(r"^epoch (\d+): ")
_NUMBER = re.compile(r"\d+(\.\d+)?(e-?\d+)?")


def run_warnings(rows: list[dict]) -> list[str]:
    """The engine's warnings recorded with the epochs (e.g. a margin loss stuck near chance), once per kind:
    a warning repeated epoch after epoch, differing only in its numbers, is shown once, the latest
    numbers with the range of epochs it held for."""
    latest: dict[str, tuple[str, list[int]]] = {}
    for row in rows:
        warning = row.get("warning")
        if not isinstance(warning, str):
            continue
        for paragraph in (part.strip() for part in warning.split("\n\n")):
            if not paragraph:
                continue
            kind = _NUMBER.sub("#", paragraph)
            epochs = latest.get(kind, ("", []))[1]
            if isinstance(row.get("epoch"), int):
                epochs.append(row["epoch"])
            latest.pop(kind, None)  # re-inserted: the order follows the latest occurrence
            latest[kind] = (paragraph, epochs)
    return [_with_epoch_range(text, epochs) for text, epochs in latest.values()]


def _with_epoch_range(text: str, epochs: list[int]) -> str:
    if len(set(epochs)) < 2 or not _EPOCH_PREFIX.match(text):
        return text
    return _EPOCH_PREFIX.sub(f"epochs {min(epochs)}-{max(epochs)} (numbers of epoch {max(epochs)}): ", text)


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


def steps_caption(steps: list[dict]) -> str:
    """What the step chart shows, with the latest record's numbers (steps.jsonl, lib/train/step_log.py)."""
    last = steps[-1]
    speed = f", {last['images_per_s']:,.0f} images/s" if _is_number(last.get("images_per_s")) else ""
    loss = f"loss {last['loss']:.3f}" if _is_number(last.get("loss")) else "loss –"
    acc = f", training accuracy {last['acc']:.3f}" if _is_number(last.get("acc")) else ""
    return (f"Latest, at step {last['step']:,} (epoch {last.get('epoch', '?')}): {loss}{acc}{speed}. Each faint "
            "point is the mean over the few steps since the one before (one batch is noisy); the bold curve "
            "smooths them. Dev and verification are measured once per epoch, at its end (dotted lines).")


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
