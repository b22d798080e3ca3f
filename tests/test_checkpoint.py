"""Checkpoint folders: round trip, DataParallel prefixes, shape checks, atomic replacement, and
meta.json as a checked CheckpointMeta (format 2, and format 1 from before the version key)."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lib.base import config, files
from lib.model.net import FaceNet
from lib.model.spec import HeadSpec, ModelSpec, StageSpec, StemSpec
from lib.store import meta as meta_format
from lib.store.catalog import list_checkpoints
from lib.store.checkpoint import load_checkpoint, load_weights_checked, publish_checkpoint, save_checkpoint
from lib.store.meta import META_VERSION, CheckpointMeta, Normalization, read_meta, recordable_metrics

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
    assert loaded.meta.classes == tuple("abcde") and loaded.meta.metrics["auc"] == 0.9
    assert loaded.meta.versions["torch"] == torch.__version__
    assert loaded.meta.version == META_VERSION and loaded.meta.spec == TINY
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
    with pytest.raises(TypeError):  # meta that cannot be written as JSON fails the save
        save_checkpoint(folder, _trained_like(seed=2), {"epoch": 2, "bad": object()})
    assert (folder / "model.safetensors").read_bytes() == before
    assert json.loads((folder / "meta.json").read_text())["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no staging folder left behind


def test_interrupted_replacement_is_recovered(tmp_path):
    folder = save_checkpoint(tmp_path / "ck", _trained_like(), {"epoch": 3})
    # The state a crash between the two renames leaves: old folder moved aside, new one not yet in place.
    os.replace(folder, tmp_path / ".ck.old")
    assert load_checkpoint(folder).meta.epoch == 3


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
    assert loaded.meta.epoch >= 5
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
    demos = [path for label, path in list_checkpoints() if path.parent == config.CHECKPOINTS_DIR]
    assert all((path / "meta.json").is_file() for path in demos)


# ----------------------------------------------------------------------------- shipped demo checkpoints

DEMOS = ("demo-ce", "demo-arcface", "demo-cosface", "demo-sphereface")


def _demo_meta(name: str) -> dict:
    return json.loads((config.CHECKPOINTS_DIR / name / "meta.json").read_text())


@pytest.mark.parametrize("name", DEMOS)
def test_demo_checkpoint_is_small_and_documented(name):
    folder = config.CHECKPOINTS_DIR / name
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


@pytest.mark.parametrize("name", DEMOS)
def test_demo_checkpoint_loads_as_checked_meta(name):
    folder = config.CHECKPOINTS_DIR / name
    loaded = load_checkpoint(folder)
    meta = loaded.meta
    assert meta.spec == loaded.spec and meta.loss == name.split("-")[1] and meta.name == name
    assert len(meta.classes) == meta.spec.num_classes == 298 and meta.metrics["auc"] >= 0.88
    assert len(meta.normalize.mean) == len(meta.normalize.std) == 3 and meta.epoch > 0 and meta.step > 0
    assert meta.recipe == f"recipes/{name}.json" and meta.run_epochs > 0 and meta.machine["cpus"] >= 1
    # Nothing the file holds is lost or changed: written back, it is the file plus the version.
    assert meta.to_dict() == {**_demo_meta(name), "version": META_VERSION} and meta.extras == {}


# ----------------------------------------------------------------------------- meta.json as CheckpointMeta

def _full_meta() -> CheckpointMeta:
    return CheckpointMeta(spec=TINY, config={"name": "quick", "loss_params": {"margin": 0.5}}, classes=tuple("abcde"),
                          metrics={"epoch": 2, "auc": 0.9, "kfold_mean": None, "warning": "slow"},
                          normalize=Normalization((0.5, 0.4, 0.3), (0.2, 0.2, 0.2)), epoch=2, step=40,
                          loss="arcface", name="quick", wall_s=12.5, versions={"torch": torch.__version__},
                          created="2026-01-01T00:00:00+00:00", recipe="recipes/quick.json", run_wall_s=13.0,
                          run_epochs=2, machine={"cpus": 2, "load_average_1min_at_end": None},
                          extras={"note": "kept by hand"})


def test_every_field_round_trips_through_meta_json(tmp_path):
    meta = _full_meta()
    assert {f.name for f in fields(CheckpointMeta)} == {"version", "extras", *meta_format._FIELD_PARSERS}
    assert CheckpointMeta.from_dict(json.loads(json.dumps(meta.to_dict()))) == meta
    folder = save_checkpoint(tmp_path / "ck", FaceNet(TINY), meta)
    assert read_meta(folder) == meta  # versions and created are kept when recorded
    written = json.loads((folder / "meta.json").read_text())
    assert written["version"] == META_VERSION and written["note"] == "kept by hand"
    assert written["normalize"] == {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}


def test_a_meta_json_without_version_is_format_1_and_loads(tmp_path):
    model = _trained_like()
    folder = save_checkpoint(tmp_path / "ck", model, {"classes": list("abcde"), "loss": "ce", "epoch": 4})
    old = json.loads((folder / "meta.json").read_text())
    del old["version"]
    old["metrics"] = {"auc": 0.7, "kfold_mean": float("nan")}  # format 1 wrote a missing value as NaN
    (folder / "meta.json").write_text(json.dumps(old))
    assert "NaN" in (folder / "meta.json").read_text()
    loaded = load_checkpoint(folder)
    assert loaded.meta.version == META_VERSION and loaded.meta.epoch == 4 and loaded.meta.classes == tuple("abcde")
    assert loaded.meta.metrics == {"auc": 0.7, "kfold_mean": None}
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.model(x), model(x))


def _rewritten(folder: Path, **changes) -> Path:
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(changes)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


BAD_FIELDS = [
    ({"epoch": "three"}, "epoch: 'three' is not a whole number"),
    ({"step": -1}, "step: -1 is not a whole number"),
    ({"classes": ["a", 7]}, "classes[1]: 7 is not text"),
    ({"classes": "abcde"}, "classes: 'abcde' is not a list of names"),
    ({"metrics": {"auc": float("nan")}}, "metrics.auc: nan is not a finite number"),
    ({"metrics": {"eer": [0.1]}}, "metrics.eer: [0.1] is not a finite number"),
    ({"wall_s": float("inf")}, "wall_s: inf is not a finite number"),
    ({"normalize": {"mean": [0.5] * 3, "std": [0.2, 0, 0.2]}}, "normalize.std[1]: 0.0 is not positive"),
    ({"normalize": {"mean": [0.5] * 3}}, "normalize.std: None is not a list of numbers"),
    ({"loss": 3}, "loss: 3 is not text"),
    ({"config": []}, "config: [] is not a JSON object"),
    ({"versions": {"torch": 2}}, "versions.torch: 2 is not text"),
    ({"machine": {"cpus": True}}, "machine.cpus: True is not a finite number"),
    ({"spec": None}, "has no model spec ('spec')"),
    ({"spec": {"stages": "none"}}, "spec: stages must be a list"),
    ({"version": 3}, "version: format 3 is newer than this FaceLab reads"),
    ({"version": "2"}, "version: '2' is not a meta.json format number"),
]


@pytest.mark.parametrize("changes, message", BAD_FIELDS, ids=[m.split(":")[0] for _, m in BAD_FIELDS])
def test_a_bad_field_is_refused_naming_the_field_and_value(tmp_path, changes, message):
    folder = _rewritten(save_checkpoint(tmp_path / "ck", FaceNet(TINY), {}), **changes)
    for read in (read_meta, load_checkpoint):
        with pytest.raises(ValueError, match=re.escape(message)) as err:
            read(folder)
        assert str(err.value).startswith(str(folder / "meta.json"))  # which file, too


def test_a_missing_spec_and_a_non_object_are_refused(tmp_path):
    folder = save_checkpoint(tmp_path / "ck", FaceNet(TINY), {})
    meta = json.loads((folder / "meta.json").read_text())
    del meta["spec"]
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=re.escape("has no model spec ('spec')")):
        load_checkpoint(folder)
    (folder / "meta.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object, got list"):
        read_meta(folder)


def test_a_save_that_would_not_read_back_is_refused_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="metrics.auc: nan is not a finite number"):
        save_checkpoint(tmp_path / "ck", FaceNet(TINY), {"metrics": {"auc": float("nan")}})
    with pytest.raises(ValueError, match="epoch: 1.5 is not a whole number"):
        save_checkpoint(tmp_path / "ck", FaceNet(TINY), replace(_full_meta(), epoch=1.5))
    assert list(tmp_path.iterdir()) == []


def test_recordable_metrics_turn_missing_values_into_none():
    record = {"auc": 0.9, "kfold_mean": float("nan"), "eer": float("inf"), "epoch": 3, "warning": "slow"}
    assert recordable_metrics(record) == {"auc": 0.9, "kfold_mean": None, "eer": None, "epoch": 3, "warning": "slow"}
    meta = CheckpointMeta.from_dict({"spec": TINY.to_dict(), "metrics": recordable_metrics(record), "version": 2})
    assert meta.metrics["kfold_mean"] is None and not any(
        isinstance(v, float) and not math.isfinite(v) for v in meta.metrics.values())


def test_publish_merges_checked_extras_and_keeps_unknown_keys(tmp_path):
    source = save_checkpoint(tmp_path / "run" / "best", _trained_like(), {"epoch": 2, "note": "by hand"})
    target = publish_checkpoint(source, tmp_path / "published", {"recipe": "recipes/x.json", "run_wall_s": 9.5,
                                                                 "machine": {"cpus": 2}})
    meta = read_meta(target)
    assert (meta.recipe, meta.run_wall_s, meta.machine, meta.epoch) == ("recipes/x.json", 9.5, {"cpus": 2}, 2)
    assert meta.extras == {"note": "by hand"} and meta.spec == TINY
    with pytest.raises(ValueError, match="run_wall_s: 'fast' is not a finite number"):
        publish_checkpoint(source, tmp_path / "other", {"run_wall_s": "fast"})
    assert not (tmp_path / "other").exists()
