"""The Embeddings page as a student meets it, on two small real checkpoints: the threshold after
changing the checkpoints, the confidence rows of the metrics table, the nearest neighbours of a
face; and the figures of the Runs page for runs of a single epoch."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_curve
from streamlit.testing.v1 import AppTest

from lib.base import config
from lib.data.datasets import load_pairs
from lib.eval.metrics import embed, equal_error_rate, pair_scores
from lib.store.checkpoint import load_checkpoint
from lib.ui.text import as_plain_markdown
from tests.explore_models import make_mini_dataset, make_runs

PAGES = config.PROJECT_ROOT / "views"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("explore_fixes")
    data = make_mini_dataset(base / "mini")
    labels = make_runs(base / "runs")
    patch = pytest.MonkeyPatch()
    patch.setenv("FACELAB_RUNS_DIR", str(base / "runs"))
    patch.setenv("FACELAB_CACHE_DIR", str(base / "cache"))
    yield {"data": data, "labels": labels, "runs": base / "runs",
           "folders": dict(zip(labels, (base / "runs" / "r0-ce" / "best", base / "runs" / "r1-arcface" / "best")))}
    patch.undo()


@pytest.fixture(scope="module")
def page(world):
    app = AppTest.from_file(str(PAGES / "embeddings.py"), default_timeout=240)
    app.session_state["facelab.data_root"] = str(world["data"])
    app.session_state["embeddings.method"] = "pca"  # UMAP's one-time compile costs a minute of CPU
    app.session_state["embeddings.checkpoints"] = world["labels"][:1]  # not the demos: only these are embedded
    return app.run()


def _reference_scores(folder, data):
    """Pair cosines computed apart from the page: the checkpoint, the pairs file, lib.eval."""
    loaded = load_checkpoint(folder)
    pairs = load_pairs(data)
    embeddings = embed(loaded.model, pairs.images, loaded.meta.normalize.mean, loaded.meta.normalize.std)
    return pair_scores(embeddings, pairs.pairs).numpy(), pairs.labels.numpy()


def _histogram_threshold(app) -> float:
    figures = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    figure = next(f for f in figures if f["data"] and f["data"][0].get("type") == "histogram")
    return figure["layout"]["shapes"][0]["x0"]


def test_threshold_follows_the_checkpoints_shown(page, world):
    """Changing the checkpoints moves the slider to the new first checkpoint's EER threshold, and
    TAR, FAR and the histograms' line use the value the slider shows."""
    app = page
    first, second = world["labels"]
    app.multiselect(key="embeddings.checkpoints").set_value([first]).run()
    app.slider(key="embeddings.threshold").set_value(0.9).run()
    app.multiselect(key="embeddings.checkpoints").set_value([second]).run()
    assert not app.exception
    scores, labels = _reference_scores(world["folders"][second], world["data"])
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    expected = round(min(1.0, max(-1.0, equal_error_rate(fpr, tpr, thresholds)[1])), 2)
    slider = app.slider(key="embeddings.threshold")
    assert slider.value == pytest.approx(expected)
    metrics = {m.label: m.value for m in app.metric}
    name = as_plain_markdown(second)
    assert metrics[f"{name}: TAR"] == f"{np.mean(scores[labels == 1] >= slider.value):.1%}"
    assert metrics[f"{name}: FAR"] == f"{np.mean(scores[labels == 0] >= slider.value):.1%}"
    assert _histogram_threshold(app) == pytest.approx(slider.value)
    app.slider(key="embeddings.threshold").set_value(0.5).run()  # the user's own value then stays
    assert app.slider(key="embeddings.threshold").value == pytest.approx(0.5)
    assert _histogram_threshold(app) == pytest.approx(0.5)


