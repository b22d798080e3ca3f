"""Reading run folders for display: half-written files, resumed epochs, progress, headline numbers,
and the named recipes and Train page fields against the engine's TrainConfig."""
from __future__ import annotations

import json

import pytest

from lib.jobs import queue as jobs
from lib.store.run_folder import RunFolder
from lib.train import recipes
from lib.train.config import TrainConfig, config_from_run
from lib.ui import runs, train_form


def write_lines(path, *rows, tail: str = "") -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + tail)


def test_metrics_skip_a_half_written_line_and_keep_the_latest_record_of_an_epoch(tmp_path):
    write_lines(tmp_path / "metrics.jsonl", {"epoch": 1, "auc": 0.6}, {"epoch": 2, "auc": 0.7},
                {"epoch": 2, "auc": 0.75}, tail='{"epoch": 3, "au')
    assert RunFolder(tmp_path).read_metrics() == [{"epoch": 1, "auc": 0.6}, {"epoch": 2, "auc": 0.75}]
    assert runs.final_metrics(tmp_path)["best_auc"] == 0.75 and runs.final_metrics(tmp_path)["epochs_done"] == 2
    assert runs.final_metrics(tmp_path / "missing") == {} and runs.metric_runs(tmp_path / "missing") == []


def test_progress_fraction_and_durations():
    assert runs.progress_fraction({"step": 30, "total_steps": 120}) == 0.25
    assert runs.progress_fraction({"epoch": 3, "epochs": 4}) == 0.75
    assert runs.progress_fraction({"step": 5, "total_steps": 0}) == 0.0 and runs.progress_fraction(None) == 0.0
    assert [runs.format_duration(s) for s in (42, 185, 3720, None, -1)] == ["42 s", "3 min 05 s", "1 h 02 min", "-", "-"]


def test_headline_and_warnings():
    rows = [{"epoch": 1, "dev_top1": 0.2, "auc": 0.70, "eer": 0.35, "warning": "stuck"},
            {"epoch": 2, "dev_top1": 0.3, "auc": 0.75, "eer": 0.30, "train_acc": 0.4, "warning": "stuck"}]
    assert runs.headline(rows) == [("dev top-1", "0.300", "+0.100"), ("verification AUC", "0.750", "+0.050"),
                                   ("EER", "0.300", "-0.050"), ("training accuracy", "0.400", "")]
    assert runs.run_warnings(rows) == ["stuck"] and runs.headline([]) == []


def test_a_warning_repeated_each_epoch_is_listed_once_with_its_epochs():
    rows = [{"epoch": e, "warning": f"epoch {e}: the embeddings collapsed: spread {0.01 * e:.2g}"} for e in (1, 2, 3)]
    rows[1]["warning"] += "\n\narcface: training accuracy 0.004 is still near chance"
    assert runs.run_warnings(rows) == ["arcface: training accuracy 0.004 is still near chance",
                                       "epochs 1-3 (numbers of epoch 3): the embeddings collapsed: spread 0.03"]
    same = [{"epoch": 1, "eer": 0.3001}, {"epoch": 2, "eer": 0.3003}]  # rounds to no change: no arrow
    assert runs.headline(same) == [("EER", "0.300", "")]


def job(tmp_path, state: str, **fields) -> jobs.Job:
    """A job record as the queue reads it from its registry."""
    values = dict(id="j1", name="run", user="ada", state=state, created=1.0, started=None, ended=None, pid=None,
                  pid_start=None, device=None, resume=0, attempts=0, cancel_requested=0, exit_code=None,
                  reason="", log_tail="", run_dir=tmp_path)
    values.update(fields)
    return jobs.Job(**values)


def test_a_job_that_has_not_reported_yet_says_what_it_is_doing(tmp_path):
    assert runs.status_line(job(tmp_path, "running")) == runs.STARTING
    assert "loading PyTorch and the data set" in runs.STARTING
    row = runs.job_row(job(tmp_path, "running"))
    assert (row["epoch"], row["ETA"], row["images/s"], row["best AUC"]) == (runs.EMPTY, runs.EMPTY, None, None)
    (tmp_path / "progress.json").write_text(json.dumps({"epoch": 1, "epochs": 3, "step": 4, "total_steps": 12,
                                                        "images_per_s": 50.0, "eta_s": 65}))
    assert runs.status_line(job(tmp_path, "running")) == "epoch 1 / 3, step 4 / 12, 50 images/s, about 1 min 05 s left"
    assert runs.job_row(job(tmp_path, "running"))["ETA"] == "1 min 05 s"


