"""The class leaderboard: the public/private split, the ranking, and the hidden labels that no
page, data set path, upload or download ever hands out.

Three users (ada, bob, cy) each have a finished run with a real best checkpoint; the hidden
labels sit outside every data root, with a marker line that must never reach a browser."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import streamlit.testing.v1.app_test as app_test_module
from sklearn.metrics import roc_auc_score
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from lib.base import config
from lib.data.datasets import find_datasets, load_pairs, resolve_dataset
from lib.eval.cutoffs import load_settings
from lib.eval.leaderboard import Entry, board_score, public_mask, rank_users
from lib.eval.submission import read_verification
from lib.explore import leaderboard as board
from lib.explore.models import open_model
from lib.explore.submission import submission_csv
from lib.store.upload import load_upload
from lib.ui import leaderboard as board_ui
from tests.explore_models import _register_jobs, make_mini_dataset
from tests.test_submission import add_test_files, make_checkpoint
from views.common import DATA_ROOT_KEY, USER_KEY

APP = str(config.PROJECT_ROOT / "app.py")
LABELS_MARKER = "HIDDEN-LABELS-MARKER-7f3a"
INSTRUCTOR = "Prof Raj"
USERS = ("ada", "bob", "cy")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    base = tmp_path_factory.mktemp("course")
    root = make_mini_dataset(base / "sets" / "mini", identities=4, pairs=30)
    lines, labels = add_test_files(root)
    secret = base / "secret" / "test_labels.csv"
    secret.parent.mkdir()
    secret.write_text(f"# {LABELS_MARKER}\nID,Label\n" + "".join(f"{i},{label}\n" for i, label in enumerate(labels)))
    runs = base / "runs"
    classes = sorted(p.name for p in (root / "cls_data" / "train").iterdir())
    for seed, user in enumerate(USERS):
        make_checkpoint(runs / f"r{seed}-{user}" / "best", classes, seed=seed)
        (runs / f"r{seed}-{user}" / "metrics.jsonl").write_text('{"epoch": 1, "dev_top1": 0.06, "auc": 0.74}\n')
        (runs / f"r{seed}-{user}" / "config.json").write_text(json.dumps({"name": f"run-of-{user}"}))
        _register_jobs(runs, [(f"r{seed}-{user}", f"run-of-{user}")], user=user)
    env = {config.RUNS_DIR_ENV: str(runs), config.DATA_ROOTS_ENV: str(base / "sets"),
           config.TEST_LABELS_ENV: str(secret), config.LEADERBOARD_DATA_ENV: str(root),
           config.INSTRUCTORS_ENV: INSTRUCTOR, "FACELAB_CACHE_DIR": str(base / "cache")}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        yield {"root": root, "lines": lines, "labels": np.array(labels), "secret": secret, "runs": runs,
               "cache": base / "cache"}


def expected_board(course) -> dict[str, tuple[float, float]]:
    """user -> (public AUC, private AUC) from each checkpoint's submission file and sklearn."""
    settings = load_settings()
    public = public_mask(course["lines"], settings.seed, settings.public_share)
    labels, found = course["labels"], {}
    for seed, user in enumerate(USERS):
        scores = read_verification(submission_csv(open_model(course["runs"] / f"r{seed}-{user}" / "best"),
                                                  course["root"]))
        found[user] = (roc_auc_score(labels[public], scores[public]), roc_auc_score(labels[~public], scores[~public]))
    return found


# ----------------------------------------------------------------------------- the split and the ranking

SPLIT_SCRIPT = ("import json, sys; from lib.eval.leaderboard import public_mask; "
                "print(json.dumps(public_mask(json.load(sys.stdin), 11785, 0.5).tolist()))")


def test_public_split_is_the_same_in_another_process():
    lines = [f"ver_data/p{k}_0001.jpg ver_data/p{k}_0002.jpg" for k in range(200)]
    here = public_mask(lines, 11785, 0.5)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # Python's own string hash differs: the split must not
    there = subprocess.run([sys.executable, "-c", SPLIT_SCRIPT], input=json.dumps(lines), capture_output=True,
                           text=True, cwd=config.PROJECT_ROOT, env=env, check=True).stdout
    assert json.loads(there) == here.tolist()
    assert 70 < here.sum() < 130  # about half public
    assert public_mask([line + "  1" for line in lines], 11785, 0.5).tolist() == here.tolist()  # labels ignored
    assert public_mask(lines, 11786, 0.5).tolist() != here.tolist()


