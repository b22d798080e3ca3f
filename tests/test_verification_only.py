"""Verification-only data sets (ver_data/ + a 4-column val_pairs.txt, no cls_data/, as LFW's View 2
pairs come) found, checked, evaluated from the command line and explored; and honest labels
for a checkpoint scored on a data set it was not trained on."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from streamlit.testing.v1 import AppTest

from lib.base import config
from lib.data.datasets import find_datasets, load_pairs
from lib.data.report import check_dataset
from lib.eval.metrics import embed, kfold_accuracy, pair_scores
from lib.store.checkpoint import load_checkpoint
from lib.ui.text import as_plain_markdown
from tests.explore_models import FOLDS, PAIRS, demo_folders, make_verification_only
from tests.synthetic_data import make_dataset

PAGES = config.PROJECT_ROOT / "views"

needs_demos = pytest.mark.skipif(len(demo_folders()) < 4, reason="the demo checkpoints are not trained yet")


def make_seen_pairs(dest, people: int = 3):
    """A verification-only set whose pairs show ``people`` training identities of LFW-64 (dev images,
    named as LFW names them) among the usual unseen ones."""
    make_verification_only(dest, pairs=8)
    dev = config.EMBEDDED_DATA / "cls_data" / "dev"
    names = sorted(p.name for p in dev.iterdir() if len(list(p.iterdir())) >= 2)[:people]
    extra = []
    for name in names:
        first, second = sorted((dev / name).iterdir())[:2]
        for image in (first, second):
            shutil.copy(image, dest / "ver_data" / image.name)
        extra.append(f"ver_data/{first.name} ver_data/{second.name} 1 1")
    with open(dest / "val_pairs.txt", "a") as handle:
        handle.write("\n".join(extra) + "\n")
    return dest, names


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("veronly")
    data = make_verification_only(base / "roots" / "lfw-view2")
    patch = pytest.MonkeyPatch()
    patch.setenv("FACELAB_RUNS_DIR", str(base / "runs"))
    patch.setenv("FACELAB_CACHE_DIR", str(base / "cache"))
    yield {"data": data, "base": base}
    patch.undo()


def test_found_by_find_datasets_under_a_data_root(world, monkeypatch):
    monkeypatch.setenv(config.DATA_ROOTS_ENV, str(world["data"].parent))
    assert world["data"].resolve() in find_datasets()


def test_the_data_check_says_verification_only_and_counts_the_folds(world):
    report = check_dataset(world["data"])
    assert report.usable, report.fatal
    assert report.verification_only and report.layout == "verification only: no classification splits"
    assert (report.pairs, report.same_pairs, report.different_pairs, report.folds) == (PAIRS, 20, 20, FOLDS)
    assert report.ver_images == len(list((world["data"] / "ver_data").iterdir()))
    assert not report.errors
    done = subprocess.run([sys.executable, "-m", "lib", "data-check", str(world["data"])], capture_output=True,
                          text=True, cwd=config.PROJECT_ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verification only: no classification splits" in done.stdout and "Usable: yes" in done.stdout


@needs_demos
def test_evaluate_from_the_command_line_outside_the_data_roots_uses_the_files_folds(world):
    folder = config.CHECKPOINTS_DIR / "demo-ce"
    env = {**os.environ, config.DATA_ROOTS_ENV: str(world["base"] / "elsewhere")}  # not holding the data set
    done = subprocess.run([sys.executable, "-m", "lib", "evaluate", str(folder), "--data", str(world["data"]),
                           "--json"], capture_output=True, text=True, cwd=config.PROJECT_ROOT, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    # The independent reference: the embeddings of lib.eval.metrics and the k-fold over the file's folds by hand.
    scores, labels = _reference_scores(folder, world["data"])
    folds = np.array([index % FOLDS + 1 for index in range(PAIRS)])
    expected = kfold_accuracy(scores, labels, pair_folds=folds)
    assert expected.size == FOLDS  # not the 10 interleaved folds used without a fold column
    assert out["metrics"]["kfold_mean"] == pytest.approx(expected.mean(), abs=1e-9)
    assert out["metrics"]["kfold_std"] == pytest.approx(expected.std(), abs=1e-9)
    assert out["metrics"]["kfold_folds"] == FOLDS
    # Honest labels: trained on the embedded data, no closed-set numbers, the pairs' people unseen.
    scope = out["scope"]
    assert "dev_top1" not in out["metrics"] and scope["closed_set"] is False
    assert scope["same_data_set"] is False and scope["trained_on"] == "data/lfw64"
    assert any("was trained on data/lfw64, not on this data set" in note for note in scope["notes"])
    assert scope["pair_identities_in_training"] == 0 and scope["open_set"] is True


@needs_demos
def test_pairs_showing_training_identities_are_not_called_never_seen(tmp_path):
    from lib.explore.scope import checkpoint_scope  # what the evaluate command reports as its "scope"
    data, names = make_seen_pairs(tmp_path / "seen")
    scope = checkpoint_scope(config.CHECKPOINTS_DIR / "demo-arcface", data)
    lines = (data / "val_pairs.txt").read_text().split()
    people = {name.split("/")[-1].rsplit("_", 1)[0] for name in lines if name.startswith("ver_data/")}
    assert scope.pair_identities == len(people) and scope.pair_identities_in_training == len(names)
    assert scope.open_set is False
    assert "never seen" not in " ".join(scope.notes())
    assert f"{len(names)} of the {len(people)} people in the pairs were training identities" in scope.pairs_sentence()


def _reference_scores(folder, data) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's cosine by lib.eval.metrics' embeddings, and the pairs' labels."""
    loaded, pairs = load_checkpoint(folder), load_pairs(data)
    normalize = loaded.meta.normalize
    embeddings = embed(loaded.model, pairs.images, normalize.mean, normalize.std)
    return pair_scores(embeddings, pairs.pairs).numpy(), pairs.labels.numpy()


