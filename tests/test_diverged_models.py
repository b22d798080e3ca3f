"""Models that diverged (NaN/inf weights) or whose embeddings collapsed (every face alike): the
collapse measure, the clear error wherever such a checkpoint is opened (loader, upload, the
evaluate command, the Explore pages), and the Embeddings page's warning for a collapsed one."""
from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from lib.__main__ import main
from lib.base import config
from lib.eval.metrics import COLLAPSE_SPREAD, cosine_spread, is_collapsed, pair_scores
from lib.explore.metrics import collapse_warnings
from lib.model.net import FaceNet
from lib.store.checkpoint import LOSS_FILE, MODEL_FILE, load_checkpoint, save_checkpoint
from lib.store.upload import checkpoint_from_files
from lib.train.step import collapse_warning
from tests.explore_models import _calibrated, _like_trained, _register_jobs, make_mini_dataset, make_runs, small_spec
from tests.test_checkpoint import TINY, _trained_like

PAGES = config.PROJECT_ROOT / "views"
NORMALIZE = {"mean": [0.5, 0.42, 0.38], "std": [0.27, 0.24, 0.24]}


def _pairs(count: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, count, size=(400, 2))


# ----------------------------------------------------------------------------- the collapse measure

def test_the_spread_of_pair_cosines_tells_collapsed_embeddings_from_healthy_ones():
    rng = np.random.default_rng(0)
    pairs = _pairs(200, rng)
    direction = rng.normal(size=32)
    collapsed = direction + 1e-4 * rng.normal(size=(200, 32))  # one direction, float noise around it
    zero = np.zeros((200, 32))  # a dead network: normalized, every cosine is 0
    trained_like = rng.normal(size=(200, 32))  # directions all over the sphere
    untrained_like = direction + 0.25 * np.linalg.norm(direction) * rng.normal(size=(200, 32)) / np.sqrt(32)
    spreads = {name: cosine_spread(pair_scores(values, pairs)) for name, values in
               {"collapsed": collapsed, "zero": zero, "trained": trained_like, "untrained": untrained_like}.items()}
    assert spreads["collapsed"] < 1e-6 and spreads["zero"] == 0.0
    assert spreads["trained"] == pytest.approx(1 / np.sqrt(32), rel=0.2)
    assert 0.01 < spreads["untrained"] < 0.05  # as a randomly initialised network: not learned, not collapsed
    assert [name for name, spread in spreads.items() if is_collapsed(spread)] == ["collapsed", "zero"]


def test_the_spread_leaves_out_non_finite_scores_and_needs_two():
    assert cosine_spread([0.5, float("nan"), 0.5, float("inf")]) == 0.0
    assert np.isnan(cosine_spread([0.5, float("nan")])) and not is_collapsed(float("nan"))


def test_collapse_warnings_name_the_epoch_or_the_checkpoint():
    assert collapse_warning({"epoch": 4, "cosine_spread": 0.3}) == ""
    assert collapse_warning({"epoch": 4}) == ""  # a record from before the measure existed
    message = collapse_warning({"epoch": 4, "cosine_spread": COLLAPSE_SPREAD / 10})
    assert message.startswith("epoch 4: the embeddings collapsed") and "learning rate" in message
    rows = {"good_run": {"cosine_spread": 0.3}, "flat_run": {"cosine_spread": 1e-7}, "old": {}}
    warnings = collapse_warnings(rows, shown=str.upper)
    assert len(warnings) == 1 and warnings[0].startswith("FLAT_RUN: the embeddings collapsed")


# ----------------------------------------------------------------------------- NaN checkpoints

def _nan_checkpoint(folder, tensor: str = "stages.1.0.bn2.running_var", loss: bool = False):
    """A checkpoint written by save_checkpoint whose ``tensor`` (or loss weight) holds a NaN."""
    model = _trained_like()
    head = torch.nn.Linear(12, 5)
    with torch.no_grad():
        target = head.weight if loss else model.state_dict()[tensor]
        target.view(-1)[1] = float("nan")
    return save_checkpoint(folder, model, {"classes": list("abcde"), "config": {"data_root": "data/lfw64"}},
                           loss_module=head)


def test_loading_a_checkpoint_with_nan_weights_names_it_and_the_tensor(tmp_path):
    folder = _nan_checkpoint(tmp_path / "nan")
    with pytest.raises(ValueError) as refused:
        load_checkpoint(folder)
    message = str(refused.value)
    assert message.startswith(f"{folder}: {MODEL_FILE} holds weights that are not finite numbers")
    assert "'stages.1.0.bn2.running_var' holds 1 NaN of its 16 values" in message
    assert "lower learning rate" in message
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path))}.*{LOSS_FILE} .*'weight' holds 1 NaN"):
        load_checkpoint(_nan_checkpoint(tmp_path / "nan-loss", loss=True))
    assert load_checkpoint(save_checkpoint(tmp_path / "fine", _trained_like(), {})).spec == TINY