def test_ranking_of_three_users_matches_sklearn():
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 0])
    public = np.array([True, True, True, True, True, False, False, False, False, False])
    scores = {"ada": [0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.5, 0.45],
              "bob": [0.9, 0.95, 0.8, 0.2, 0.7, 0.9, 0.6, 0.1, 0.5, 0.2],
              "cy": [0.2, 0.9, 0.8, 0.3, 0.1, 0.3, 0.9, 0.4, 0.8, 0.1],
              "cy-older": [0.1, 0.9, 0.2, 0.8, 0.3, 0.3, 0.9, 0.4, 0.8, 0.1]}
    entries = []
    for name, values in scores.items():
        values = np.array(values)
        score = board_score(values, labels, public)
        assert score.public_auc == pytest.approx(roc_auc_score(labels[public], values[public]))
        assert score.private_auc == pytest.approx(roc_auc_score(labels[~public], values[~public]))
        entries.append(Entry(name.split("-")[0], name, score.public_auc, score.private_auc))
    # By hand, counting (same, different) pairs ranked right out of 3 x 2: public ada 6/6; bob 3/6 (his
    # 0.95 different pair beats every same one); cy 1/6; cy's older run 0/6. Private: ada 6/6, bob 4/6, cy 6/6.
    ranked = rank_users(entries)
    assert [(s.rank, s.user, s.run) for s in ranked] == [(1, "ada", "ada"), (2, "bob", "bob"), (3, "cy", "cy")]
    assert [s.public_auc for s in ranked] == pytest.approx([1.0, 3 / 6, 1 / 6])
    assert [s.private_auc for s in ranked] == pytest.approx([1.0, 4 / 6, 1.0])
    _, private_ranks = board_ui.standings(entries)
    assert private_ranks == {"ada": 1, "cy": 1, "bob": 3}  # the private part reorders the same runs
    tied = rank_users([Entry("a", "x", 0.9, None), Entry("b", "y", 0.9, None), Entry("c", "z", 0.5, None)])
    assert [s.rank for s in tied] == [1, 1, 3]  # equal scores share a rank, as on Kaggle


def test_runs_are_scored_on_both_parts_and_cached(course):
    settings = load_settings()
    data = board.board_entries(course["runs"], board.load_test_set(settings))
    assert not data.skipped
    expected = expected_board(course)
    found = {e.user: (e.public_auc, e.private_auc) for e in data.entries}
    assert set(found) == set(USERS)
    for user in USERS:
        assert found[user] == pytest.approx(expected[user])
    cached = list((course["cache"] / "leaderboard").glob("*.npy"))
    assert len(cached) == len(USERS)  # one file of scores per checkpoint's weights


# ----------------------------------------------------------------------------- the hidden labels stay hidden

@pytest.mark.parametrize("place", ["data set", "embedded data", "runs folder", "link in a data set",
                                   "link to a data set"])
def test_labels_file_inside_a_data_root_is_refused(course, monkeypatch, tmp_path, place):
    inside = {"data set": course["root"] / "test_labels.csv", "runs folder": course["runs"] / "labels.csv",
              "embedded data": config.EMBEDDED_DATA / "test_labels.csv",
              "link in a data set": course["root"] / "labels-link.csv", "link to a data set": tmp_path / "link.csv"}[place]
    if place == "link in a data set":  # the name lies inside, the file outside
        inside.symlink_to(course["secret"])
    if place == "link to a data set":  # the name lies outside, the file inside
        (course["root"] / "copied.csv").write_text("ID,Label\n")
        inside.symlink_to(course["root"] / "copied.csv")
    monkeypatch.setenv(config.TEST_LABELS_ENV, str(inside))
    with pytest.raises(ValueError, match="where FaceLab's pages can reach it; refused"):
        board.load_test_set(load_settings())
    for leftover in ("labels-link.csv", "copied.csv"):
        (course["root"] / leftover).unlink(missing_ok=True)


def test_labels_are_not_reachable_as_a_data_set(course):
    secret = course["secret"]
    assert secret.parent not in find_datasets()
    with pytest.raises(ValueError, match="not inside a configured data root"):
        resolve_dataset(secret.parent)
    relative = os.path.relpath(secret, course["root"])
    with pytest.raises(ValueError, match="outside the data set folder"):
        load_pairs(course["root"], relative)