def _hand_sphereface_zone(lam: float, m: int = 4, separation_deg: float = 90.0) -> float:
    """The margin zone between two classes, solved by hand from SphereFace's target logit
    (lambda cos t + psi(t)) / (1 + lambda), psi(t) = (-1)^k cos(m t) - 2k on [k pi/m, (k+1) pi/m]:
    class 1 wins while its blended logit beats class 2's plain cos(separation - t)."""
    from scipy.optimize import brentq

    sep = np.radians(separation_deg)

    def psi(t):
        k = min(int(m * t / np.pi), m - 1)
        return (-1) ** k * np.cos(m * t) - 2 * k

    def gap(t):
        return (lam * np.cos(t) + psi(t)) / (1 + lam) - np.cos(sep - t)

    boundary = brentq(gap, 0.0, sep / 2)  # class 1 wins below it; the zone is symmetric around the bisector
    return float(np.degrees(sep - 2 * boundary))


@pytest.mark.parametrize("lam, about", [(0.0, 54.0), (5.0, 21.0), (31.0, 4.3), (1000.0, 0.1)])
def test_sphereface_zone_at_each_lambda_matches_the_formula(lam, about):
    from lib.explore import margins as geo
    expected = _hand_sphereface_zone(lam)
    assert expected == pytest.approx(about, abs=0.6)  # the numbers the page's captions quote
    drawn = geo.two_class_regions("sphereface", 30.0, 4, 90, sphere_lambda=lam)["zone_deg"]
    assert drawn == pytest.approx(expected, abs=0.5)  # a 0.25 degree grid


def test_sphereface_curve_is_the_loss_heads_own_logit():
    """The page's curve at lambda equals what SphereFaceHead puts on the target class while training
    at the step where its schedule gives that lambda."""
    import torch

    from lib.explore import margins as geo
    from lib.losses.margins import SphereFaceHead
    head = SphereFaceHead(2, 1, s=30.0, m=4)  # the registry's default schedule
    head.step.fill_(geo.SHORT_RUN_STEPS)
    lam = head.current_lambda()
    assert lam == pytest.approx(geo.lambda_at([geo.SHORT_RUN_STEPS])[0]) == pytest.approx(1000 / (1 + 0.12 * 258))
    theta = np.radians([10.0, 40.0, 100.0])
    head.weight.data = torch.tensor([[1.0, 0.0]])  # the class weight at angle 0
    features = torch.tensor(np.stack([np.cos(theta), np.sin(theta)], axis=1), dtype=torch.float32)
    logits, _ = head.eval().margin_logits(features, torch.zeros(3, dtype=torch.long))
    np.testing.assert_allclose(logits[:, 0].detach().double().numpy(), geo.sphereface_target(theta, 30.0, 4, lam), atol=1e-3)
    assert geo.steps_to_lambda_min() == 1659  # 1000 / (1 + 0.12 t) <= 5 from t = 1658.3


def _one_epoch_run(folder, loss="ce", lr_end=0.0, **config):
    from lib.store.run_folder import RunFolder
    run = RunFolder(folder)
    folder.mkdir(parents=True)
    run.write_config({"name": folder.name, "loss": loss, "data_root": "/data/lfw64", **config})
    run.append_metrics({"epoch": 1, "step": 43, "train_loss": 5.2, "train_acc": 0.02, "dev_top1": 0.03,
                        "dev_top5": 0.09, "auc": 0.71, "eer": 0.34, "lr": lr_end})
    return run


def test_single_epoch_charts_keep_shares_inside_zero_to_one(tmp_path):
    """A one-epoch run: dots with whole-epoch room around them, AUC and accuracy axes inside [0, 1]
    (plotly alone pads one point to 0.21..1.21 and -0.47..0.53), the learning rate from 0 up."""
    from lib.ui.run_plots import overlay, run_curves
    rows = _one_epoch_run(tmp_path / "one").read_metrics()
    for key, value in (("auc", 0.71), ("dev_top1", 0.03), ("eer", 0.34)):
        figure = overlay({"one": rows}, key)
        low, high = figure.layout.yaxis.range
        assert 0 <= low < value < high <= 1
        assert "markers" in figure.data[0].mode and figure.data[0].marker.size >= 8
        assert tuple(figure.layout.xaxis.range) == (0.5, 1.5)
    low, high = overlay({"one": rows}, "lr").layout.yaxis.range
    assert low == 0 and high > 0  # lr 0 at the end of a cosine schedule: not in the middle of -1..1
    curves = run_curves(rows)
    ranges = [curves.layout[f"yaxis{'' if i == 1 else i}"].range for i in range(1, 5)]
    accuracy, verification = ranges[1], ranges[2]
    assert 0 <= accuracy[0] and accuracy[1] <= 1 and 0 <= verification[0] and verification[1] <= 1
    assert verification[0] < 0.34 and 0.71 < verification[1]


