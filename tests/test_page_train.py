"""The Train page: what will train, its cost and lessons, recipes, and launching into the real queue."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch.utils.flop_counter import FlopCounterMode

from lib.base import config
from lib.data.augment import DEFAULT_PIPELINE
from lib.data.datasets import list_identities
from lib.jobs import queue as jobs
from lib.losses.registry import LOSSES
from lib.model.net import FaceNet, count_params
from lib.model.presets import PRESETS
from lib.model.spec import ModelSpec
from lib.store.checkpoint import save_checkpoint
from lib.ui import train_form
from lib.ui.text import as_plain_markdown
from lib.ui.train_form import format_count
from tests.disk_conditions import read_only
from tests.job_cases import log_has, tiny, wait_finished, wait_for
from tests.synthetic_data import make_dataset
from tests.train_cases import TINY_MODEL

APP = str(config.PROJECT_ROOT / "app.py")
IDENTITIES = 298  # LFW-64's training identities
IMAGES = 2802  # and images


def recipe_file(name: str) -> dict:
    """A run file of recipes/, read here independently of lib.train.recipes."""
    return json.loads((config.RECIPES_DIR / f"{name}.json").read_text())


@pytest.fixture(autouse=True)
def runs_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(config.RUNS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "1")
    return tmp_path


def train_page(**session) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=90)
    for key, value in session.items():
        app.session_state[key] = value
    app.run()
    app.switch_page("views/train.py").run()
    assert not app.exception
    return app


def metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def macs(spec: ModelSpec) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        FaceNet(spec).eval()(torch.zeros(1, spec.in_chs, spec.input_size, spec.input_size))
    return counter.get_total_flops() // 2


def test_defaults_show_cost_loss_steps_and_lessons():
    app = train_page()
    quick = recipe_file("quick-cpu")
    assert app.selectbox(key="train.recipe").value == "quick-cpu"
    assert app.radio(key="train.source").value == "The recipe's model"
    spec = replace(ModelSpec.from_dict(quick["model"]), num_classes=IDENTITIES)
    assert metric(app, "Parameters") == format_count(count_params(spec))
    assert metric(app, "MACs per image") == format_count(macs(spec))
    assert metric(app, "Identities") == str(IDENTITIES)
    assert LOSSES["ce"].formula in app.latex[0].value
    steps = IMAGES // quick["config"]["batch_size"]
    assert f"{steps} steps per epoch**, {steps * quick['config']['epochs']:,} in all" in app.info[0].value
    captions = " ".join(c.value for c in app.caption)
    for lesson in ("**Label smoothing**", "**MixUp**", "**Stochastic depth**", "**EMA**", "**Dropout**",
                   "**Joint**", "**Sequential**"):
        assert lesson in captions
    assert "`RandomResizedCrop`" in " ".join(m.value for m in app.markdown)
    assert quick["description"] in captions  # the recipe's own model trains: its description holds
    assert f"the {IDENTITIES} identities of this data set the true identity's target is 0.9003" in captions


def test_convnext_recipe_and_a_margin_loss():
    app = train_page()
    app.selectbox(key="train.recipe").set_value("convnext-course").run()
    course = recipe_file("convnext-course")
    settings = course["config"]
    assert app.selectbox(key="train.preset").value == course["model"] == "face_convnext"
    assert app.selectbox(key="train.optimizer").value == settings["optimizer"] == "adamw"
    assert app.number_input(key="train.lr").value == pytest.approx(settings["lr"])
    assert app.toggle(key="train.ema").value and app.selectbox(key="train.mix").value == settings["mix"]
    steps = IMAGES // settings["batch_size"]
    info = app.info[0].value
    assert f"{steps} steps per epoch**, {steps * settings['epochs']:,} in all" in info
    assert f"averages about {1 / (1 - settings['ema_decay']):,.0f} steps" in info
    table = app.table[0].value.set_index("setting")  # the course's table beside this recipe
    assert table.loc["base learning rate", "ConvNeXt paper (ImageNet)"] == "4e-3"
    assert table.loc["batch size", "this recipe (LFW-64)"] == str(settings["batch_size"])
    app.selectbox(key="train.loss").set_value("arcface").run()
    assert LOSSES["arcface"].formula in app.latex[0].value
    mix = app.selectbox(key="train.mix")
    assert mix.value == "none" and mix.disabled  # margin heads need hard labels
    assert app.number_input(key="train.lp.margin_rad").value == pytest.approx(0.5)


def test_triplet_and_center_losses_show_and_set_their_p_x_k_batches():
    app = train_page()
    assert not any("identities × K" in c.value for c in app.caption)  # CE trains on shuffled images
    app.selectbox(key="train.loss").set_value("triplet").run()
    captions = " ".join(c.value for c in app.caption)
    assert "**P = 16 identities × K = 4 images per batch** (batch size 64 = P × K" in captions
    assert "Batch-hard mining needs positives in the batch" in captions
    app.number_input(key="train.images_per_identity").set_value(8).run()
    assert "**P = 8 identities × K = 8 images per batch**" in " ".join(c.value for c in app.caption)
    app.selectbox(key="train.loss").set_value("center").run()
    assert "**P = 8 identities × K = 8 images per batch**" in " ".join(c.value for c in app.caption)
    app.number_input(key="train.images_per_identity").set_value(5).run()
    assert any("batch_size: 64 is not a multiple of images_per_identity K = 5" in w.value for w in app.warning)
    assert not app.exception


def test_the_submitted_run_carries_k_for_p_x_k_losses_only():
    values = {**train_form.defaults(), "images_per_identity": 8}
    run = train_form.build_run("pk", TINY_MODEL, config.EMBEDDED_DATA, DEFAULT_PIPELINE, "triplet", {}, values)
    assert run["config"]["images_per_identity"] == 8 and run["config"]["batch_size"] == 64  # P = 8
    run = train_form.build_run("ce", TINY_MODEL, config.EMBEDDED_DATA, DEFAULT_PIPELINE, "ce", {}, values)
    assert "images_per_identity" not in run["config"]
    with pytest.raises(ValueError, match="^batch_size: 64 is not a multiple"):
        train_form.build_run("pk", TINY_MODEL, config.EMBEDDED_DATA, DEFAULT_PIPELINE, "center", {},
                             dict(values, images_per_identity=5))


def test_a_fine_tuning_recipe_sets_its_loss_and_starting_checkpoint():
    app = train_page()
    app.selectbox(key="train.recipe").set_value("demo-arcface").run()
    settings = recipe_file("demo-arcface")["config"]
    assert app.selectbox(key="train.loss").value == settings["loss"] == "arcface"
    assert app.number_input(key="train.lp.margin_rad").value == settings["loss_params"]["margin_rad"]
    assert app.number_input(key="train.lp.label_smoothing").value == 0.0  # the recipe leaves it off
    ready = (config.PROJECT_ROOT / settings["init_from"] / "meta.json").is_file()
    assert app.radio(key="train.scheme").value == ("sequential" if ready else "scratch")
    if ready:
        assert settings["init_from"].split("/")[-1] in app.selectbox(key="train.init_from").value
    assert not app.exception


def test_model_and_pipeline_come_from_build_and_augment():
    built = replace(PRESETS["face_mobilenet"], name="my_net", drop_path_rate=0.0)
    pipeline = [{"name": "RandomHorizontalFlip", "params": {"p": 0.5}}]
    app = train_page(**{"facelab.model_spec": built.to_dict(), "facelab.pipeline": pipeline})
    assert app.radio(key="train.source").value == "Build page"
    assert metric(app, "Parameters") == format_count(count_params(replace(built, num_classes=IDENTITIES)))
    text = " ".join(m.value for m in app.markdown)
    assert "from the Augment page" in text and "`RandomHorizontalFlip`" in text and "ColorJitter" not in text
    captions = " ".join(c.value for c in app.caption)
    assert "The settings of **quick-cpu** applied to **my_net** (built on the Build page)" in captions
    assert recipe_file("quick-cpu")["description"] not in captions  # it speaks of another network


def test_lessons_use_the_identities_of_the_data_set_in_use(tmp_path, monkeypatch):
    make_dataset(tmp_path / "five", {f"id{k}": 3 for k in range(5)}, {"id0": 1})
    monkeypatch.setenv(config.DATA_ROOTS_ENV, str(tmp_path))  # the sidebar offers data sets under the roots
    app = train_page(**{"facelab.data_root": str(tmp_path / "five")})
    assert metric(app, "Identities") == "5"
    captions = " ".join(c.value for c in app.caption)
    assert "the 5 identities of this data set the true identity's target is 0.92 and every other one's 0.02" in captions
    app.number_input(key="train.lp.label_smoothing").set_value(0.0).run()
    assert "with ε = 0 the target over these 5 identities is one-hot" in " ".join(c.value for c in app.caption)


def test_a_runs_folder_that_turns_read_only_gets_its_own_fix_not_a_settings_hint(runs_folder):
    app = train_page()
    with read_only(runs_folder):
        app.button(key="train.launch").click().run()
    errors = " ".join(e.value for e in app.error)
    assert not app.exception and "read-only" in errors and str(runs_folder) in errors
    assert "Change the setting named above" not in errors
    assert "cannot be used" in errors or train_form.RUNS_FOLDER_HINT in errors  # refused on opening or at Launch
    assert train_form.launch_hint(jobs.RunsFolderError("full")) == train_form.RUNS_FOLDER_HINT
    assert train_form.launch_hint(ValueError("config.lr: -1")) == train_form.LAUNCH_HINT


def test_a_model_that_crashes_pytorch_in_channels_last_is_flagged_while_the_layout_is_on():
    thin = replace(PRESETS["face_resnet"], name="thin", stem=replace(PRESETS["face_resnet"].stem, out_chs=8),
                   stages=(replace(PRESETS["face_resnet"].stages[0], out_chs=8), *PRESETS["face_resnet"].stages[1:]))
    app = train_page(**{"facelab.model_spec": thin.to_dict()})
    assert app.toggle(key="train.channels_last").value
    assert any("`stages.1.0.shortcut.0`" in w.value for w in app.warning)
    app.toggle(key="train.channels_last").set_value(False).run()
    assert not any("shortcut" in w.value for w in app.warning)
    app.toggle(key="train.channels_last").set_value(True).run()
    app.radio(key="train.source").set_value("Preset").run()  # the presets are safe in either layout
    assert app.toggle(key="train.channels_last").value
    assert not any("shortcut" in w.value for w in app.warning)


@pytest.fixture
def busy_queue(runs_folder):
    """Another user's real job holds the only slot (cancelled at the end, whatever happens)."""
    queue = jobs.JobQueue(runs_folder)
    busy = queue.submit(tiny("someone-else", epochs=500), "bob")
    queue.tick()
    wait_for(lambda: log_has(queue, busy, "starting:"), "the other job to train")
    yield queue
    for job in queue.list_jobs():
        if job.state == "queued":
            queue.cancel(job.id, by=job.user)
    queue.cancel(busy, force=True, by="bob")
    assert wait_finished(queue, busy).state == "cancelled"


