"""The layers of lib/ (see .importlinter and the README's Architecture section), checked by
import-linter: one-way layers, no Streamlit in lib, no import circle inside a package."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(project: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run([str(LINT), "--config", str(project / ".importlinter"), "--no-cache"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)


def test_every_contract_is_kept():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def _copy_lib(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "lib", tmp_path / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_an_import_that_runs_up_the_layers_is_caught(tmp_path):
    project = _copy_lib(tmp_path)
    _append(project / "lib/model/net.py", "from lib.store import checkpoint  # noqa")
    result = lint(project)
    assert result.returncode != 0
    assert "lib.model.net -> lib.store.checkpoint" in result.stdout


def test_streamlit_in_lib_is_caught(tmp_path):
    project = _copy_lib(tmp_path)
    _append(project / "lib/base/config.py", "import streamlit  # noqa")
    result = lint(project)
    assert result.returncode != 0
    assert "lib never imports Streamlit" in result.stdout and "BROKEN" in result.stdout


def test_an_import_circle_inside_a_package_is_caught(tmp_path):
    project = _copy_lib(tmp_path)
    _append(project / "lib/model/counting.py", "from lib.model import spec  # noqa")
    result = lint(project)
    assert result.returncode != 0
    assert "No cycles are allowed in lib.model" in result.stdout
