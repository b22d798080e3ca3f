"""Runs: every training job with its status, live curves, cancel and resume; compare runs."""
from __future__ import annotations

import streamlit as st

from lib.jobs import queue as jobs
from lib.jobs import scheduler
from lib.store.checkpoint import is_checkpoint
from lib.store.run_folder import RunFolder
from lib.ui import runs
from lib.ui.run_plots import accuracy_vs_macs, lambda_figure, overlay, run_curves, sphereface_schedule, step_curves
from lib.ui.text import as_plain_html, as_plain_markdown
from views import explore_state
from views.common import data_root, runs_dir, show_error, user_name
from views.submission_ui import submission_downloads

REFRESH_S = 2.0
ACTIVE = ("queued", "running")
ICONS = {"queued": ":material/hourglass_top:", "running": ":material/play_circle:", "done": ":material/check_circle:",
         "failed": ":material/error:", "cancelled": ":material/stop_circle:"}

st.title("Runs")
st.caption("Every training job launched from the Train page (or with `python -m lib train`). Jobs run in "
           "the background: close the browser and they keep going. The page refreshes itself while a job runs.")


def open_queue() -> tuple[jobs.JobQueue, list[jobs.Job]]:
    """The queue of the runs folder, ticked, and its jobs; a clear message when it cannot be used."""
    try:
        queue = jobs.JobQueue(runs_dir())
        queue.tick()
        scheduler.start_ticker(queue.runs_dir)
        return queue, queue.list_jobs()
    except jobs.RunsFolderError as err:
        show_error(f"The job queue cannot be used: {err}")
    except ValueError as err:  # a bad FACELAB_MAX_JOBS
        show_error(f"The job queue cannot start: {err}", "Set FACELAB_MAX_JOBS to a whole number such as 1.")
    st.stop()


queue, all_jobs = open_queue()
labels = runs.run_labels(all_jobs)
finished_runs = runs.metric_runs(queue.runs_dir)
refresh = REFRESH_S if any(job.state in ACTIVE for job in all_jobs) else None