def test_launch_queues_the_run_behind_a_running_job(busy_queue):
    app = train_page(**{"facelab.user": "ada"})
    app.number_input(key="train.epochs").set_value(3).run()
    app.button(key="train.launch").click().run()
    assert f"Launched **{as_plain_markdown('face_resnet_lite-ce')}** (queued)" in app.success[0].value
    mine = busy_queue.list_jobs()[0]
    assert (mine.state, mine.user, mine.name) == ("queued", "ada", "face_resnet_lite-ce")
    run = json.loads((mine.run_dir / "run.json").read_text())
    assert ModelSpec.from_dict(run["model"]) == ModelSpec.from_dict(recipe_file("quick-cpu")["model"])
    settings = run["config"]
    assert (settings["epochs"], settings["loss"], settings["optimizer"], settings["lr"]) == (3, "ce", "sgd", 0.1)
    assert settings["loss_params"] == {"label_smoothing": 0.1}
    assert settings["augment"] == DEFAULT_PIPELINE and settings["data_root"] == str(config.EMBEDDED_DATA)


def test_a_run_without_a_name_is_refused_with_a_message(runs_folder):
    app = train_page()
    next(box for box in app.text_input if box.label == "Run name").input("   ").run()
    app.button(key="train.launch").click().run()
    assert "This run cannot start: name" in app.error[0].value
    assert jobs.JobQueue(runs_folder).list_jobs() == []


