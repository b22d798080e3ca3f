"""Activation memory and MACs limits for a shared host: a model whose forward pass would exhaust it
is refused wherever one could start (opening, uploading, evaluating, training, the Inspect page),
with a message naming the layer and the numbers; every shipped model passes; the meta-device
measure of any module agrees with the analytic profile; embedding batches shrink to fit."""
from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from lib.__main__ import main
from lib.base import config
from lib.explore.inspection import from_upload
from lib.explore.models import demo_checkpoints, open_model, raw_embeddings
from lib.jobs.queue import JobQueue
from lib.model.limits import (
    EXPLORE_MIN_BATCH,
    ResourceRefused,
    batch_size_within,
    check_explorable,
    check_training,
    module_usage,
    spec_usage,
)
from lib.model.net import FaceNet, count_params
from lib.model.presets import PRESETS
from lib.model.profile import profile
from lib.model.spec import HeadSpec, ModelSpec, StageSpec, StemSpec
from lib.store.checkpoint import MODEL_FILE, save_checkpoint
from lib.store.meta import META_FILE
from lib.store.upload import MAX_FILE_BYTES, UploadedCheckpoint, load_upload
from lib.train.config import TrainConfig, load_run_file
from tests.explore_models import face_images, small_spec

ROOT = Path(__file__).resolve().parent.parent
LIMIT_ENV = config.MAX_BATCH_ACTIVATION_BYTES_ENV
MACS_ENV = config.MAX_MACS_PER_IMAGE_ENV
NORMALIZE = {"mean": [0.5, 0.42, 0.38], "std": [0.27, 0.24, 0.24]}
# One 3x3 conv from RGB to 4,096 channels at full resolution, then the classifier: ~400k parameters,
# a 1.6 MB checkpoint, but each 64x64 image makes conv, BatchNorm and ReLU write 4096x64x64 floats.
WIDE_STEM = ModelSpec(name="wide_stem", stem=StemSpec(out_chs=4096, kernel_size=3, stride=1), num_classes=68)
STEM_MIB = 4096 * 64 * 64 * 4 / 2**20  # 64 MiB: one of the three layers, one image


@pytest.fixture(autouse=True)
def default_limits(monkeypatch):
    """The shipped defaults, whatever the shell running the tests sets."""
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    monkeypatch.delenv(MACS_ENV, raising=False)


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wide") / "best"
    classes = [f"person_{i}" for i in range(WIDE_STEM.num_classes)]
    return save_checkpoint(folder, FaceNet(WIDE_STEM), {"classes": classes, "loss": "ce", "normalize": NORMALIZE})


def _plain(markdown: str) -> str:
    """Page text as read: markdown escapes and HTML entities undone."""
    return html.unescape(re.sub(r"\\(.)", r"\1", markdown))


def _names_the_stem_and_numbers(message: str, batch: int = 64) -> bool:
    per_image = 3 * STEM_MIB  # conv, BatchNorm, ReLU (the classifier's 68 values round away)
    needed = f"{batch} images of 64x64 need {per_image * batch / 1024:.3g} GiB ({per_image:.3g} MiB per image)"
    return (needed in message
            and f"layer stem.0 (conv, output 4096x64x64): {STEM_MIB:.3g} MiB per image" in message
            and "over the limit of 8 GiB" in message and "fewer channels" in message
            and "stride of 2 in the stem" in message and LIMIT_ENV in message)


# ----------------------------------------------------------------------------- the wide stem is refused

def test_the_wide_stem_passes_every_parameter_check(wide_checkpoint):
    assert 390_000 < count_params(WIDE_STEM) < 400_000
    assert (wide_checkpoint / MODEL_FILE).stat().st_size < min(2 * 2**20, MAX_FILE_BYTES)


def test_opening_the_wide_stem_checkpoint_is_refused_naming_the_stem(wide_checkpoint):
    with pytest.raises(ResourceRefused) as refused:
        open_model(wide_checkpoint)
    assert _names_the_stem_and_numbers(str(refused.value))
    assert "Explore embeds at least 64 faces at a time" in str(refused.value)


