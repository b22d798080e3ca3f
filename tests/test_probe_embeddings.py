"""Embeddings over time: the probe faces a run embeds after every epoch are the checkpoint's own
embeddings of those images, chosen by name alone, and the Embeddings page animates them."""
from __future__ import annotations

import json
from pathlib import PurePosixPath

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from streamlit.testing.v1 import AppTest

from lib.base import config
from lib.data.datasets import load_split
from lib.eval.metrics import embed
from lib.explore.over_time import cosine_gaps, epoch_table, probe_history, shared_pca
from lib.store.checkpoint import load_checkpoint
from lib.store.run_folder import RunFolder
from lib.train.engine import train
from lib.train.probes import PROBE_IMAGES
from tests.job_cases import small_dataset
from tests.train_cases import tiny_config

PAGES = config.PROJECT_ROOT / "views"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 2-epoch run on a small data set of 6 identities with 3 dev images each, in a runs folder."""
    base = tmp_path_factory.mktemp("probes")
    patch = pytest.MonkeyPatch()
    patch.setenv(config.DATA_ROOTS_ENV, str(base / "sets"))  # where a student's own data sets may lie
    data = small_dataset(base / "sets" / "faces", identities=6, train_per=8, dev_per=3, pairs=24)
    run = RunFolder(base / "runs" / "20261204-probe-run")
    assert train(tiny_config(name="probe-run", data_root=str(data), subset={}), run.folder)["status"] == "done"
    yield {"data": data, "run": run, "runs": base / "runs"}
    patch.undo()


def test_probes_are_the_first_identities_and_images_by_name(world):
    index = world["run"].read_probe_index()
    people = sorted(p.name for p in (world["data"] / "cls_data" / "dev").iterdir())
    expected = [f"cls_data/dev/{person}/{image.name}" for person in people
                for image in sorted((world["data"] / "cls_data" / "dev" / person).iterdir())[:PROBE_IMAGES]]
    assert [PurePosixPath(p).as_posix() for p in index["paths"]] == expected
    assert index["identities"] == [PurePosixPath(p).parent.name for p in expected]


def test_probe_embeddings_of_the_last_epoch_are_the_checkpoints(world):
    run = world["run"]
    saved = run.read_probe_embeddings()
    assert sorted(saved) == [1, 2] and saved[1].shape == (18, 32)
    assert not np.allclose(saved[1], saved[2])  # training moved them
    loaded = load_checkpoint(run.last)
    assert loaded.meta.epoch == 2
    dev = load_split(world["data"], "dev")
    index = [dev.paths.index(path) for path in run.read_probe_index()["paths"]]
    reference = embed(loaded.model, dev.images[torch.tensor(index)], loaded.meta.normalize.mean,
                      loaded.meta.normalize.std).numpy()
    assert np.allclose(saved[2], reference, atol=1e-5)


def test_pca_is_fitted_once_on_every_epoch_and_cosines_are_per_pair(world):
    history = probe_history(world["run"].folder)
    coords = shared_pca(history)
    flat = history.embeddings.reshape(-1, history.embeddings.shape[-1])
    reference = PCA(n_components=2, random_state=0).fit_transform(flat).reshape(coords.shape)
    assert np.allclose(np.abs(coords), np.abs(reference), atol=1e-5)  # the same axes for both epochs
    # By hand: identities a, a, b with unit vectors.
    vectors = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    assert cosine_gaps(vectors, ["a", "a", "b"]) == pytest.approx((0.6, (0.0 + 0.8) / 2))


def test_embeddings_page_shows_the_probes_epoch_by_epoch(world, monkeypatch):
    monkeypatch.setenv(config.RUNS_DIR_ENV, str(world["runs"]))
    monkeypatch.setenv("FACELAB_CACHE_DIR", str(world["runs"].parent / "cache"))
    app = AppTest.from_file(str(PAGES / "embeddings.py"), default_timeout=240)
    app.session_state["facelab.data_root"] = str(world["data"])
    app.session_state["embeddings.method"] = "pca"
    app.run()
    app.multiselect(key="embeddings.checkpoints").set_value(["probe-run"]).run()
    assert not app.exception
    assert "Embeddings over time" in [header.value for header in app.header]
    [chart] = [c for c in app.get("plotly_chart") if c.key == "embeddings.over_time"]
    figure = json.loads(chart.proto.spec)
    assert [frame["name"] for frame in figure["frames"]] == ["1", "2"]
    assert [step["label"] for step in figure["layout"]["sliders"][0]["steps"]] == ["1", "2"]
    assert any(button["label"].endswith("Play") for button in figure["layout"]["updatemenus"][0]["buttons"])
    assert len(figure["frames"][0]["data"]) == 6  # one trace (color) per identity
    [table] = [frame.value for frame in app.dataframe if "same identity" in frame.value.columns]
    history = probe_history(world["run"].folder)
    expected = epoch_table(history)
    assert list(table["epoch"]) == [1, 2]
    assert table["same identity"].tolist() == pytest.approx([row["same identity"] for row in expected])
    assert table["different identities"].tolist() == pytest.approx([row["different identities"] for row in expected])
    assert any("watch each color gather" in caption.value for caption in app.caption)
