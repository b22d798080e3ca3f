"""The course's cut-offs as data, and whether a model's validation numbers pass them.

HW2P2 grades by cut-offs: an early one (the course notes: at least 5.5% classification
accuracy and 0.75 verification AUC) and a final, higher one. The values live in
``lib/eval/cutoffs.toml``; a TOML file named in FACELAB_CUTOFFS replaces any of them, so an
instructor sets a term's numbers without touching the code. A cut-off that is not set (the
course notes do not give the final numbers) reads "not set", never "passed".

The verdicts compare *validation* numbers (dev top-1, the validation pairs' AUC): the
competition scores the hidden test set, so passing here is an estimate, not the grade.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from lib.base import config

DEFAULTS_FILE = Path(__file__).with_name("cutoffs.toml")
LEVELS = ("early", "final")
# task -> (key in the cut-offs file, key of the validation metric it is compared with, title)
TASKS = {
    "classification": ("classification_accuracy", "dev_top1", "classification accuracy"),
    "verification": ("verification_auc", "auc", "verification AUC"),
}


@dataclass(frozen=True)
class Settings:
    """Cut-offs by level and task (None: not set) and the leaderboard's public/private split."""
    cutoffs: dict  # {"early": {"classification": 0.055, "verification": 0.75}, "final": {...}}
    seed: int = 11785
    public_share: float = 0.5


@dataclass(frozen=True)
class Verdict:
    level: str           # "early" | "final"
    task: str            # "classification" | "verification"
    cutoff: float | None  # None: not set
    value: float | None   # the validation number; None: not measured
    passed: bool | None   # None: cannot tell (no cut-off or no number)


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as err:
        raise ValueError(f"{config.CUTOFFS_ENV}: cannot read {path} ({err.strerror}); "
                         "point it to a readable TOML file or unset it") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err}); fix the file or unset {config.CUTOFFS_ENV}") from None


def _fraction(value, where: str, upper: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= upper:
        raise ValueError(f"{where}: expected a number from 0 to {upper:g} (a fraction: 0.055 is 5.5%), got {value!r}")
    return float(value)


def _merge(base: dict, override: dict) -> dict:
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = value
    return merged


def parse_settings(data: dict, source: str = "cut-offs") -> Settings:
    """Settings from the TOML content; ValueError naming the key and the bad value."""
    cutoffs = {}
    for level in LEVELS:
        section = data.get(level, {})
        if not isinstance(section, dict):
            raise ValueError(f"{source}: [{level}] must be a table of cut-offs")
        unknown = set(section) - {key for key, _, _ in TASKS.values()}
        if unknown:
            raise ValueError(f"{source}: [{level}] has unknown keys {sorted(unknown)}; "
                             f"use {[key for key, _, _ in TASKS.values()]}")
        cutoffs[level] = {task: None if key not in section else _fraction(section[key], f"{source}: {level}.{key}")
                          for task, (key, _, _) in TASKS.items()}
    board = data.get("leaderboard", {})
    seed = board.get("seed", 11785)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{source}: leaderboard.seed must be a whole number, got {seed!r}")
    share = _fraction(board.get("public_share", 0.5), f"{source}: leaderboard.public_share")
    return Settings(cutoffs, seed, share)


def load_settings(path: Path | None = None) -> Settings:
    """The shipped defaults, overridden by ``path`` (default: the FACELAB_CUTOFFS file, if set)."""
    data = _read_toml(DEFAULTS_FILE)
    path = config.cutoffs_file() if path is None else path
    if path is not None:
        data = _merge(data, _read_toml(path))
    return parse_settings(data, str(path or DEFAULTS_FILE))


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def verdicts(metrics: dict, settings: Settings) -> list[Verdict]:
    """One verdict per level and task: passed when the validation number is at least the cut-off."""
    found = []
    for level in LEVELS:
        for task, (_, metric, _) in TASKS.items():
            cutoff, value = settings.cutoffs[level][task], _number(metrics.get(metric))
            passed = None if cutoff is None or value is None else value >= cutoff
            found.append(Verdict(level, task, cutoff, value, passed))
    return found


def level_passed(found: list[Verdict], level: str) -> bool | None:
    """True when every task of the level passes, False when one fails, None when one cannot tell."""
    results = [v.passed for v in found if v.level == level]
    if any(result is False for result in results):
        return False
    return None if any(result is None for result in results) else True


MARKS = {True: "✓", False: "✗", None: "–"}


def short_text(found: list[Verdict]) -> str:
    """A table cell: "early ✓ · final –" (✓ passes both tasks, ✗ misses one, – cannot tell)."""
    return " · ".join(f"{level} {MARKS[level_passed(found, level)]}" for level in LEVELS)


def _task_text(verdict: Verdict) -> str:
    _, metric, title = TASKS[verdict.task]
    shown = (lambda v: f"{v:.1%}") if metric == "dev_top1" else (lambda v: f"{v:.3f}")
    if verdict.cutoff is None:
        return f"{title} not set"
    value = "not measured" if verdict.value is None else shown(verdict.value)
    return f"{title} {value} (needs {shown(verdict.cutoff)}) {MARKS[verdict.passed]}"


def long_text(found: list[Verdict]) -> list[str]:
    """One sentence per level, for a page: what passes, what misses and by which number."""
    lines = []
    for level in LEVELS:
        mine = [v for v in found if v.level == level]
        if all(v.cutoff is None for v in mine):
            lines.append(f"{level.capitalize()} cut-off: not set (an instructor sets it in the "
                         f"{config.CUTOFFS_ENV} file).")
            continue
        state = {True: "passes", False: "misses", None: "cannot tell"}[level_passed(found, level)]
        lines.append(f"{level.capitalize()} cut-off {state} on the validation numbers: "
                     + "; ".join(_task_text(v) for v in mine) + ".")
    return lines
