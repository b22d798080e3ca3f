"""What a student checks against the course notes: the Train form takes the run being fine-tuned,
"joint" means what the course means, the input size follows the data, the notes count right, and
MACs and the course's "FLOPs" are told apart."""
from __future__ import annotations

import inspect
import json
import math
from dataclasses import replace

import pytest
import torch
import torchvision
from streamlit.testing.v1 import AppTest
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lib.base import config
from lib.eval import saliency
from lib.jobs import queue as jobs
from lib.losses.registry import LOSSES
from lib.model.net import FaceNet
from lib.model.presets import PRESETS
from lib.model.profile import human, profile
from lib.model.spec import ModelSpec
from lib.store.checkpoint import save_checkpoint
from lib.store.run_folder import RunFolder
from lib.train.config import TrainConfig
from lib.train.step import joint_loss
from lib.ui import build_notes, explore_text, flops_table, train_form, train_notes
from tests.job_cases import wait_finished
from tests.synthetic_data import make_dataset
from tests.train_cases import TINY_MODEL, tiny_config

APP = str(config.PROJECT_ROOT / "app.py")
BUILD = str(config.PROJECT_ROOT / "views" / "build.py")
STUDENT_CLASSES = [f"id{k}" for k in range(5)]
# What the student's earlier run trained with: every value off the recipe's (lr 0.1, batch 64, ...).
STUDENT_SETTINGS = {"lr": 0.05, "batch_size": 16, "momentum": 0.8, "epochs": 7, "weight_decay": 1e-3,
                    "optimizer": "sgd", "warmup_epochs": 0.0}


@pytest.fixture
def student(tmp_path, monkeypatch):
    """A student's data set (5 identities) and a finished CE run on it, in a runs folder of its own."""
    make_dataset(tmp_path / "data" / "five", {name: 3 for name in STUDENT_CLASSES}, {"id0": 1})
    monkeypatch.setenv(config.DATA_ROOTS_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(config.RUNS_DIR_ENV, str(tmp_path / "runs"))
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "1")
    run = RunFolder(tmp_path / "runs" / "20261204-120000-ce")
    run.create()
    run.write_config({"name": "my-ce", "model": TINY_MODEL, "loss": "ce", **STUDENT_SETTINGS})
    net = FaceNet(replace(ModelSpec.from_dict(TINY_MODEL), num_classes=len(STUDENT_CLASSES)))
    save_checkpoint(run.best, net, {"classes": STUDENT_CLASSES, "loss": "ce"})
    return tmp_path


def number(app: AppTest, name: str):
    return app.number_input(key=f"train.{name}").value


def test_fine_tuning_a_students_run_takes_its_settings_and_launch_runs_what_the_summary_says(student):
    app = AppTest.from_file(APP, default_timeout=90)
    app.session_state["facelab.data_root"] = str(student / "data" / "five")
    app.session_state["facelab.user"] = "ada"
    app.run()
    app.switch_page("views/train.py").run()
    app.radio(key="train.scheme").set_value("sequential").run()  # the first checkpoint: a demo of other data
    label = next(option for option in app.selectbox(key="train.init_from").options if "my-ce" in option)
    app.selectbox(key="train.init_from").set_value(label).run()
    assert not app.exception and not app.error
    for name in ("lr", "batch_size", "momentum", "epochs", "weight_decay", "warmup_epochs"):
        assert number(app, name) == pytest.approx(STUDENT_SETTINGS[name]), name
    assert "those its run trained with" in " ".join(caption.value for caption in app.caption)
    assert "15 images / batch 16 = **1 steps per epoch**, 7 in all" in app.info[0].value
    app.button(key="train.launch").click().run()
    queue = jobs.JobQueue(student / "runs")
    job = queue.list_jobs()[0]
    try:
        settings = json.loads((job.run_dir / "run.json").read_text())["config"]
    finally:
        if queue.get(job.id).state in ("queued", "running"):
            queue.cancel(job.id, force=True, by="ada")
        wait_finished(queue, job.id)
    assert {name: settings[name] for name in STUDENT_SETTINGS} == STUDENT_SETTINGS
    assert settings["init_from"] == str(student / "runs" / "20261204-120000-ce" / "best")