@pytest.mark.parametrize("name", sorted(recipes.all_recipes()))
def test_every_recipe_is_a_valid_run(name):
    recipe = recipes.all_recipes()[name]
    assert set(recipe.config) <= {f for f in TrainConfig.__dataclass_fields__}
    model = recipe.model or recipe.preset or "face_resnet"
    settings = {key: value for key, value in recipe.config.items() if key != "init_from"}  # may not exist yet
    config = config_from_run({"name": name, "model": model, "config": settings})
    values = train_form.recipe_values(recipe)
    assert all(values[key] == getattr(config, key) for key in values if key != "label_smoothing")


def test_page_fields_are_trainconfig_fields_within_its_limits(monkeypatch):
    # The widgets' ranges, not this host's memory: batch 1024 of face_resnet needs just over the
    # default 8 GiB activation limit, which tests/test_resource_guards.py covers.
    monkeypatch.setenv("FACELAB_MAX_BATCH_ACTIVATION_BYTES", str(64 * 2**30))
    defaults = TrainConfig()
    for field in train_form.FIELDS.values():
        assert hasattr(defaults, field.name)
        if field.kind in ("int", "float"):  # both ends of a widget's range are values the engine accepts
            for end in (field.low, field.high):
                value = int(end) if field.kind == "int" else float(end)
                settings = {field.name: value, "nesterov": False}  # Nesterov needs momentum > 0
                assert getattr(config_from_run({"model": "face_resnet", "config": settings}), field.name) == value
        if field.kind == "choice":
            for choice in field.choices:
                config_from_run({"model": "face_resnet", "config": {field.name: choice}})


def test_steps_in_words():
    values = {"batch_size": 64, "epochs": 10, "warmup_epochs": 1.0, "ema": True, "ema_decay": 0.999}
    text = train_form.step_facts(2802, values)
    assert "**43 steps per epoch**, 430 in all" in text and "warm-up 43 steps" in text
    assert "about 1,000 steps (**over half the run" in text
    assert "the rate never decays" in train_form.step_facts(2802, dict(values, epochs=1))
    assert "never decays" not in text


def test_a_recipe_sets_loss_parameters_typed_and_the_checkpoint_it_fine_tunes(tmp_path):
    recipe = recipes.Recipe("margin", "margin", "", config={
        "loss": "sphereface", "loss_params": {"s": 30, "m": 4}, "epochs": 6, "warmup_epochs": 1,
        "init_from": str(tmp_path / "ce" / "best")})
    found = [("other", tmp_path / "other"), ("run ce", tmp_path / "ce" / "best")]
    state, note = train_form.recipe_state(recipe, found)
    assert (state["train.scheme"], state["train.init_from"], note) == ("sequential", "run ce", "")
    assert state["train.loss"] == "sphereface" and state["train.epochs"] == 6
    assert state["train.lp.s"] == 30.0 and isinstance(state["train.lp.s"], float)  # a float widget
    assert state["train.lp.m"] == 4 and isinstance(state["train.lp.m"], int)
    assert isinstance(state["train.warmup_epochs"], float) and "train.lp.margin_rad" not in state
    state, note = train_form.recipe_state(recipe, found[:1])
    assert state["train.scheme"] == "scratch" and "not here yet" in note


def test_run_curves_leave_room_between_rows_and_count_whole_epochs():
    from lib.ui.run_plots import overlay, run_curves
    rows = [{"epoch": e, "train_loss": 2.0 / e, "auc": 0.5 + e / 10, "lr": 0.1} for e in (1, 2, 3)]
    figure = run_curves(rows)
    layout = figure.layout
    plot_px = layout.height - layout.margin.t - layout.margin.b
    gap_px = (layout.yaxis.domain[0] - layout.yaxis3.domain[1]) * plot_px
    # tick labels (~20 px), the "epoch" axis title (~25 px) and the next panel's title (~25 px) fit between rows
    assert gap_px >= 100, gap_px
    assert layout.xaxis.dtick == 1 and overlay({"a": rows}, "auc").layout.xaxis.dtick == 1
    long_run = [{"epoch": e, "train_loss": 1.0} for e in range(1, 51)]
    assert run_curves(long_run).layout.xaxis.dtick is None  # plotly picks the ticks of a long run