def test_an_upload_with_nan_weights_is_refused_naming_the_tensor(tmp_path):
    folder = _nan_checkpoint(tmp_path / "nan", tensor="classifier.bias")
    files = {name: (folder / name).read_bytes() for name in (MODEL_FILE, "meta.json")}
    with pytest.raises(ValueError, match=rf"^{MODEL_FILE} holds weights .*'classifier.bias' holds 1 NaN"):
        checkpoint_from_files(files)


def test_the_evaluate_command_reports_nan_weights_and_exits_2(tmp_path, capsys):
    folder = _nan_checkpoint(tmp_path / "nan")
    assert main(["evaluate", str(folder)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {folder}: {MODEL_FILE} holds weights that are not finite numbers")
    assert "'stages.1.0.bn2.running_var'" in captured.err and "Traceback" not in captured.err
    assert main(["evaluate", str(folder), "--json"]) == 2 and not capsys.readouterr().out


# ----------------------------------------------------------------------------- the Explore pages

def _save_run(runs_dir, run_id: str, name: str, model: FaceNet) -> None:
    classes = [f"person_{i}" for i in range(model.spec.num_classes)]
    save_checkpoint(runs_dir / run_id / "best", model, {"classes": classes, "loss": "ce", "epoch": 2,
                                                        "normalize": NORMALIZE})
    (runs_dir / run_id / "config.json").write_text(json.dumps({"name": name}))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("diverged")
    data = make_mini_dataset(base / "mini")
    runs = base / "runs"
    make_runs(runs)
    torch.manual_seed(5)
    diverged = _like_trained(FaceNet(small_spec())).eval()
    with torch.no_grad():
        diverged.stages[0][0].bn1.running_var[2] = float("inf")
    _save_run(runs, "r2-diverged", "mini-diverged", diverged)
    flat = _calibrated(_like_trained(FaceNet(small_spec())).eval(), (NORMALIZE["mean"], NORMALIZE["std"]))
    with torch.no_grad():  # a zero scale in the embedding's norm: every face gets its shift as embedding
        flat.embedding[1].weight.zero_()
        flat.embedding[1].bias.fill_(1.0)
    _save_run(runs, "r3-flat", "mini-flat", flat)
    _register_jobs(runs, [("r2-diverged", "mini-diverged"), ("r3-flat", "mini-flat")])
    patch = pytest.MonkeyPatch()
    patch.setenv("FACELAB_RUNS_DIR", str(runs))
    patch.setenv("FACELAB_CACHE_DIR", str(base / "cache"))
    yield {"data": data, "runs": runs, "diverged": "mini-diverged (alice)", "flat": "mini-flat (alice)",
           "good": "mini-ce (alice)"}
    patch.undo()


def _app(page: str, world) -> AppTest:
    app = AppTest.from_file(str(PAGES / page), default_timeout=240)
    app.session_state["facelab.data_root"] = str(world["data"])
    app.session_state["embeddings.method"] = "pca"
    return app


def _plain(markdown: str) -> str:
    """Page text as read: markdown escapes and HTML entities undone."""
    return html.unescape(re.sub(r"\\(.)", r"\1", markdown))


def _shows_the_divergence(app) -> bool:
    shown = " ".join(_plain(element.value) for element in app.error)
    return ("holds weights that are not finite numbers ('stages.0.0.bn1.running_var' holds 1 inf of its 8 values)"
            in shown and "r2-diverged" in shown)


def test_inspect_shows_a_diverged_checkpoint_as_an_error_not_a_traceback(world):
    app = _app("inspect.py", world).run()
    app.selectbox(key="inspect.which").set_value(world["diverged"]).run()
    assert not app.exception
    assert _shows_the_divergence(app) and "cannot be opened" in app.error[0].value
    folder = world["runs"] / "r2-diverged" / "best"
    app.radio(key="inspect.source").set_value("upload one").run()
    app.file_uploader(key="inspect.upload").set_value(
        [(name, (folder / name).read_bytes(), "application/octet-stream") for name in (MODEL_FILE, "meta.json")]).run()
    assert not app.exception
    assert "This upload cannot be used" in app.error[0].value and "running_var" in _plain(app.error[0].value)


def test_embeddings_and_saliency_show_a_diverged_checkpoint_as_an_error(world):
    embeddings = _app("embeddings.py", world).run()
    embeddings.multiselect(key="embeddings.checkpoints").set_value([world["good"], world["diverged"]]).run()
    assert not embeddings.exception and _shows_the_divergence(embeddings)
    saliency = _app("saliency.py", world).run()
    saliency.multiselect(key="saliency.checkpoints").set_value([world["diverged"]]).run()
    assert not saliency.exception and _shows_the_divergence(saliency)


def test_embeddings_warns_about_a_checkpoint_whose_embeddings_collapsed(world):
    app = _app("embeddings.py", world).run()
    app.multiselect(key="embeddings.checkpoints").set_value([world["good"], world["flat"]]).run()
    assert not app.exception and not app.error
    warnings = [_plain(element.value) for element in app.warning]
    assert len(warnings) == 1 and warnings[0].startswith(f"{world['flat']}: the embeddings collapsed")