if not all_jobs and not finished_runs:
    st.info("**No runs yet.** Assemble a model, a loss and a recipe on the Train page and press "
            "**Launch**; the job appears here with its progress and live curves.", icon=":material/info:")
    st.page_link("views/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()


@st.fragment(run_every=refresh)
def jobs_table() -> None:
    try:
        queue.tick()
        current = queue.list_jobs()
    except ValueError as err:  # the runs folder turned read-only or full meanwhile
        show_error(as_plain_markdown(str(err)))
        return
    if refresh and not any(job.state in ACTIVE for job in current):
        st.rerun()  # the last job just ended: redraw the whole page (buttons, compare list)
    st.dataframe([runs.job_row(job) for job in current], hide_index=True, placeholder=runs.EMPTY, column_config={
                     "progress": st.column_config.ProgressColumn("progress", format="percent", min_value=0, max_value=1),
                     "best AUC": st.column_config.NumberColumn(format="%.3f"),
                     "dev top-1": st.column_config.NumberColumn(format="%.3f")})
    st.caption(f"At most {queue.max_running} job(s) run at once on this machine (one per GPU, one on a CPU-only "
               "machine; set FACELAB_MAX_JOBS to change it). More wait in the queue, oldest first.")


def show_failure(job: jobs.Job) -> None:
    """A crashed job: its reason and the end of its log, never a traceback of the app."""
    st.error(f"**This run failed:** {as_plain_markdown(job.reason or 'no reason recorded')}",
             icon=":material/error:")
    tail = job.log_tail or RunFolder(job.run_dir).log_tail()
    if tail:
        st.caption("Last lines of its log:")
        st.code(tail, language=None)
    if job.can_resume:
        st.caption("**Resume** continues from the last saved epoch once the cause is fixed.")


def acting_as() -> tuple[str, ...]:
    """Who this session is when it cancels or resumes a job: its signed-in identity, else its name."""
    return runs.acting_names(st.user, user_name())


def controls(job: jobs.Job) -> None:
    """Cancel, stop now, resume: whichever the job's state allows, for its owner and the
    instructors; everyone else reads who may (the queue refuses them too)."""
    me = acting_as()
    note = runs.control_note(job, me)
    if note:
        st.caption(note)
        return
    row = st.container(horizontal=True)
    try:
        if job.state in ACTIVE and not job.cancel_requested:
            if row.button("Cancel", key=f"runs.cancel.{job.id}", icon=":material/stop:",
                              help="Graceful: the job finishes its step, saves its state, then stops."):
                queue.cancel(job.id, by=me)
        if job.state == "running" and job.cancel_requested:
            if row.button("Stop now", key=f"runs.kill.{job.id}", icon=":material/dangerous:",
                              help="Kill at once without saving; resume then starts from the last saved epoch."):
                queue.cancel(job.id, force=True, by=me)
        if job.can_resume and row.button("Resume", key=f"runs.resume.{job.id}", icon=":material/play_arrow:",
                                             help="Queue it again; it continues from its last saved state."):
            queue.resume(job.id, by=me)
            queue.tick()
            st.rerun()
    except jobs.NotAllowedError as err:  # the name in the sidebar changed since the page was drawn
        show_error(as_plain_markdown(str(err)))
    except ValueError as err:  # the job changed state meanwhile (another session acted on it)
        show_error(as_plain_markdown(str(err)), "The table above shows its current state.")


def show_status(job: jobs.Job) -> None:
    st.progress(1.0 if job.state == "done" else runs.progress_fraction(RunFolder(job.run_dir).read_progress()),
                text=f"{ICONS[job.state]} **{job.state}**: {runs.status_line(job)}")
    st.caption(f"by {as_plain_markdown(job.user)} · on {job.device or 'not started'} · "
               f"folder `{job.run_dir.name}`")
    if job.state == "failed":
        show_failure(job)
    elif job.state == "cancelled" and job.reason:
        st.warning(f"Cancelled: {as_plain_markdown(job.reason)}.")


def show_lambda(job: jobs.Job, rows: list[dict]) -> None:
    """A SphereFace run: how far its lambda has annealed (the margin's strength over the steps)."""
    folder = RunFolder(job.run_dir)
    schedule = sphereface_schedule(folder.train_config())
    if schedule is None:
        return
    st.plotly_chart(lambda_figure(rows, schedule, folder.read_progress().get("total_steps")),
                    key=f"runs.lambda.{job.id}")
    st.caption("SphereFace's lambda blends its margin with the plain cosine, (lambda cos + psi) / (1 + lambda): "
               "large at first (almost softmax), smaller every step. The engine does not record lambda, so this "
               "curve is computed from the run's schedule (its loss settings) and the steps its epochs ended at. "
               "The Margins page draws the margin zone at any lambda.")


def step_chart(job: jobs.Job, steps: list[dict], rows: list[dict]) -> None:
    """The run against the training step, live within the epoch, smoothed as chosen."""
    smoothing = st.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="runs.smoothing",
                          help="An exponential moving average, as in TensorBoard: 0 shows the raw values.")
    st.plotly_chart(step_curves(steps, rows, smoothing), key=f"runs.curves.{job.id}")  # one chart either way
    st.caption(runs.steps_caption(steps))


