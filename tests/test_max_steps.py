"""`python -m lib train --max-steps N`: a smoke test or benchmark that stops after N optimizer steps,
saved and marked as stopped, and that resumes to the very weights of an uninterrupted run."""
from __future__ import annotations

import json

import torch

from lib.__main__ import main
from lib.jobs import launcher
from lib.store.checkpoint import load_checkpoint
from lib.store.run_folder import RunFolder
from lib.train.engine import train
from tests.train_cases import tiny_config, tiny_run

SMALL = {"epochs": 2, "subset": {"classes": 4, "pairs": 12}}  # 2 steps an epoch of batch 8


def test_max_steps_stops_saved_and_a_resume_ends_where_an_uninterrupted_run_does(tmp_path, capsys):
    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps(tiny_run("smoke", **SMALL)))
    out = tmp_path / "smoke"
    assert main(["train", str(run_file), "--out", str(out), "--max-steps", "3"]) == 0
    assert "stopped: 3/" in capsys.readouterr().out
    folder = RunFolder(out)
    progress = folder.read_progress()
    assert progress["status"] == "stopped" and progress["step"] == 3 and "--max-steps" in progress["message"]
    assert load_checkpoint(folder.last).meta.step == 3  # the checkpoint holds the weights after step 3
    assert folder.load_resume()["step"] == 3 and len(folder.read_metrics()) == 1  # stopped in epoch 2

    # The queue treats a step-limited run like a cancelled one: it can be resumed.
    job = type("Job", (), {"run_dir": out, "started": None, "cancel_requested": 0})()
    assert launcher.outcome(job, 0) == ("cancelled", progress["message"])

    assert main(["train", "--out", str(out), "--resume"]) == 0
    done = folder.read_progress()
    assert done["status"] == "done" and done["step"] == done["total_steps"] == 4
    assert [record["epoch"] for record in folder.read_metrics()] == [1, 2]

    reference = tmp_path / "reference"
    train(tiny_config(name="smoke", **SMALL), reference)
    resumed, uninterrupted = load_checkpoint(folder.last).model, load_checkpoint(reference / "last").model
    for name, value in uninterrupted.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_a_limit_at_an_epochs_end_evaluates_it_and_one_past_the_schedule_is_done(tmp_path):
    summary = train(tiny_config(**SMALL), tmp_path / "a", max_steps=2)
    assert summary["status"] == "stopped" and summary["step"] == 2
    assert [record["epoch"] for record in RunFolder(tmp_path / "a").read_metrics()] == [1]
    assert load_checkpoint(tmp_path / "a" / "best").meta.epoch == 1

    summary = train(tiny_config(**SMALL), tmp_path / "b", max_steps=100)
    assert summary["status"] == "done" and summary["step"] == 4
    assert RunFolder(tmp_path / "b").read_progress()["status"] == "done"