def test_compare_table_names_each_runs_data_set(tmp_path):
    from lib.ui.runs import compare_rows
    _one_epoch_run(tmp_path / "full")
    _one_epoch_run(tmp_path / "quick", data_root="/data/hw2p2", subset={"classes": 20})
    rows = compare_rows([("full", tmp_path / "full"), ("quick", tmp_path / "quick")])
    assert [row["data set"] for row in rows] == ["lfw64", "hw2p2 (20 classes)"]
    assert list(rows[0])[:3] == ["run", "data set", "loss"]


def test_sphereface_runs_get_their_lambda_curve_from_the_schedule(tmp_path):
    from lib.ui.run_plots import lambda_figure, sphereface_schedule
    run = _one_epoch_run(tmp_path / "sphere", loss="sphereface", loss_params={"lambda_base": 100.0})
    schedule = sphereface_schedule(run.train_config())
    assert schedule == {"lambda_base": 100.0, "lambda_gamma": 0.12, "lambda_power": 1.0, "lambda_min": 5.0}
    figure = lambda_figure(run.read_metrics(), schedule, total_steps=86)
    line, ends = figure.data
    assert line.y[0] == pytest.approx(100.0) and line.x[-1] == 86
    assert ends.x == (43,) and ends.y[0] == pytest.approx(100 / (1 + 0.12 * 43))
    assert sphereface_schedule({"loss": "arcface"}) is None


def _table_cell(app, metric: str, label: str) -> str:
    table = app.dataframe[0].value
    return table.loc[table["metric"] == metric, label].iloc[0]


def test_metrics_table_gives_intervals_and_hides_tprs_the_pairs_cannot_resolve(page, world):
    from sklearn.metrics import roc_auc_score
    app = page
    app.multiselect(key="embeddings.checkpoints").set_value(world["labels"]).run()
    assert not app.exception
    for label in world["labels"]:
        scores, labels = _reference_scores(world["folders"][label], world["data"])
        assert _table_cell(app, "pairs (same / different)", label) == "20 / 20"
        low, high = (float(v) for v in _table_cell(app, "ROC AUC, 95% interval (bootstrap)", label).split(" – "))
        assert low <= roc_auc_score(labels, scores) <= high and high - low > 0.05  # 40 pairs: a wide interval
        # 20 impostor pairs allow 2 false accepts at FPR 0.1: too few to read any of the targets.
        assert _table_cell(app, "TPR @ FPR = 1e-1", label) == "needs ≥ 50 impostors"
        assert _table_cell(app, "TPR @ FPR = 1e-3", label) == "needs ≥ 5k impostors"
    assert any("FPR × impostor pairs ≥ 5" in caption.value for caption in app.caption)


