"""The Saliency page: the same face across checkpoints, every method, the pair mode."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

from lib.base import config
from lib.data.datasets import load_pairs
from lib.eval import saliency
from lib.eval.metrics import embed
from lib.store.checkpoint import load_checkpoint
from lib.ui.text import as_plain_markdown
from tests.explore_models import make_mini_dataset, make_runs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("saliency")
    data = make_mini_dataset(base / "mini")
    labels = make_runs(base / "runs")
    patch = pytest.MonkeyPatch()
    patch.setenv("FACELAB_RUNS_DIR", str(base / "runs"))
    patch.setenv("FACELAB_CACHE_DIR", str(base / "cache"))
    yield {"data": data, "labels": labels, "runs": base / "runs"}
    patch.undo()


@pytest.fixture(scope="module")
def app(world):
    page = AppTest.from_file(str(config.PROJECT_ROOT / "views" / "saliency.py"), default_timeout=240)
    page.session_state["facelab.data_root"] = str(world["data"])
    page.run()
    page.multiselect(key="saliency.checkpoints").set_value(world["labels"]).run()
    return page


def _captions(app) -> list[str]:
    return [image.caption for element in app.image for image in element.proto.imgs]


def test_one_face_across_checkpoints_with_every_method(app, world):
    for method in saliency.METHODS:
        app.selectbox(key="saliency.method").set_value(method).run()
        assert not app.exception, method
        assert not app.warning, method
        captions = _captions(app)
        # the face, then one map per checkpoint (captions are markdown: run names shown as text)
        assert captions[1:] == [as_plain_markdown(label) for label in world["labels"]], method
        assert saliency.METHODS[method].explanation in [c.value for c in app.caption]
    explained = [m.value for m in app.markdown if m.value.startswith("explains")]
    assert len(explained) == 2 and "cos = " in explained[1] and "p = " in explained[0]


def test_each_map_says_what_it_predicted_and_flags_a_wrong_prediction(app, world):
    from lib.data.datasets import load_split
    dev = load_split(world["data"], "dev")
    person = app.selectbox(key="saliency.person").value
    index = int((dev.labels == person).nonzero()[0, 0])  # the page starts at the person's first image
    loaded = load_checkpoint(world["runs"] / "r0-ce" / "best")
    mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in (loaded.meta.normalize.mean,
                                                                      loaded.meta.normalize.std))
    with torch.no_grad():
        logits = loaded.model.eval()((dev.images[index:index + 1].float() / 255 - mean) / std)
    predicted, true = loaded.meta.classes[int(logits.argmax())], dev.classes[person]
    verdict = [m.value for m in app.markdown if "predicted **" in m.value][0]  # the CE run's column
    predicted_shown, true_shown = (as_plain_markdown(name.replace("_", " ")) for name in (predicted, true))
    if predicted == true:
        assert verdict == f":green[:material/check_circle: predicted **{predicted_shown}**]"
    else:
        assert verdict == (f":red[:material/cancel: **wrong:** predicted **{predicted_shown}** "
                           f"(true: **{true_shown}**)]")


def test_true_target_names_the_face_and_chosen_names_the_pick(app):
    app.selectbox(key="saliency.method").set_value("saliency")
    app.radio(key="saliency.target").set_value("true").run()
    person = app.selectbox(key="saliency.person")
    name = as_plain_markdown(person.format_func(person.value))  # the page's markdown shows it as text
    assert all(f"explains **{name}**" in m.value for m in app.markdown if m.value.startswith("explains"))
    app.radio(key="saliency.target").set_value("chosen").run()
    app.selectbox(key="saliency.chosen").set_value("Ariel_Sharon").run()
    assert all("explains **Ariel Sharon**" in m.value for m in app.markdown if m.value.startswith("explains"))


def test_pair_mode_shows_the_pairs_cosine(app, world):
    app.radio(key="saliency.mode").set_value("a pair's similarity (verification)").run()
    assert not app.exception
    pairs = load_pairs(world["data"])
    a, b = pairs.pairs[app.selectbox(key="saliency.pair").value].tolist()
    loaded = load_checkpoint(world["runs"] / "r0-ce" / "best")
    normalize = loaded.meta.normalize
    e = embed(loaded.model, pairs.images[[a, b]], normalize.mean, normalize.std)
    expected = F.cosine_similarity(e[:1], e[1:]).item()
    shown = [m.value for m in app.markdown if m.value.startswith("cosine similarity")]
    assert shown[0] == f"cosine similarity **{expected:.3f}**"
    assert _captions(app)[:2] == ["face A", "face B"]