def test_checkpoint_values_never_put_a_widget_out_of_its_bounds(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.create()
    run.write_config({"lr": 5.0, "optimizer": "lion", "batch_size": 12.5, "epochs": 4, "ema": "yes"})
    fallback = train_form.defaults()
    values, origin = train_form.checkpoint_values(run.best, fallback)
    assert values["lr"] == fallback["lr"]  # 5.0 is beyond the widget's 2.0
    assert values["optimizer"] == fallback["optimizer"] and values["batch_size"] == fallback["batch_size"]
    assert values["ema"] == fallback["ema"] and values["epochs"] == 4 and origin == "those its run trained with"
    demo_values, demo_origin = train_form.checkpoint_values(config.CHECKPOINTS_DIR / "demo-ce", fallback)
    assert demo_values == fallback and demo_origin == "the recipe's (section 4)"


def test_joint_means_the_courses_ce_plus_weighted_metric_and_from_scratch_is_called_so():
    assert train_form.SCHEMES["scratch"] == "From scratch" and "joint" not in train_form.SCHEMES
    assert "0.7 × CE + 0.3 ×" in train_form.SCHEME_LESSON and "**From scratch**" in train_form.SCHEME_LESSON
    _, text = explore_text.lesson(31)
    assert "0.7 × CE + 0.3 × center" in text
    assert "**Joint**: train with the margin loss from the start" not in text


def test_build_takes_the_input_size_of_the_data_set_unless_the_student_changed_it(tmp_path, monkeypatch):
    make_dataset(tmp_path / "big", {"a": 2, "b": 2}, {"a": 1}, size=112)
    monkeypatch.setenv(config.DATA_ROOTS_ENV, str(tmp_path))
    app = AppTest.from_file(BUILD, default_timeout=60)
    app.session_state["facelab.data_root"] = str(tmp_path / "big")
    app.run()
    assert app.number_input(key="build.input_size").value == 112
    at_112 = profile(replace(PRESETS["face_resnet"], num_classes=2, input_size=112))
    shown = next(metric.value for metric in app.metric if metric.label == "MACs per image")
    assert shown == human(at_112.macs) != human(profile(replace(PRESETS["face_resnet"], num_classes=2)).macs)
    app.number_input(key="build.input_size").set_value(96).run()
    app.session_state["facelab.data_root"] = str(config.EMBEDDED_DATA)  # 64 px faces
    app.run()
    assert app.number_input(key="build.input_size").value == 96  # the student's own choice stays
    assert any("are 64x64: the counts below are for 96x96" in caption.value for caption in app.caption)


def stage_sides(model: FaceNet, side: int) -> list[int]:
    """The side of each stage's output map on a ``side`` px image, read off forward hooks."""
    seen = []
    hooks = [stage.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[-1])) for stage in model.stages]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, side, side))
    for hook in hooks:
        hook.remove()
    return seen


def test_saliency_stage_labels_give_the_map_size_of_the_images_explained():
    model = FaceNet(PRESETS["face_resnet"])  # built for 64 px
    labels = [label for label, _ in saliency.stage_choices(model, image_size=112)]
    assert [label.rsplit(", ", 1)[1] for label in labels] == [f"{s}x{s}" for s in stage_sides(model, 112)]
    ratios = [label.rsplit(", ", 1)[1] for label, _ in saliency.stage_choices(model)]
    assert ratios[-1] == f"1/{64 // stage_sides(model, 64)[-1]} of the image side"  # true at any size


def test_convnext_note_counts_mobilenet_v2s_norms_and_activations_as_torchvision_builds_it():
    block = torchvision.models.mobilenetv2.InvertedResidual(32, 32, stride=1, expand_ratio=6)
    activations = sum(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in block.modules())
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in block.modules())
    assert (norms, activations) == (3, 2)
    note = build_notes.BLOCK_NOTES["convnext"][1]
    assert "three BatchNorms and two activations" in note and "instead of three" not in note


def test_the_courses_batchnorm_advice_stands_beside_the_layernorm_preset():
    assert "recommends BatchNorm for this homework" in build_notes.layernorm_advice(PRESETS["face_convnext"])
    assert build_notes.layernorm_advice(PRESETS["face_resnet"]) == ""
    app = AppTest.from_file(BUILD, default_timeout=60).run()
    app.selectbox(key="build.preset").set_value("face_convnext").run()
    app.button[0].click().run()  # Load
    assert any("recommends BatchNorm for this homework" in caption.value for caption in app.caption)
    train = AppTest.from_file(APP, default_timeout=90).run()
    train.switch_page("views/train.py").run()
    train.radio(key="train.source").set_value("Preset").run()
    train.selectbox(key="train.preset").set_value("face_convnext").run()
    assert any("recommends BatchNorm" in c.value and "load it on the Build page" in c.value for c in train.caption)


