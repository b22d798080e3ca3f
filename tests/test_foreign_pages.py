"""A student's own model on the pages: uploaded on Inspect as the student saved it, counted and
scored there, then offered by the Embeddings and Saliency pages beside the demo checkpoints."""
from __future__ import annotations

import io
import pickle

import pytest
import torch
from streamlit.testing.v1 import AppTest

from lib.base import config
from lib.eval import saliency
from lib.explore import foreign
from lib.store.foreign_open import open_model_bytes
from tests.explore_models import make_mini_dataset
from tests.foreign_cases import random_torchvision

LABEL = "upload: student.pth"


def notebook_checkpoint(model: torch.nn.Module) -> bytes:
    """The course notebook's way: a dict with the weights under model_state_dict, saved by DataParallel."""
    buffer = io.BytesIO()
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                "optimizer_state_dict": {}, "epoch": 12}, buffer)
    return buffer.getvalue()


class Trap:
    def __reduce__(self):
        return (exec, ("open('/tmp/facelab-trap-ran', 'w').write('ran')",))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("foreign-pages")
    data = make_mini_dataset(base / "mini")
    model = random_torchvision("resnet18", 8)
    patch = pytest.MonkeyPatch()
    patch.setenv("FACELAB_RUNS_DIR", str(base / "runs"))
    patch.setenv("FACELAB_CACHE_DIR", str(base / "cache"))
    patch.setenv("FACELAB_DATA_ROOTS", str(base))  # the sidebar offers the mini data set
    yield {"data": data, "model": model, "file": notebook_checkpoint(model)}
    patch.undo()


@pytest.fixture(scope="module")
def app(world):
    page = AppTest.from_file(str(config.PROJECT_ROOT / "app.py"), default_timeout=240)
    page.session_state["facelab.data_root"] = str(world["data"])
    page.run()
    page.switch_page("views/inspect.py").run()
    page.radio(key="inspect.source").set_value("upload one").run()
    page.file_uploader(key="inspect.upload").set_value([("student.pth", world["file"], "application/octet-stream")])
    page.run()
    return page


def test_the_upload_is_recognised_and_counted_like_torchvision(app, world):
    assert not app.exception and not app.error
    text = " ".join(m.value for m in app.markdown)
    assert text.startswith("torchvision resnet18 \\(ResNet\\) with 8 classes")
    blocks = app.dataframe[0].value
    assert list(blocks["block"])[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert int(blocks["parameters"].sum()) == sum(p.numel() for p in world["model"].parameters())
    assert "31.9% of the 35,000,000 budget (within it)" in text
    notes = " ".join(c.value for c in app.caption)
    assert "model\\_state\\_dict" in notes and "DataParallel" in notes


def test_its_embeddings_and_metrics_on_the_data_set(app):
    app.toggle(key="inspect.embed").set_value(True).run()
    assert not app.exception and not app.error
    tables = [frame.value for frame in app.dataframe]
    assert any(LABEL in " ".join(map(str, table.columns)) for table in tables)


def test_the_other_explore_pages_offer_it(app, world):
    app.switch_page("views/embeddings.py").run()
    assert not app.exception
    assert LABEL in app.multiselect(key="embeddings.checkpoints").options
    app.multiselect(key="embeddings.checkpoints").set_value(["demo-ce", LABEL]).run()
    assert not app.exception and not app.error
    app.switch_page("views/saliency.py").run()
    app.multiselect(key="saliency.checkpoints").set_value([LABEL]).run()
    assert not app.exception and not app.error


def test_gradcam_looks_at_the_models_own_blocks(world):
    opened = open_model_bytes("student.pth", world["file"], input_size=64)
    names = [label.split(":")[0] for label, _ in saliency.stage_choices(opened.net, 64)]
    assert names[-4:] == ["layer1", "layer2", "layer3", "layer4"]
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    result = saliency.explain_class(opened.net, image, (0.5,) * 3, (0.5,) * 3, "gradcam", 3)
    assert result.maps.shape == (1, 64, 64) and result.maps.any()


def test_a_trapped_pickle_is_refused_on_the_page_and_never_runs(world, tmp_path):
    trap = pickle.dumps({"model_state_dict": Trap()})
    page = AppTest.from_file(str(config.PROJECT_ROOT / "views" / "inspect.py"), default_timeout=120)
    page.session_state["facelab.data_root"] = str(world["data"])
    page.run()
    page.radio(key="inspect.source").set_value("upload one").run()
    page.file_uploader(key="inspect.upload").set_value([("trap.pth", trap, "application/octet-stream")]).run()
    assert not page.exception
    assert page.error and page.error[0].value.startswith("This model cannot be opened")
    import os
    assert not os.path.exists("/tmp/facelab-trap-ran")


def test_the_registry_is_bounded(world):
    opened = open_model_bytes("student.pth", world["file"], input_size=64)
    keys = [foreign.remember_upload(foreign.explore_foreign(opened, f"m{i}", (0.5,) * 3, (i / 100,) * 3 + (), 64))
            for i in range(1, foreign.MAX_UPLOADS + 2)]
    with pytest.raises(ValueError, match="upload it again"):
        foreign.recall_upload(keys[0])
    assert foreign.recall_upload(keys[-1]).label == f"m{foreign.MAX_UPLOADS + 1}"


def test_the_same_weights_as_pth_and_as_onnx_score_the_same(world, tmp_path):
    from lib.eval.foreign_eval import evaluate_foreign
    from lib.eval.metrics import pair_scores
    from lib.store.foreign_open import open_model_file

    onnx_path = tmp_path / "student.onnx"
    torch.onnx.export(world["model"], (torch.randn(1, 3, 64, 64),), onnx_path, dynamo=False, external_data=False,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    as_pth = open_model_bytes("student.pth", world["file"], input_size=64)
    as_onnx = open_model_file(onnx_path, input_size=64)
    reports = [evaluate_foreign(opened.net, world["data"]) for opened in (as_pth, as_onnx)]
    for key in ("auc", "eer", "dev_top1"):
        assert reports[0].metrics[key] == pytest.approx(reports[1].metrics[key], abs=1e-6), key
    from lib.data.datasets import load_pairs
    pairs = load_pairs(world["data"])
    images = (pairs.images.float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        scores = [pair_scores(opened.net.embed(images), pairs.pairs) for opened in (as_pth, as_onnx)]
    torch.testing.assert_close(scores[0], scores[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("field,value,expected", [
    ("inspect.foreign.layer", "nope", "has no layer named"),
    ("inspect.foreign.args", "{bad", "constructor arguments are not JSON"),
])
def test_a_bad_choice_for_an_upload_gets_a_message(world, field, value, expected):
    page = AppTest.from_file(str(config.PROJECT_ROOT / "views" / "inspect.py"), default_timeout=120)
    page.session_state["facelab.data_root"] = str(world["data"])
    page.run()
    page.radio(key="inspect.source").set_value("upload one").run()
    page.file_uploader(key="inspect.upload").set_value([("student.pth", world["file"], "application/octet-stream")])
    page.run()
    if field.endswith("args"):
        page.text_input(key="inspect.foreign.code").set_value("student_model.py:Network")
    page.text_input(key=field).set_value(value).run()
    assert not page.exception
    assert expected in page.error[0].value.replace("\\", "")