def _page(name: str, world) -> AppTest:
    app = AppTest.from_file(str(PAGES / name), default_timeout=240)
    app.session_state["facelab.data_root"] = str(world["data"])
    app.session_state["embeddings.method"] = "pca"
    app.session_state["embeddings.images"] = "dev"  # left over from a data set that had dev images
    return app


def _texts(elements) -> str:
    return " ".join(str(element.value) for element in elements)


@needs_demos
def test_embeddings_page_offers_only_the_verification_images_and_says_why(world):
    app = _page("embeddings.py", world).run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    images = app.radio(key="embeddings.images")
    assert images.value == "verification" and images.options == ["verification images (open set)"]
    assert "No dev identities: this data set is verification only" in _texts(app.caption)
    table = app.dataframe[0].value
    assert (table.loc[table["metric"] == "dev top-1 (closed set)"].iloc[0, 1:] == "n/a").all()
    assert (table.loc[table["metric"] == "folds of the k-fold accuracy"].iloc[0, 1:] == str(FOLDS)).all()
    assert as_plain_markdown("demo-ce was trained on data/lfw64, not on this data set (lfw-view2)") in _texts(app.info)
    assert as_plain_markdown("(people never seen in training)") in _texts(app.caption)


@needs_demos
def test_saliency_page_explains_pairs_and_says_why_not_class_scores(world):
    app = _page("saliency.py", world).run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    mode = app.radio(key="saliency.mode")
    assert mode.value.startswith("a pair") and mode.disabled
    assert "Class scores cannot be explained here: this data set is verification only" in _texts(app.caption)
    assert any(m.value.startswith("cosine similarity **") for m in app.markdown)


@needs_demos
def test_inspect_page_shows_verification_metrics_and_honest_labels(world):
    app = _page("inspect.py", world).run()
    app.toggle(key="inspect.embed").set_value(True).run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    table = app.dataframe[-1].value  # the metrics, after the facts and the stages
    scores, labels = _reference_scores(config.CHECKPOINTS_DIR / "demo-ce", world["data"])
    assert float(table.loc[table["metric"] == "ROC AUC", "demo-ce"].iloc[0]) == pytest.approx(
        roc_auc_score(labels, scores), abs=1e-4)
    assert table.loc[table["metric"] == "dev top-1 (closed set)"].iloc[0, 1] == "n/a"
    assert as_plain_markdown("not on this data set (lfw-view2)") in _texts(app.info)
    assert as_plain_markdown("people never seen in training by demo-ce") in _texts(app.caption)
    assert "No class-score saliency: this data set is verification only" in _texts(app.caption)


@needs_demos
def test_no_closed_set_numbers_where_the_identities_are_not_the_checkpoints_classes(tmp_path):
    from lib.explore.scope import checkpoint_scope
    make_dataset(tmp_path / "other", train={"Ann": 2, "Bob": 2}, dev={"Ann": 1, "Bob": 1}, size=64)
    scope = checkpoint_scope(config.CHECKPOINTS_DIR / "demo-ce", tmp_path / "other")
    assert not scope.closed_set and not scope.same_data_set
    assert "only 0 of the 2 identities of this data set are classes of the checkpoint" in scope.closed_set_reason
    # Its own data set: closed set, and LFW-64's verification people are disjoint from its classes.
    own = checkpoint_scope(config.CHECKPOINTS_DIR / "demo-ce", config.EMBEDDED_DATA)
    assert own.closed_set and own.same_data_set and own.open_set and own.data_notes() == []
