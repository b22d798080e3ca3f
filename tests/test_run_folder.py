"""The run folder's format (lib/store/run_folder.py): every file written and read back, folders
caught half written or never written, resumed epochs, and where a run's model spec comes from."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from lib.model.net import FaceNet
from lib.model.presets import PRESETS
from lib.model.spec import HeadSpec, ModelSpec, StageSpec, StemSpec
from lib.store import checkpoint, meta
from lib.store.run_folder import RunFolder, parse_metrics, run_folders
from lib.train.rng import rng_state, set_rng_state

TINY = ModelSpec(name="tiny", stem=StemSpec(out_chs=8), input_size=32, num_classes=5,
                 stages=(StageSpec(block="basic", out_chs=8, depth=1, stride=1),),
                 head=HeadSpec(embedding_dim=12))


def spec_named(name: str) -> dict:
    return {**PRESETS["face_mobilenet"].to_dict(), "name": name}


def test_run_and_config_round_trip(tmp_path):
    folder = RunFolder(tmp_path / "job")
    folder.create()
    run = {"name": "quick", "model": "face_mobilenet", "config": {"loss": "arcface", "epochs": 3}}
    folder.write_run(run)
    assert folder.read_run() == run and folder.train_config() == {"loss": "arcface", "epochs": 3}
    assert folder.run_name() == "quick" and folder.label() == "run job (quick)"
    folder.write_config({"name": "  renamed ", "loss": "cosface"})  # the engine's copy wins once it exists
    assert folder.read_config()["loss"] == "cosface" and folder.train_config()["loss"] == "cosface"
    assert folder.run_name() == "renamed" and folder.label() == "run job (renamed)"
    assert RunFolder(tmp_path / "same").label() == "run same"
    (tmp_path / "same").mkdir()
    RunFolder(tmp_path / "same").write_config({"name": "same"})
    assert RunFolder(tmp_path / "same").label() == "run same"  # the name adds nothing to the id


def test_metrics_round_trip_and_realign_after_a_resume(tmp_path):
    folder = RunFolder(tmp_path)
    records = [{"epoch": 1, "auc": 0.6}, {"epoch": 2, "auc": 0.7}]
    for record in records:
        folder.append_metrics(record)
    assert folder.read_metrics() == records
    folder.align_metrics(records[:1])  # the resume state had finished one epoch only
    assert folder.read_metrics() == records[:1]
    folder.align_metrics([])
    assert folder.read_metrics() == [] and folder.metrics_file.read_text() == ""


def test_metrics_skip_a_half_written_line_and_keep_the_latest_record_of_a_repeated_epoch(tmp_path):
    folder = RunFolder(tmp_path)
    folder.metrics_file.write_text("".join(json.dumps(row) + "\n" for row in (
        {"epoch": 1, "auc": 0.6}, {"epoch": 2, "auc": 0.7}, [1, 2], {"epoch": 2, "auc": 0.75}))
        + '{"epoch": 3, "au')  # a crash in the middle of a line; a list is no record either
    assert folder.read_metrics() == [{"epoch": 1, "auc": 0.6}, {"epoch": 2, "auc": 0.75}]


def test_parse_metrics_orders_by_epoch_with_odd_epochs_last():
    text = "\n".join(json.dumps(row) for row in ({"epoch": 2}, {"epoch": "?"}, {"epoch": 1}, {"epoch": 1.5}))
    assert parse_metrics(text) == [{"epoch": 1}, {"epoch": 1.5}, {"epoch": 2}, {"epoch": "?"}]
    assert parse_metrics("") == [] and parse_metrics("not json\n") == []


def test_a_folder_with_nothing_written_reads_as_empty(tmp_path):
    folder = RunFolder(tmp_path / "never-started")
    assert (folder.read_run(), folder.read_config(), folder.train_config()) == ({}, {}, {})
    assert (folder.run_name(), folder.spec(), folder.read_progress(), folder.read_metrics()) == ("", None, {}, [])
    assert (folder.log_tail(), folder.progress_written_at(), folder.has_resume()) == ("", None, False)
    assert folder.label() == "run never-started"
    with pytest.raises(ValueError, match="nothing to resume \\(no resume/state.pt\\); start the run again"):
        folder.load_resume()


def test_half_written_or_foreign_json_reads_as_empty(tmp_path):
    folder = RunFolder(tmp_path)
    folder.progress_file.write_text('{"status": "runn')  # caught mid-write
    folder.config_file.write_text("[1, 2]")  # JSON, but not an object
    folder.run_file.write_bytes(b"\xff\xfe not text")
    assert (folder.read_progress(), folder.read_config(), folder.read_run()) == ({}, {}, {})
    assert (folder.train_config(), folder.run_name(), folder.spec()) == ({}, "", None)


def test_progress_is_throttled_unless_forced(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.write_progress(status="running", step=1)
    assert not folder.write_progress(status="running", step=2)  # within PROGRESS_EVERY_S of the last
    assert folder.read_progress()["step"] == 1
    assert folder.write_progress(force=True, status="done", step=3)
    progress = folder.read_progress()
    assert (progress["status"], progress["step"]) == ("done", 3) and progress["updated"] > 0
    assert folder.progress_written_at() == pytest.approx(folder.progress_file.stat().st_mtime)


def test_log_is_appended_and_its_tail_read(tmp_path):
    folder = RunFolder(tmp_path)
    for launch in ("first", "second"):
        with folder.open_log() as log:
            log.write("".join(f"{launch} {i}\n" for i in range(50)).encode())
    assert folder.log_tail(lines=3) == "second 47\nsecond 48\nsecond 49"
    assert folder.log_tail(lines=1000).splitlines()[0] == "first 0"
    assert "first" not in folder.log_tail(lines=1000, max_chars=100)  # only the end is read


def test_spec_comes_from_best_then_last_then_config_then_run(tmp_path):
    folder = RunFolder(tmp_path)
    folder.write_run({"name": "r", "model": "face_mobilenet"})
    assert folder.spec() == PRESETS["face_mobilenet"].to_dict()  # a preset's name becomes its spec
    folder.write_config({"model": spec_named("from-config")})
    assert folder.spec()["name"] == "from-config"
    checkpoint.save_checkpoint(folder.last, FaceNet(TINY), {})
    assert folder.spec()["name"] == "tiny"  # the checkpoint's spec, classifier sized to the data
    (folder.best).mkdir()
    (folder.best / meta.META_FILE).write_text(json.dumps({"spec": spec_named("from-best")}))
    assert folder.spec()["name"] == "from-best"
    folder.write_config({"model": "no-such-preset"})
    (folder.best / meta.META_FILE).write_text("{")
    assert folder.spec()["name"] == "tiny"  # a broken or unknown entry is passed over


def test_run_folders_lists_visible_folders_by_name(tmp_path):
    for name in ("b", "a", ".staging"):
        (tmp_path / name).mkdir()
    (tmp_path / "jobs.sqlite").write_text("")
    assert [folder.id for folder in run_folders(tmp_path)] == ["a", "b"]
    assert run_folders(tmp_path / "missing") == []


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def test_resume_state_round_trip_restores_every_generator(tmp_path):
    folder = RunFolder(tmp_path)
    seed_everything(1)
    folder.save_resume({"step": 7, "rng": rng_state()})
    expected = (torch.rand(3), random.random(), np.random.rand())
    seed_everything(2)
    state = folder.load_resume()  # weights_only: the RNG state is plain tensors and numbers
    set_rng_state(state["rng"])
    assert state["step"] == 7 and folder.has_resume()
    drawn = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(drawn[0], expected[0]) and drawn[1:] == expected[1:]


def test_an_unreadable_resume_state_is_reported_not_unpickled(tmp_path):
    folder = RunFolder(tmp_path)
    folder.resume_file.parent.mkdir()
    folder.resume_file.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="state.pt: cannot be read"):
        folder.load_resume()