def test_nearest_faces_of_a_chosen_face_match_sklearn(page, world):
    from sklearn.neighbors import NearestNeighbors

    from lib.explore.models import image_choice
    app = page
    label = world["labels"][1]
    app.selectbox(key="embeddings.nn_model").set_value(label)
    app.selectbox(key="embeddings.nn_person").select_index(2)
    app.selectbox(key="embeddings.nn_photo").set_value(1)
    app.slider(key="embeddings.nn_k").set_value(5).run()
    assert not app.exception
    shown = next(element.proto.imgs for element in app.image if element.proto.imgs[0].caption.startswith("chosen:"))
    images = image_choice(str(world["data"]), "dev")
    person = app.selectbox(key="embeddings.nn_person").value
    query = int(np.flatnonzero(images.labels == person)[1])
    loaded = load_checkpoint(world["folders"][label])
    embeddings = embed(loaded.model, images.images, loaded.meta.normalize.mean, loaded.meta.normalize.std).numpy()
    distances, indices = NearestNeighbors(n_neighbors=6, metric="cosine").fit(embeddings).kneighbors(
        embeddings[query:query + 1])
    expected = [(1 - d, images.labels[i] == person) for d, i in zip(distances[0], indices[0]) if i != query][:5]
    assert len(shown) == 6
    for image, (cosine, same) in zip(shown[1:], expected):
        value, who = image.caption.split(" · ")
        assert float(value) == pytest.approx(cosine, abs=0.011)
        assert (who == "same person") == same
    sentence = " ".join(m.value for m in app.markdown)
    assert f"{sum(same for _, same in expected)} of the 5 nearest faces are the same person" in sentence


def test_margins_page_draws_sphereface_at_the_lambda_chosen():
    app = AppTest.from_file(str(PAGES / "margins.py"), default_timeout=120)
    app.session_state["margins.toy_losses"] = ["ce"]  # the toy is not what this checks: one quick loss
    app.run()
    assert not app.exception

    def sphereface_zone() -> float:
        zones = [m for m in app.metric if m.label == "Margin zone between the classes"]
        return float(zones[1].value.split()[0])  # softmax, SphereFace, CosFace, ArcFace

    control = app.select_slider(key="margins.sphere_lambda")
    assert control.value == 5.0  # where the default schedule ends: what a trained model met
    assert sphereface_zone() == pytest.approx(_hand_sphereface_zone(5.0), abs=0.5)
    assert "31.3 after 258 steps" in " ".join(c.value for c in app.caption)
    control.set_value(0.0).run()
    assert sphereface_zone() == pytest.approx(_hand_sphereface_zone(0.0), abs=0.5)  # the paper's 54 degrees


def test_inspect_shows_the_intervals_and_the_rule(world):
    app = AppTest.from_file(str(PAGES / "inspect.py"), default_timeout=240)
    app.session_state["facelab.data_root"] = str(world["data"])
    app.run()
    label = world["labels"][0]
    app.selectbox(key="inspect.which").set_value(label).run()
    app.toggle(key="inspect.embed").set_value(True).run()
    assert not app.exception
    table = app.dataframe[-1].value  # the metrics table, under the embeddings
    cell = dict(zip(table["metric"], table[label]))
    assert cell["pairs (same / different)"] == "20 / 20" and cell["TPR @ FPR = 1e-2"] == "needs ≥ 500 impostors"
    assert " – " in cell["ROC AUC, 95% interval (bootstrap)"] and " – " in cell["EER, 95% interval (bootstrap)"]
    assert any("FPR × impostor pairs ≥ 5" in caption.value for caption in app.caption)


def test_evaluate_json_reports_intervals_and_unresolved_targets(world, capsys):
    from sklearn.metrics import roc_auc_score

    from lib.__main__ import main
    folder = world["folders"][world["labels"][0]]
    assert main(["evaluate", str(folder), "--data", str(world["data"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    metrics = report["metrics"]
    scores, labels = _reference_scores(folder, world["data"])
    assert metrics["auc_ci_low"] <= roc_auc_score(labels, scores) <= metrics["auc_ci_high"]
    assert metrics["eer_ci_low"] <= metrics["eer"] <= metrics["eer_ci_high"]
    assert (metrics["genuine_pairs"], metrics["impostor_pairs"]) == (20, 20)
    assert report["resolution"]["tpr_needs_impostor_pairs"] == {
        "tpr_at_fpr_1e-1": 50, "tpr_at_fpr_1e-2": 500, "tpr_at_fpr_1e-3": 5000}