def test_uploading_the_wide_stem_checkpoint_is_refused(wide_checkpoint):
    files = [(name, (wide_checkpoint / name).read_bytes()) for name in (MODEL_FILE, META_FILE)]
    with pytest.raises(ResourceRefused) as refused:
        load_upload(files)
    assert _names_the_stem_and_numbers(str(refused.value))
    made_elsewhere = UploadedCheckpoint(FaceNet(WIDE_STEM), WIDE_STEM, None, {}, "0" * 32)
    with pytest.raises(ResourceRefused):
        from_upload(made_elsewhere, "upload")


def test_the_evaluate_command_refuses_the_wide_stem(wide_checkpoint, capsys):
    assert main(["evaluate", str(wide_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: too much activation memory") and _names_the_stem_and_numbers(err)


def test_training_the_wide_stem_is_refused_before_a_job_is_queued(tmp_path):
    with pytest.raises(ResourceRefused) as refused:
        TrainConfig(model=WIDE_STEM.to_dict()).validate()  # the default batch of 64
    message = str(refused.value)
    assert _names_the_stem_and_numbers(message) and "for a training batch" in message
    assert "a smaller batch_size" in message
    queue = JobQueue(tmp_path / "runs")
    with pytest.raises(ResourceRefused):
        queue.submit({"name": "wide", "model": WIDE_STEM.to_dict(), "config": {}}, "alice")
    assert queue.list_jobs() == []
    # A smaller batch is one of the fixes the message gives: 16 x 192 MiB = 3 GiB fits.
    assert TrainConfig(model=WIDE_STEM.to_dict(), batch_size=16).validate().batch_size == 16


def test_the_train_command_exits_2_with_the_message_and_no_traceback(tmp_path):
    run_file = tmp_path / "wide.json"
    run_file.write_text(json.dumps({"name": "wide", "model": WIDE_STEM.to_dict(), "config": {"epochs": 1}}))
    done = subprocess.run([sys.executable, "-m", "lib", "train", str(run_file), "--out", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**_clean_env(), "FACELAB_RUNS_DIR": str(tmp_path / "runs")})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: too much activation memory") and _names_the_stem_and_numbers(done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "out" / "best").exists()


def _clean_env() -> dict:
    return {key: value for key, value in os.environ.items() if key not in (LIMIT_ENV, MACS_ENV)}


def test_the_macs_limit_names_the_layer_that_computes_most(monkeypatch):
    spec = PRESETS["face_resnet"]
    assert check_training(spec, 64).macs == profile(spec).macs
    monkeypatch.setenv(MACS_ENV, str(100_000_000))
    with pytest.raises(ResourceRefused) as refused:
        check_explorable(spec)
    message = str(refused.value)
    # stages.0.0.conv1: 3x3 conv 32 -> 32 channels at 64x64 = 32*32*9*4096 MACs, the most of any layer.
    assert "one image of 64x64 takes 255M MACs, over the limit of 100M MACs per image" in message
    assert f"layer stages.0.0.conv1 (conv, output 32x64x64): {32 * 32 * 9 * 64 * 64 / 1e6:.3g}M MACs" in message
    assert MACS_ENV in message
    monkeypatch.setenv(MACS_ENV, "ten billion")
    with pytest.raises(ValueError, match=f"^{MACS_ENV} must be a positive whole number of MACs, got 'ten billion'"):
        check_explorable(spec)


# ----------------------------------------------------------------------------- shipped models pass

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_fits_comfortably_at_64_and_112_pixels(name):
    for size in (64, 112):
        spec = replace(PRESETS[name], input_size=size)
        usage = check_training(spec, 64)
        assert check_explorable(spec) == usage
        # Comfortably: half the limits would still do.
        assert usage.activation_bytes * 64 <= config.DEFAULT_MAX_BATCH_ACTIVATION_BYTES / 2
        assert usage.macs <= config.DEFAULT_MAX_MACS_PER_IMAGE / 2


def test_the_demo_checkpoints_and_recipes_pass():
    demos = demo_checkpoints()
    assert len(demos) == 4
    for _, folder in demos:
        opened = open_model(folder)
        assert batch_size_within(spec_usage(opened.meta.spec)) == 256
    for recipe in sorted((ROOT / "recipes").glob("*.json")):
        load_run_file(recipe)


# ----------------------------------------------------------------------------- the meta-device measure

MIXED = ModelSpec(name="mixed", stem=StemSpec(kind="patchify", out_chs=16, kernel_size=2, stride=2, act="none"),
                  stages=(StageSpec(block="convnext", out_chs=16, depth=1, layer_scale=1e-6),
                          StageSpec(block="bottleneck", out_chs=32, depth=1, stride=2, se_ratio=0.25, groups=2),
                          StageSpec(block="inverted_residual", out_chs=24, depth=2, stride=2, expansion=4)),
                  head=HeadSpec(conv_chs=48, pool_norm="layer", embedding_dim=20, dropout=0.2),
                  input_size=40, num_classes=7)


@pytest.mark.parametrize("spec", [PRESETS["face_resnet"], PRESETS["face_se_resnet"], PRESETS["face_mobilenet"],
                                  PRESETS["face_convnext"], MIXED], ids=lambda spec: spec.name)
def test_the_meta_device_measure_of_a_facenet_equals_its_profile(spec):
    torch.manual_seed(0)
    model = FaceNet(spec).train()  # a model in training mode: measured in eval, its mode given back
    measured = module_usage(model, (spec.in_chs, spec.input_size, spec.input_size))
    analytic = spec_usage(spec)
    assert measured.macs == analytic.macs == profile(spec).macs
    assert measured.activation_bytes == analytic.activation_bytes
    assert measured.largest_activations.name == analytic.largest_activations.name
    assert measured.largest_activations.value == analytic.largest_activations.value
    assert measured.largest_macs.name == analytic.largest_macs.name
    assert measured.largest_macs.value == analytic.largest_macs.value
    assert all(module.training for module in model.modules())
    assert all(param.device.type == "cpu" for param in model.parameters())


def test_the_meta_device_measure_of_any_module_matches_hand_counts():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(8 * 16 * 16, 10))
    usage = module_usage(model, (3, 16, 16))
    assert usage.macs == 8 * 3 * 9 * 16 * 16 + 8 * 16 * 16 * 10  # conv weights x positions + linear weights
    # conv and ReLU write 8x16x16 floats each, the linear 10; Dropout (eval) and Flatten (a view) nothing.
    assert usage.activation_bytes == 4 * (2 * 8 * 16 * 16 + 10)
    assert usage.largest_activations.name == "0" and usage.largest_macs.name == "0"


def test_the_meta_device_measure_allocates_nothing(monkeypatch):
    # 4,096 channels at 1024x1024: 16 GiB per layer if it were real.
    wide = nn.Sequential(nn.Conv2d(3, 4096, 3, padding=1), nn.ReLU())
    usage = module_usage(wide, (3, 1024, 1024))
    assert usage.activation_bytes == 2 * 4096 * 1024 * 1024 * 4
    assert usage.macs == 4096 * 3 * 9 * 1024 * 1024
    with pytest.raises(ResourceRefused, match=r"takes 116G MACs.* layer 0 \(Conv2d, output 4096x1024x1024\): 116G"):
        check_explorable(usage)
    monkeypatch.setenv(MACS_ENV, str(10**12))  # the MACs allowed, the memory still refused
    with pytest.raises(ResourceRefused, match=r"layer 0 \(Conv2d, output 4096x1024x1024\): 16 GiB per image"):
        check_explorable(usage)


# ----------------------------------------------------------------------------- embedding batches

def test_the_embedding_batch_shrinks_when_the_limit_is_lowered(monkeypatch):
    usage = spec_usage(PRESETS["face_resnet"])
    per_image = profile(PRESETS["face_resnet"]).activation_bytes  # 8 MiB
    assert batch_size_within(usage) == 256  # 8 GiB / 8 MiB = 1024, capped
    monkeypatch.setenv(LIMIT_ENV, str(10 * per_image + 5))
    assert batch_size_within(usage) == 10
    with pytest.raises(ResourceRefused, match=f"{EXPLORE_MIN_BATCH} images of 64x64 need"):
        check_explorable(usage)
    monkeypatch.setenv(LIMIT_ENV, "1")
    assert batch_size_within(usage) == 1
    monkeypatch.setenv(LIMIT_ENV, "8GB")
    with pytest.raises(ValueError, match=f"^{LIMIT_ENV} must be a positive whole number of bytes, got '8GB'"):
        batch_size_within(usage)


def test_embeddings_in_tiny_batches_equal_those_in_one_big_batch(monkeypatch):
    torch.manual_seed(1)
    spec = small_spec()
    model = FaceNet(spec).eval()
    images, _ = face_images(10)
    calls = {"big": [], "tiny": []}
    big = raw_embeddings(model, images, NORMALIZE["mean"], NORMALIZE["std"], calls["big"].append)
    monkeypatch.setenv(LIMIT_ENV, str(3 * profile(spec).activation_bytes))
    tiny = raw_embeddings(model, images, NORMALIZE["mean"], NORMALIZE["std"], calls["tiny"].append)
    assert len(calls["big"]) == 1 and len(calls["tiny"]) == 4  # 10 images: batches of 3, 3, 3, 1
    assert big.shape == tiny.shape == (10, 32)
    np.testing.assert_allclose(tiny, big, rtol=1e-5, atol=1e-5)


def test_evaluation_during_training_sizes_its_batches_to_the_limit(monkeypatch):
    from lib.train.evaluation import eval_batch

    spec = small_spec()
    model = FaceNet(spec).eval()
    images, _ = face_images(10)
    assert eval_batch(model, images) == 256
    monkeypatch.setenv(LIMIT_ENV, str(3 * profile(spec).activation_bytes))
    assert eval_batch(model, images) == 3


# ----------------------------------------------------------------------------- the Inspect page

def test_the_inspect_page_shows_the_refusal_as_a_message(wide_checkpoint, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    save_checkpoint(runs / "r1-wide" / "best", FaceNet(WIDE_STEM), {"classes": [], "loss": "ce"})
    (runs / "r1-wide" / "config.json").write_text(json.dumps({"name": "wide-stem"}))
    monkeypatch.setenv("FACELAB_RUNS_DIR", str(runs))
    monkeypatch.setenv("FACELAB_CACHE_DIR", str(tmp_path / "cache"))
    app = AppTest.from_file(str(ROOT / "views" / "inspect.py"), default_timeout=120)
    app.session_state["inspect.which"] = "wide-stem"
    app.run()
    assert not app.exception
    shown = _plain(app.error[0].value)
    assert shown.startswith("This checkpoint cannot be opened: too much activation memory")
    assert _names_the_stem_and_numbers(shown)
    app.radio(key="inspect.source").set_value("upload one").run()
    app.file_uploader(key="inspect.upload").set_value(
        [(name, (wide_checkpoint / name).read_bytes(), "application/octet-stream") for name in (MODEL_FILE, META_FILE)]
    ).run()
    assert not app.exception
    shown = _plain(app.error[0].value)
    assert shown.startswith("This upload cannot be used: too much activation memory")
    assert _names_the_stem_and_numbers(shown)


def test_the_train_page_refuses_to_launch_the_wide_stem_sent_from_build(tmp_path, monkeypatch):
    monkeypatch.setenv(config.RUNS_DIR_ENV, str(tmp_path / "runs"))
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app.session_state["facelab.model_spec"] = WIDE_STEM.to_dict()  # what Build's "send to Train" leaves
    app.run()
    app.switch_page("views/train.py").run()
    assert not app.exception and app.radio(key="train.source").value == "Build page"
    app.button(key="train.launch").click().run()
    assert not app.exception
    shown = _plain(app.error[0].value)
    assert shown.startswith("This run cannot start: too much activation memory for this host")
    assert "layer stem.0 (conv, output 4096x64x64): 64 MiB per image" in shown and "smaller batch_size" in shown
    assert JobQueue(tmp_path / "runs").list_jobs() == []
