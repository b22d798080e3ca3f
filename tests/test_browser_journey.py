"""A newcomer's first visit, in a real browser: home, Build, Augment, Train, Runs,
Embeddings, Saliency, Margins and Inspect, with a screenshot of every page
(test-artifacts/screenshots/) and no exception or error box anywhere.

The student brings a small data set of their own (a few identities in the HW2P2
layout, found through FACELAB_DATA_ROOTS), so the quick CPU recipe trains on it in
seconds; everything else is the real app, the real queue and a real job.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time

from lib.base import config
from lib.jobs import queue as jobs
from lib.model.net import count_params
from lib.model.presets import PRESETS
from tests.browser_support import (
    add_choice,
    choose,
    chromium,
    click,
    fill_text,
    metric_value,
    multiselect_values,
    open_page,
    problems,
    require_chromium,
    running_app,
    screenshot,
    set_number,
    wait_idle,
)
from tests.explore_models import make_verification_only
from tests.job_cases import small_dataset

JOB_TIMEOUT = 240


def look(page, name: str) -> None:
    """Screenshot the page, then fail if it shows an exception or an error."""
    screenshot(page, name)
    found = problems(page)
    assert found == [], f"{name}: {found}"


STUDENT_IDENTITIES = 6


def preview_sources(page) -> list[str]:
    return page.locator('[data-testid="stImage"] img').evaluate_all("images => images.map(i => i.src)")


def build_a_model(page) -> None:
    """A preset, then one stage deeper: the counts follow, as counted independently."""
    open_page(page, "Build")
    choose(page, "Start from", "face_mobilenet (64x64 faces)")
    click(page, "Load")
    # Classes follow the data set picked in the sidebar: the student's 6 identities.
    preset = dataclasses.replace(PRESETS["face_mobilenet"], num_classes=STUDENT_IDENTITIES)
    assert metric_value(page, "Parameters") == f"{count_params(preset):,}"
    first = preset.stages[0]
    set_number(page, "Depth", first.depth + 1)
    deeper = dataclasses.replace(preset, stages=(dataclasses.replace(first, depth=first.depth + 1), *preset.stages[1:]))
    assert metric_value(page, "Parameters") == f"{count_params(deeper):,}"
    click(page, "Use this model for training")
    look(page, "02-build")


def change_the_augmentation(page) -> None:
    """Drop a transform: the preview grid changes."""
    open_page(page, "Augment")
    before = preview_sources(page)
    page.get_by_role("button", name="Remove RandomHorizontalFlip").click()
    wait_idle(page)
    assert preview_sources(page) != before
    click(page, "Use this pipeline for training")
    look(page, "03-augment")


def launch_training(page) -> None:
    """The quick CPU recipe, made quicker, on the student's own data."""
    open_page(page, "Train")
    set_number(page, "Epochs", 2)
    set_number(page, "Batch size", 16)
    # 48 images of the student's 6 identities, 16 a batch: what the page must work out.
    plan = page.locator('[data-testid="stAlertContentInfo"]').filter(has_text="steps per epoch").inner_text()
    assert "3 steps per epoch" in plan and "6 in all" in plan, plan
    look(page, "04-train")
    click(page, "Launch")
    assert page.get_by_text("Launched").count() >= 1
    look(page, "05-train-launched")


def watch_the_run(page) -> None:
    """The job runs and finishes while the Runs page refreshes itself."""
    open_page(page, "Runs")
    look(page, "06-runs-running")
    status = page.locator('[data-testid="stProgress"]').first
    deadline = time.monotonic() + JOB_TIMEOUT
    while "done" not in status.inner_text() and time.monotonic() < deadline:
        assert "failed" not in status.inner_text(), status.inner_text()
        time.sleep(1.0)
    assert "done" in status.inner_text()
    wait_idle(page)
    look(page, "07-runs-done")


def explore(page) -> None:
    """The new run beside the demo checkpoints the project ships, then the other Explore pages."""
    open_page(page, "Embeddings")
    picker = "Checkpoints (1 to 4)"
    chosen = multiselect_values(page, picker)
    if not any("face_mobilenet" in value for value in chosen):
        if len(chosen) == 4:  # all four demos shown: make room for the new run
            page.get_by_role("button", name=f"Remove {chosen[-1]}").click()
            wait_idle(page, timeout=180)
        add_choice(page, picker, "face_mobilenet")
    chosen = multiselect_values(page, picker)
    demos = sorted(meta.parent.name for meta in config.CHECKPOINTS_DIR.glob("*/meta.json"))
    assert any("face_mobilenet" in value for value in chosen), chosen
    assert not demos or any(not value.startswith("run ") for value in chosen), chosen
    wait_idle(page, timeout=180)
    look(page, "08-embeddings")
    for number, title in enumerate(("Saliency", "Margins", "Inspect"), start=9):
        open_page(page, title)
        look(page, f"{number:02d}-{title.lower()}")


def explore_pairs_only(page) -> None:
    """A verification-only data set (LFW View 2's shape: ver_data + a pairs file with a fold
    column): each Explore page opens on it, says what it cannot show, and shows no error."""
    choose(page, "Data set", "lfw-pairs")
    for number, title in enumerate(("Embeddings", "Saliency", "Inspect"), start=12):
        open_page(page, title)
        wait_idle(page, timeout=180)
        look(page, f"{number:02d}-pairs-only-{title.lower()}")


@contextlib.contextmanager
def screenshot_on_failure(page):
    try:
        yield
    except BaseException:
        screenshot(page, "failure")
        raise


def test_a_newcomers_journey(tmp_path):
    require_chromium()
    data_root = small_dataset(tmp_path / "data" / "my-faces", identities=STUDENT_IDENTITIES, train_per=8)
    make_verification_only(tmp_path / "data" / "lfw-pairs")
    env = {"FACELAB_DATA_ROOTS": str(data_root.parent), jobs.MAX_JOBS_ENV: "1"}
    with running_app(tmp_path / "runs", env=env) as server, chromium() as page, screenshot_on_failure(page):
        page.goto(server.url)
        wait_idle(page, timeout=180)
        look(page, "01-home")
        fill_text(page, "Your name", "ada")
        choose(page, "Data set", "my-faces")
        build_a_model(page)
        change_the_augmentation(page)
        launch_training(page)
        watch_the_run(page)
        explore(page)
        explore_pairs_only(page)