def test_fine_tuning_takes_a_checkpoint_of_the_same_identities(runs_folder):
    identities = list_identities(config.EMBEDDED_DATA / "cls_data" / "train")
    spec = ModelSpec.from_dict(TINY_MODEL)
    for folder, classes in (("ce-run", identities), ("other-data", identities[:4])):
        net = FaceNet(replace(spec, num_classes=len(classes)))
        save_checkpoint(runs_folder / folder / "best", net, {"classes": classes, "loss": "ce"})
    app = train_page()
    app.radio(key="train.scheme").set_value("sequential").run()
    options = app.selectbox(key="train.init_from").options
    app.selectbox(key="train.init_from").set_value(next(o for o in options if "ce-run" in o)).run()
    assert not app.error
    assert metric(app, "Parameters") == format_count(count_params(replace(spec, num_classes=IDENTITIES)))
    app.selectbox(key="train.init_from").set_value(next(o for o in options if "other-data" in o)).run()
    assert f"trained on 4 identities and this data set has {IDENTITIES}" in app.error[0].value
    assert not app.button  # nothing to launch


def test_an_impossible_build_model_gets_a_message_not_a_traceback():
    broken = PRESETS["face_resnet"].to_dict()
    broken["stages"][1]["out_chs"] = 0
    app = train_page(**{"facelab.model_spec": broken})
    assert "This model cannot be built: stages[1].out_chs" in app.error[0].value
    assert not app.button


