"""`python -m lib profile` and `python -m lib export-code`, as a user runs them."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from lib.__main__ import main
from lib.model.codegen import to_source
from lib.model.net import count_params
from lib.model.presets import PRESETS
from lib.model.profile import profile
from tests.conftest import ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lib", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_profile_json_from_a_real_process():
    done = run_cli("profile", "resnet18", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data) == {"params", "macs", "stages"}
    assert (data["params"], data["macs"]) == (11_689_512, 1_814_073_344)  # torchvision's resnet18
    assert [row["name"] for row in data["stages"]] == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert all(set(row) == {"name", "params", "macs", "out_shape"} for row in data["stages"])
    assert data["stages"][4]["out_shape"] == [512, 7, 7]
    assert sum(row["params"] for row in data["stages"]) == data["params"]


def test_unknown_name_exits_2_with_a_clear_message_from_a_real_process():
    done = run_cli("profile", "resnet19")
    assert done.returncode == 2
    assert "'resnet19' is not a preset" in done.stderr and "resnet18" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_profile_table(capsys):
    assert main(["profile", "face_resnet"]) == 0
    out = capsys.readouterr().out
    assert f"{count_params(PRESETS['face_resnet']):,}" in out
    for name in ("stem", "stage1", "stage4", "head", "total"):
        assert name in out
    assert "1 MAC = 2 FLOPs" in out


def test_input_size_and_num_classes_override_the_spec(capsys):
    assert main(["profile", "resnet18", "--input-size", "64", "--num-classes", "10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = profile(replace(PRESETS["resnet18"], input_size=64, num_classes=10))
    assert (data["params"], data["macs"]) == (expected.params, expected.macs)
    assert data["stages"][-1]["out_shape"] == [10]


def test_spec_json_file_and_inline_json(tmp_path, capsys):
    spec = replace(PRESETS["face_resnet"], stages=PRESETS["face_resnet"].stages[:2], name="two stages")
    path = tmp_path / "model.json"
    path.write_text(spec.to_json())
    assert main(["profile", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == count_params(spec)
    assert main(["profile", spec.to_json(indent=None), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == count_params(spec)


@pytest.mark.parametrize("content,message", [
    ("{ not json", "not valid JSON"),
    ('{"stages": [{"block": "basic", "stride": 3}]}', "stages[0].stride: 3"),
    ('{"stages": [{"width": 3}]}', "unknown field 'width'"),
])
def test_bad_spec_files_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["profile", str(path)]) == 2
    assert main(["export-code", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count(message) == 2, err


def test_missing_file_and_impossible_override_exit_2(tmp_path, capsys):
    assert main(["profile", str(tmp_path / "nowhere.json")]) == 2
    assert "no spec file" in capsys.readouterr().err
    assert main(["profile", "resnet18", "--input-size", "2"]) == 2
    assert "input_size: 2" in capsys.readouterr().err


def test_export_code_prints_the_generated_source(capsys):
    assert main(["export-code", "face_convnext"]) == 0
    out = capsys.readouterr().out
    assert out == to_source(PRESETS["face_convnext"])
    compile(out, "face_convnext.py", "exec")
    assert main(["export-code", "nope"]) == 2
    assert "not a preset" in capsys.readouterr().err