@st.fragment(run_every=refresh)
def job_detail(job_id: str) -> None:
    status = st.container()
    try:
        controls(queue.get(job_id))
        job = queue.get(job_id)  # again: a button above may just have changed it
    except ValueError as err:
        show_error(as_plain_markdown(str(err)))
        return
    with status:
        show_status(job)
    folder = RunFolder(job.run_dir)
    rows, steps = folder.read_metrics(), folder.read_steps()
    for warning in runs.run_warnings(rows):
        st.warning(warning, icon=":material/warning:")
    if rows:
        st.caption(f"After epoch {rows[-1].get('epoch')}, with the change since the epoch before:")
        for col, (label, value, delta) in zip(st.columns(4), runs.headline(rows)):
            col.metric(label, value, delta or None, delta_color="inverse" if label == "EER" else "normal")
    if steps:
        step_chart(job, steps, rows)
    elif rows:  # a run from before steps.jsonl: one point per epoch
        st.plotly_chart(run_curves(rows), key=f"runs.curves.{job.id}")
    if rows:
        st.caption("**Watch validation, not training.** Training accuracy is measured on augmented (and, with "
                   "MixUp/CutMix, blended) images, so it can sit below dev accuracy; when it climbs while dev "
                   "accuracy and verification AUC stall, the model memorises faces instead of learning features. "
                   "Verification (AUC up, EER down) is measured on identities never seen in training: the real goal.")
        show_lambda(job, rows)
    elif job.state in ACTIVE and not steps:
        st.info("Training curves appear after the first few steps; dev and verification metrics after each "
                "epoch (measured on the dev split and the verification pairs).", icon=":material/hourglass_top:")
    with st.expander("Log (last lines)", expanded=job.state == "running" and not rows):
        st.code(RunFolder(job.run_dir).log_tail() or "(empty so far)", language=None)


def compare() -> None:
    if len(finished_runs) < 1:
        st.info("Runs appear here once they have finished at least one epoch.", icon=":material/info:")
        return
    names = {p.name: labels.get(p.name, p.name) for p in finished_runs}
    chosen = st.multiselect("Runs to compare", list(names), default=list(names)[:3], format_func=names.get,
                            key="runs.compare")
    if not chosen:
        st.info("Pick one or more runs above.")
        return
    folders = {names[name]: queue.runs_dir / name for name in chosen}
    metric = st.selectbox("Curve", list(runs.CURVES), index=list(runs.CURVES).index("auc"),
                          format_func=runs.CURVES.get, key="runs.compare_metric")
    curves = {as_plain_html(label): RunFolder(p).read_metrics() for label, p in folders.items()}  # plotly draws tags
    st.plotly_chart(overlay(curves, metric))
    table = runs.compare_rows(list(folders.items()))
    st.dataframe(table, hide_index=True, placeholder=runs.EMPTY, column_config={
        "params": st.column_config.NumberColumn(format="compact"),
        "MACs": st.column_config.NumberColumn(format="compact", help="multiply-accumulates per image; 1 MAC = 2 FLOPs"),
        **{key: st.column_config.NumberColumn(format="%.3f") for key in runs.FINAL_METRICS + ("best_auc",)}})
    st.caption("Final metrics are those of the last epoch; **best_auc** is the best verification AUC over all "
               "epochs (the `best` checkpoint keeps that epoch).")
    axis = st.radio("Accuracy against compute", ["dev_top1", "auc"], format_func=runs.CURVES.get,
                    horizontal=True, key="runs.scatter_metric")
    st.plotly_chart(accuracy_vs_macs([{**row, "run": as_plain_html(row["run"])} for row in table], axis))
    st.caption("Up and to the left is better: more accuracy for fewer MACs per image. A bigger network only "
               "helps when the data and the regularisation can feed it.")


jobs_tab, compare_tab = st.tabs(["Jobs", "Compare runs"])
with jobs_tab:
    if all_jobs:
        jobs_table()
        options = [job.id for job in all_jobs]
        running = [index for index, job in enumerate(all_jobs) if job.state == "running"]
        chosen = st.selectbox("Run", options, index=running[0] if running else 0,
                              format_func=lambda job_id: labels[job_id], key="runs.selected")
        if chosen:
            job_detail(chosen)
            best = RunFolder(queue.run_dir(chosen)).best
            if is_checkpoint(best):  # its best checkpoint so far, as a competition submission
                submission_downloads(labels[chosen], lambda: explore_state.open_model(str(best), labels[chosen]),
                                     f"{best}@{explore_state.mtime(str(best))}", data_root(), "runs")
    else:
        st.info("No jobs in the queue; the runs below were trained with the command line.", icon=":material/info:")
with compare_tab:
    compare()
