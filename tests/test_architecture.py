"""The layers of lib/ (see .importlinter and the README's Architecture section), checked by
import-linter: one-way layers, no Streamlit in lib, no import circle inside a package."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


# A line planted in a copy of lib/, and what import-linter must then report.
VIOLATIONS = {
    "an import up the layers": ("lib/model/net.py", "from lib.store import checkpoint",
                                "lib.model.net -> lib.store.checkpoint"),
    "Streamlit in lib": ("lib/base/config.py", "import streamlit",
                         "lib never imports Streamlit (pages in views/ do) BROKEN"),
    "a circle inside a package": ("lib/model/counting.py", "from lib.model import spec",
                                  "No cycles are allowed in lib.model"),
}


@pytest.mark.parametrize("violation", VIOLATIONS)
def test_a_planted_violation_is_caught(tmp_path, violation):
    module, line, report = VIOLATIONS[violation]
    project = _copy_lib(tmp_path)
    target = project / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = lint(project)
    assert result.returncode != 0
    assert report in result.stdout, result.stdout