def test_joint_training_is_launched_as_the_course_weighs_it(busy_queue):
    app = train_page(**{"facelab.user": "ada"})
    assert app.selectbox(key="train.joint_metric").value == "none"
    app.selectbox(key="train.joint_metric").set_value("center").run()
    assert app.number_input(key="train.joint_weight").value == 0.3  # 0.7 x CE + 0.3 x center
    app.button(key="train.launch").click().run()
    assert not app.exception and not app.error
    settings = json.loads((busy_queue.list_jobs()[0].run_dir / "run.json").read_text())["config"]
    assert (settings["loss"], settings["joint_metric"], settings["joint_weight"]) == ("ce", "center", 0.3)
    app.selectbox(key="train.loss").set_value("triplet").run()  # already CE plus a metric term
    assert not any(box.key == "train.joint_metric" for box in app.selectbox)


def test_the_system_settings_say_what_they_come_to_on_this_machine():
    from lib.base.device import resolve_device, resolve_precision
    device = resolve_device("auto")
    app = train_page()
    captions = " ".join(c.value for c in app.caption)
    assert f"precision **{resolve_precision('auto', device)[0]}**" in captions
    assert f"torch.compile **{'on' if device.startswith('cuda') else 'off'}**" in captions
    if device == "cpu":
        app.selectbox(key="train.precision").set_value("fp16").run()
        captions = " ".join(c.value for c in app.caption)
        assert "precision **fp32**" in captions and "fp16 needs a GPU" in captions
        app.selectbox(key="train.augment_on").set_value("device").run()
        assert "augmentation on the CPU, a whole batch at a time" in " ".join(c.value for c in app.caption)
