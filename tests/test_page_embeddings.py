"""The Embeddings and Inspect pages on real checkpoints and a small real data set,
checked against numbers computed independently (lib.eval.metrics + sklearn)."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from streamlit.testing.v1 import AppTest

from lib.base import config
from lib.data.datasets import load_pairs
from lib.eval.metrics import embed, pair_scores
from lib.model.net import count_params
from lib.store.checkpoint import load_checkpoint
from lib.ui.text import as_plain_markdown
from tests.explore_models import make_mini_dataset, make_runs

PAGES = config.PROJECT_ROOT / "views"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("explore")
    data = make_mini_dataset(base / "mini")
    labels = make_runs(base / "runs")
    patch = pytest.MonkeyPatch()
    patch.setenv("FACELAB_RUNS_DIR", str(base / "runs"))
    patch.setenv("FACELAB_CACHE_DIR", str(base / "cache"))
    yield {"data": data, "labels": labels, "runs": base / "runs"}
    patch.undo()


def _app(page: str, world) -> AppTest:
    app = AppTest.from_file(str(PAGES / page), default_timeout=240)
    app.session_state["facelab.data_root"] = str(world["data"])
    # PCA: UMAP's one-time compile costs a minute of CPU (bench/explore_speed.py times it).
    app.session_state["embeddings.method"] = "pca"
    return app


def _reference_scores(folder, data):
    loaded = load_checkpoint(folder)
    pairs = load_pairs(data)
    normalize = loaded.meta.normalize
    embeddings = embed(loaded.model, pairs.images, normalize.mean, normalize.std)
    return pair_scores(embeddings, pairs.pairs).numpy(), pairs.labels.numpy()


@pytest.fixture(scope="module")
def embeddings_app(world):
    app = _app("embeddings.py", world).run()
    app.multiselect(key="embeddings.checkpoints").set_value(world["labels"]).run()
    return app


def test_metrics_table_matches_sklearn(embeddings_app, world):
    app = embeddings_app
    assert not app.exception
    table = app.dataframe[0].value
    assert list(table.columns) == ["metric", *world["labels"]]
    for label, folder in zip(world["labels"], ("r0-ce", "r1-arcface")):
        scores, labels = _reference_scores(world["runs"] / folder / "best", world["data"])
        auc = float(table.loc[table["metric"] == "ROC AUC", label].iloc[0])
        assert auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-4)


def test_threshold_shows_tar_and_far_live(embeddings_app, world):
    app = embeddings_app
    app.slider(key="embeddings.threshold").set_value(0.9).run()
    scores, labels = _reference_scores(world["runs"] / "r0-ce" / "best", world["data"])
    metrics = {m.label: m.value for m in app.metric}
    label = as_plain_markdown(world["labels"][0])  # metric labels are markdown: the run name as text
    assert metrics[f"{label}: TAR"] == f"{np.mean(scores[labels == 1] >= 0.9):.1%}"
    assert metrics[f"{label}: FAR"] == f"{np.mean(scores[labels == 0] >= 0.9):.1%}"
    shown = " ".join(m.value for m in app.markdown)
    assert "False accepts" in shown and "False rejects" in shown


def test_open_set_view_highlight_and_sphere(embeddings_app):
    app = embeddings_app
    app.radio(key="embeddings.images").set_value("verification").run()
    app.selectbox(key="embeddings.highlight").select_index(1).run()
    assert not app.exception
    app.radio(key="embeddings.view").set_value("3-D on the sphere").run()
    assert not app.exception
    assert "unit sphere" in " ".join(c.value for c in app.caption)
    labels = [e.label for e in app.expander]
    assert "Closed set vs open set" in labels and "Separable is not discriminative" in labels


def test_no_checkpoint_chosen_says_so(embeddings_app):
    app = embeddings_app
    app.multiselect(key="embeddings.checkpoints").set_value([]).run()
    assert "Pick one to four checkpoints" in app.error[0].value


def test_default_selection_is_the_demos_or_the_runs(world):
    from lib.explore.models import demo_checkpoints
    app = _app("embeddings.py", world)
    app.session_state["facelab.data_root"] = str(world["data"])
    app.run()
    expected = [name for name, _ in demo_checkpoints()] or world["labels"]
    assert app.multiselect(key="embeddings.checkpoints").value == expected


def test_run_labels_are_short_and_unique(world, tmp_path):
    from lib.explore.models import short_labels
    from tests.explore_models import _register_jobs
    runs = tmp_path / "runs"
    ids = ["20261122-101500-face-mobilenet-ce-9fd0", "20261122-111500-face-mobilenet-ce-1a2b", "plain-folder"]
    for job_id in ids[:2]:
        (runs / job_id / "best").mkdir(parents=True)
        (runs / job_id / "config.json").write_text('{"name": "face_mobilenet-ce"}')
    (runs / ids[2] / "best").mkdir(parents=True)
    _register_jobs(runs, [(job_id, "face_mobilenet-ce") for job_id in ids[:2]], user="bob")
    found = [("demo-ce", config.CHECKPOINTS_DIR / "demo-ce")] + [(f"run {i}", runs / i / "best") for i in ids]
    assert list(short_labels(found, runs)) == ["demo-ce", "face_mobilenet-ce (bob)",
                                               "face_mobilenet-ce (bob) 1a2b", "plain-folder"]
    assert list(short_labels(found, runs).values())[1] == str(runs / ids[0] / "best")


def test_identities_in_color_stop_at_the_identities_shown(embeddings_app, world):
    app = embeddings_app
    app.multiselect(key="embeddings.checkpoints").set_value(world["labels"][:1])
    app.radio(key="embeddings.images").set_value("dev").run()
    assert not app.exception
    assert app.slider(key="embeddings.colored").max == 8  # the mini data set holds 8 dev identities


def test_inspector_starts_from_cross_entropy(world):
    from lib.explore.models import demo_checkpoints
    app = _app("inspect.py", world).run()
    expected = "demo-ce" if "demo-ce" in dict(demo_checkpoints()) else world["labels"][0]
    assert app.selectbox(key="inspect.which").value == expected


def test_inspector_shows_spec_counts_curves_and_embeddings(world):
    app = _app("inspect.py", world).run()
    app.selectbox(key="inspect.which").set_value(world["labels"][1]).run()
    assert not app.exception
    loaded = load_checkpoint(world["runs"] / "r1-arcface" / "best")
    facts = dict(zip(app.dataframe[0].value[""], app.dataframe[0].value["value"]))
    assert facts["parameters"] == f"{count_params(loaded.spec):,}" and facts["loss"] == "arcface"
    assert facts["best epoch"] == "3"
    assert {m.label: m.value for m in app.metric}["dev top-1"] == "2.0%"
    assert len(app.get("plotly_chart")) == 1  # the training curves from metrics.jsonl
    app.toggle(key="inspect.embed").set_value(True).run()
    assert not app.exception
    table = app.dataframe[-1].value
    scores, labels = _reference_scores(world["runs"] / "r1-arcface" / "best", world["data"])
    auc = float(table.loc[table["metric"] == "ROC AUC", world["labels"][1]].iloc[0])
    assert auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-4)
    captions = [image.caption for image in app.image[0].proto.imgs]
    assert captions[1].startswith("explains ") and "cos = " in captions[1]  # ArcFace: cosine, not softmax


def test_inspector_upload_zip_and_bad_upload(world):
    run = world["runs"] / "r0-ce"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in run.rglob("*"):
            if path.is_file():
                archive.write(path, f"r0-ce/{path.relative_to(run)}")
    app = _app("inspect.py", world).run()
    app.radio(key="inspect.source").set_value("upload one").run()
    app.file_uploader(key="inspect.upload").set_value(("r0-ce.zip", buffer.getvalue(), "application/zip")).run()
    assert not app.exception and not app.error
    facts = dict(zip(app.dataframe[0].value[""], app.dataframe[0].value["value"]))
    assert facts["loss"] == "ce"
    assert len(app.get("plotly_chart")) == 1  # curves read from the zipped metrics.jsonl
    pickle_bytes = io.BytesIO()
    torch.save({"w": torch.zeros(1)}, pickle_bytes)
    app.file_uploader(key="inspect.upload").set_value(
        [("model.safetensors", pickle_bytes.getvalue(), "application/octet-stream"),
         ("meta.json", (run / "best/meta.json").read_bytes(), "application/json")]).run()
    assert not app.exception
    assert "pickled PyTorch file" in app.error[0].value


def test_a_large_image_set_is_projected_from_a_fixed_sample(world, monkeypatch):
    from lib.explore.models import demo_checkpoints
    monkeypatch.setenv("FACELAB_PROJECTED_FACES", "30")
    app = _app("embeddings.py", world)
    app.session_state["embeddings.images"] = "verification"
    app.run()
    assert not app.exception
    total = len(load_pairs(world["data"]).paths)
    slider = app.select_slider(key="embeddings.sample")
    assert slider.value == 30 and slider.options[-1] == f"{total:,}"
    plotted = [trace for chart in app.get("plotly_chart") for trace in chart.proto.spec.split('"customdata"')[1:]]
    assert plotted  # the scatter panels were drawn from the sample
    caption = " ".join(c.value for c in app.caption)
    assert f"Projected: 30 of {total:,} faces, a fixed sample of whole identities" in caption
    # A set larger than the projection sample starts from one checkpoint: each one embeds every face.
    expected = [name for name, _ in demo_checkpoints()][:1] or world["labels"][:1]
    assert app.multiselect(key="embeddings.checkpoints").value == expected
    assert not app.error


def test_a_sample_keeps_its_order_and_its_faces():
    from lib.explore.models import ImageChoice

    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 3, 2, 2).contiguous()
    choice = ImageChoice("verification", images, np.arange(100) % 7, [f"p{i}" for i in range(7)],
                         [f"ver_data/p{i % 7}_{i:04d}.jpg" for i in range(100)])
    part, index = choice.sample(30)
    assert len(index) == 30 == len(set(index.tolist())) and list(index) == sorted(index)
    assert torch.equal(part.images[:, 0, 0, 0], torch.as_tensor(index, dtype=torch.uint8))
    assert list(part.labels) == list(index % 7) and part.paths == [choice.paths[i] for i in index]
    assert choice.sample(30)[1].tolist() == index.tolist() and choice.sample(500)[0] is choice