def test_an_upload_cannot_name_the_labels_file(course):
    for files in ([(str(course["secret"]), b"ID,Label\n")],
                  [("meta.json", json.dumps({"data_root": str(course["secret"])}).encode()),
                   ("model.safetensors", b"not weights")]):
        with pytest.raises(ValueError) as refused:
            load_upload(files)
        assert LABELS_MARKER not in str(refused.value) and "0,1" not in str(refused.value)


class RecordingStorage(MemoryMediaFileStorage):
    """The media storage of AppTest's runtime, keeping every file a page hands to the browser."""
    served: list[bytes] = []

    def load_and_get_id(self, path_or_data, mimetype, kind, filename=None):
        RecordingStorage.served.append(path_or_data if isinstance(path_or_data, bytes) else b"")
        return super().load_and_get_id(path_or_data, mimetype, kind, filename)


@pytest.fixture
def served(monkeypatch):
    RecordingStorage.served = []
    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", RecordingStorage)
    return RecordingStorage.served


def assert_labels_not_served(served: list[bytes], course) -> None:
    """No file a page handed out holds the labels file's marker or its table of labels."""
    table = course["secret"].read_bytes().split(b"\n", 1)[1]  # "ID,Label\n0,1\n..." without the marker line
    assert all(LABELS_MARKER.encode() not in data and table not in data for data in served)


def open_page(page: str, name: str, data_root=None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=120)
    app.run()
    if data_root is not None:
        app.session_state[DATA_ROOT_KEY] = str(data_root)
    app.text_input(key=USER_KEY).set_value(name).run()
    app.switch_page(page).run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def page_text(app: AppTest) -> str:
    parts = [str(element.value) for kind in ("markdown", "caption", "info", "error", "title")
             for element in app.get(kind)]
    parts += [frame.value.to_csv() for frame in app.dataframe]
    return "\n".join(parts)


def test_student_sees_public_scores_and_their_rank_only(course, served):
    app = open_page("views/leaderboard.py", "bob")
    table = app.dataframe[0].value
    assert list(table.columns) == ["rank", "user", "you", "best run", "public AUC"]
    expected = expected_board(course)
    order = sorted(USERS, key=lambda user: -expected[user][0])
    assert table["user"].tolist() == order
    assert table["public AUC"].tolist() == pytest.approx([round(expected[u][0], 4) for u in order])
    assert table.loc[table["user"] == "bob", "you"].item() == "◀"
    bob_rank = 1 + sum(expected[user][0] > expected["bob"][0] for user in USERS)  # ties share a rank
    assert table.loc[table["user"] == "bob", "rank"].item() == bob_rank
    assert f"You are **#{bob_rank}** of 3" in page_text(app)
    assert LABELS_MARKER not in page_text(app) and "private" not in " ".join(table.columns)
    assert not app.get("download_button")
    assert_labels_not_served(served, course)


def test_instructor_sees_the_private_column(course, served):
    app = open_page("views/leaderboard.py", INSTRUCTOR)
    table = app.dataframe[0].value.set_index("user")
    expected = expected_board(course)
    assert {"private AUC", "private rank"} <= set(table.columns)
    for user in USERS:
        assert table.loc[user, "private AUC"] == pytest.approx(round(expected[user][1], 4))
    assert LABELS_MARKER not in page_text(app)
    assert_labels_not_served(served, course)


@pytest.mark.parametrize("page, choose, key", [
    ("views/inspect.py", ("inspect.which", "run-of-ada (ada)"), "inspect"),
    ("views/runs.py", ("runs.selected", "r0-ada"), "runs"),
])
def test_download_buttons_serve_the_submission_never_the_labels(course, served, page, choose, key):
    app = open_page(page, "ada", data_root=course["root"])
    app.selectbox(key=choose[0]).set_value(choose[1]).run()
    app.button(key=f"{key}.make.verification").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert [d.label for d in app.get("download_button")] == ["Download verification CSV"]
    expected = submission_csv(open_model(course["runs"] / "r0-ada" / "best"), course["root"]).encode()
    assert expected in served  # the file the command line writes, byte for byte
    assert_labels_not_served(served, course)


def test_a_data_set_without_test_pairs_offers_no_download(course, served):
    app = open_page("views/inspect.py", "ada")  # the embedded LFW-64 has no test_pairs.txt
    assert any("has no test\\_pairs\\.txt" in info.value for info in app.info)
    assert not [b for b in app.button if b.key.startswith("inspect.make")]
    assert not [data for data in served if data.startswith(b"ID,Label")]