def test_randaugment_note_uses_torchvisions_own_parameters_and_defaults():
    defaults = {name: p.default for name, p in inspect.signature(torchvision.transforms.RandAugment).parameters.items()}
    assert (defaults["num_ops"], defaults["magnitude"], defaults["num_magnitude_bins"]) == (2, 9, 31)
    note = train_notes.RANDAUGMENT_NOTE
    for fact in ("`num_ops=2`", "default `magnitude=9` is 9 of 30", "(31 by default: 0 to 30)", "`rand-m9-mstd0.5`",
                 "standard deviation 0.5"):
        assert fact in note


def test_scale_note_says_64_in_the_papers_and_30_here_with_cosfaces_bound():
    classes = 298
    bound = (classes - 1) / classes * math.log((classes - 1) * 0.9 / 0.1)  # CosFace, eq. for P = 0.9
    text = train_notes.scale_lesson(classes)
    assert "s = 64" in text and "s = 30" in text and f"s ≥ {bound:.1f}" in text


def test_the_courses_resnet_table_is_recounted_with_flopcountermode_in_both_conventions():
    course = {row["model"]: row for row in flops_table.resnet_table("course")}
    facelab = {row["model"]: row for row in flops_table.resnet_table("facelab")}
    reference = torchvision.models.resnet18().eval()  # real weights, a real image: independent of the meta count
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        reference(torch.zeros(1, 3, 224, 224))
    assert course["resnet18"]["“FLOPs” counted (= MACs)"] == counter.get_total_flops() // 2
    assert course["resnet18"]["parameters (torchvision)"] == sum(p.numel() for p in reference.parameters())
    # The reference table of DESIGN.md (torchvision, 224x224): parameters and G MACs.
    for name, params, giga_macs in (("resnet18", 11_689_512, 1.814), ("resnet34", 21_797_672, 3.664),
                                    ("resnet50", 25_557_032, 4.089)):
        assert course[name]["parameters (torchvision)"] == params
        assert course[name]["“FLOPs” counted (= MACs)"] / 1e9 == pytest.approx(giga_macs, abs=5e-4)
        assert facelab[name]["FLOPs counted (2 × MACs)"] == 2 * facelab[name]["MACs counted"]
    assert [row["course's “FLOPs”"] for row in course.values()] == [1.8e9, 3.6e9, 3.8e9, 7.6e9, 11.3e9]
    assert course["resnet18"]["counted / course"] == pytest.approx(1.01)  # the course's "FLOPs" are MACs
    assert facelab["resnet18"]["counted / course"] == pytest.approx(2.02)


def test_build_shows_compute_in_the_convention_chosen():
    app = AppTest.from_file(BUILD, default_timeout=60).run()
    macs = profile(replace(PRESETS["face_resnet"], num_classes=298)).macs
    assert next(m.value for m in app.metric if m.label == "MACs per image") == human(macs)
    app.segmented_control(key="build.convention").set_value("course").run()
    assert next(m.value for m in app.metric if m.label == "“FLOPs” per image (course)") == human(macs)
    assert any(f"FaceLab: {human(macs)} MACs = {human(2 * macs)} FLOPs" in c.value for c in app.caption)
    assert not app.exception


def test_joint_training_combines_ce_and_the_center_term_as_the_course_weighs_them():
    assert (TrainConfig().joint_metric, TrainConfig().joint_weight) == ("none", 0.3)  # 0.7 CE + 0.3 metric
    ce = LOSSES["ce"].cls(2, 2, label_smoothing=0.0)
    joint = joint_loss(ce, "center", 0.3, embedding_dim=2, num_classes=2)
    with torch.no_grad():
        joint.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    cross_entropy = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2  # -log softmax of the true class
    center = 0.5 * (1.0 + 2.0) / 2  # ||(1,0)-(0,0)||² = 1, ||(0,2)-(1,1)||² = 2
    output = joint(embeddings, logits, labels)
    assert output.loss.item() == pytest.approx(0.7 * cross_entropy + 0.3 * center, abs=1e-6)
    output.loss.backward()
    assert joint.centers.grad is not None and joint.centers.grad.abs().sum() > 0  # the centers learn too
    assert joint_loss(ce, "none", 0.3, 2, 2) is ce
    with pytest.raises(ValueError, match="^joint_metric: the 'center' loss already adds"):
        replace(tiny_config(), loss="center", joint_metric="center").validate()
    with pytest.raises(ValueError, match="^joint_weight: 1.5"):
        replace(tiny_config(), joint_metric="center", joint_weight=1.5).validate()
