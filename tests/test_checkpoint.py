"""Checkpoint folders: round trip, DataParallel prefixes, shape checks, atomic replacement."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lib.base import files
from lib.store import checkpoint
from lib.store.checkpoint import (list_checkpoints, load_checkpoint, load_weights_checked, save_checkpoint)
from lib.model.net import FaceNet
from lib.model.spec import HeadSpec, ModelSpec, StageSpec, StemSpec

ROOT = Path(__file__).resolve().parent.parent

TINY = ModelSpec(name="tiny", stem=StemSpec(out_chs=8), input_size=32, num_classes=5,
                 stages=(StageSpec(block="basic", out_chs=8, depth=1, stride=1),
                         StageSpec(block="basic", out_chs=16, depth=1, stride=2)),
                 head=HeadSpec(embedding_dim=12))


def _trained_like(spec: ModelSpec = TINY, seed: int = 0) -> FaceNet:
    torch.manual_seed(seed)
    model = FaceNet(spec)
    # Non-default BatchNorm statistics, so a forgotten buffer would show.
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, spec.input_size, spec.input_size))
    return model.eval()


def test_round_trip_gives_identical_outputs_and_meta(tmp_path):
    model = _trained_like()
    head = nn.Linear(12, 5)
    folder = save_checkpoint(tmp_path / "ck", model, {"classes": list("abcde"), "metrics": {"auc": 0.9}},
                             loss_module=head)
    loaded = load_checkpoint(folder)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(loaded.model(x), model(x))
    assert not loaded.model.training
    assert loaded.spec == TINY
    assert loaded.meta["classes"] == list("abcde") and loaded.meta["metrics"]["auc"] == 0.9
    assert loaded.meta["versions"]["torch"] == torch.__version__
    assert torch.equal(loaded.loss_state["weight"], head.weight.detach())
    # The weights file is plain safetensors, readable without our code.
    raw = load_file(str(folder / "model.safetensors"))
    assert set(raw) == set(model.state_dict())


def test_channels_last_model_saves(tmp_path):
    model = _trained_like().to(memory_format=torch.channels_last)
    loaded = load_checkpoint(save_checkpoint(tmp_path / "ck", model, {}))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.model(x), model(x))


def test_dataparallel_prefix_is_stripped(tmp_path):
    model = _trained_like()
    wrapped = nn.DataParallel(model)  # real wrapper: its state_dict names start with "module."
    state = wrapped.state_dict()
    assert all(name.startswith("module.") for name in state)
    rebuilt = load_weights_checked(state, TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(rebuilt(x), model(x))
    # Saving the wrapper itself stores the inner names.
    folder = save_checkpoint(tmp_path / "dp", wrapped, {})
    assert not any(k.startswith("module.") for k in load_file(str(folder / "model.safetensors")))
    assert load_checkpoint(folder).spec == TINY


def test_wrong_shapes_and_names_are_listed():
    wider = replace(TINY, stages=(TINY.stages[0], replace(TINY.stages[1], out_chs=24)))
    state = FaceNet(wider).state_dict()
    with pytest.raises(ValueError, match="shape mismatches") as err:
        load_weights_checked(state, TINY)
    assert "stages.1.0" in str(err.value) and "(24," in str(err.value)
    state = FaceNet(TINY).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["classifier.bias"]
    with pytest.raises(ValueError) as err:
        load_weights_checked(state, TINY)
    assert "classifier.bias" in str(err.value) and "extra.weight" in str(err.value)


def test_failed_save_keeps_the_old_checkpoint(tmp_path):
    folder = save_checkpoint(tmp_path / "ck", _trained_like(seed=1), {"epoch": 1})
    before = (folder / "model.safetensors").read_bytes()
    with pytest.raises(TypeError):  # meta that cannot be written as JSON fails the save midway
        save_checkpoint(folder, _trained_like(seed=2), {"epoch": 2, "bad": object()})
    assert (folder / "model.safetensors").read_bytes() == before
    assert json.loads((folder / "meta.json").read_text())["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no staging folder left behind


def test_interrupted_replacement_is_recovered(tmp_path):
    folder = save_checkpoint(tmp_path / "ck", _trained_like(), {"epoch": 3})
    # The state a crash between the two renames leaves: old folder moved aside, new one not yet in place.
    os.replace(folder, tmp_path / ".ck.old")
    assert load_checkpoint(folder).meta["epoch"] == 3


def test_atomic_text_write_replaces_whole_file(tmp_path):
    target = tmp_path / "progress.json"
    files.atomic_write_json(target, {"step": 1})
    files.atomic_write_json(target, {"step": 2})
    assert json.loads(target.read_text()) == {"step": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]


SAVER = """
import sys, torch
from lib.store.checkpoint import save_checkpoint
from lib.model.net import FaceNet
from tests.test_checkpoint import TINY
model = FaceNet(TINY)
i = 0
while True:
    i += 1
    save_checkpoint(sys.argv[1], model, {"epoch": i})
    print(i, flush=True)
"""


def test_kill_during_saves_never_leaves_a_broken_checkpoint(tmp_path):
    folder = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(folder)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(5):  # let it replace the folder a few times
            assert proc.stdout.readline(), "the saving process died"
        time.sleep(0.013)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    loaded = load_checkpoint(folder)  # whichever save won, it is whole
    assert loaded.meta["epoch"] >= 5
    assert loaded.spec == TINY


def test_list_checkpoints_finds_run_best_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("FACELAB_RUNS_DIR", str(tmp_path))
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "config.json").write_text(json.dumps({"name": "quick"}))
    save_checkpoint(tmp_path / "r1" / "best", _trained_like(), {})
    (tmp_path / "r2" / "best").mkdir(parents=True)  # a run that has not finished an epoch
    found = dict(list_checkpoints())
    assert found["run r1 (quick)"] == tmp_path / "r1" / "best"
    assert not any(path.parent.name == "r2" for path in found.values())
    demos = [path for label, path in list_checkpoints() if path.parent == checkpoint.config.CHECKPOINTS_DIR]
    assert all((path / "meta.json").is_file() for path in demos)


# ----------------------------------------------------------------------------- shipped demo checkpoints

DEMOS = ("demo-ce", "demo-arcface", "demo-cosface", "demo-sphereface")


def _demo_meta(name: str) -> dict:
    return json.loads((checkpoint.config.CHECKPOINTS_DIR / name / "meta.json").read_text())


@pytest.mark.parametrize("name", DEMOS)
def test_demo_checkpoint_is_small_and_documented(name):
    folder = checkpoint.config.CHECKPOINTS_DIR / name
    meta = _demo_meta(name)
    assert meta["recipe"] == f"recipes/{name}.json" and meta["loss"] == name.split("-")[1]
    assert meta["metrics"]["auc"] >= 0.88
    assert meta["run_wall_s"] > 0 and meta["spec"]["num_classes"] == len(meta["classes"]) == 298
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 8 * 2**20, f"{name} is {size / 2**20:.1f} MB"
    assert (name, folder) in list_checkpoints()


def test_margin_demos_verify_better_than_ce():
    ce = _demo_meta("demo-ce")["metrics"]
    for name in DEMOS[1:]:
        meta = _demo_meta(name)
        assert meta["config"]["init_from"] == "checkpoints/demo-ce"  # sequential: fine-tuned from CE
        assert meta["metrics"]["eer"] < ce["eer"], name
        assert meta["metrics"]["auc"] > ce["auc"], name
