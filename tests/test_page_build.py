"""The Build page, driven like a student would: edit, add, break and fix a model."""
from __future__ import annotations

from dataclasses import replace

import pytest
from streamlit.testing.v1 import AppTest
from torch import nn

from lib.model import edit
from lib.model.net import count_params
from lib.model.presets import PRESETS
from lib.model.spec import ModelSpec
from tests.synthetic_data import make_dataset

FACE = PRESETS["face_resnet"]


@pytest.fixture
def app() -> AppTest:
    page = AppTest.from_file("../views/build.py", default_timeout=60).run()
    assert not page.exception
    return page


def shown_params(page: AppTest) -> str:
    return next(metric.value for metric in page.metric if metric.label == "Parameters")


def text(page: AppTest) -> str:
    return "\n".join(element.value for element in page.markdown)


def test_renders_the_default_model_with_its_numbers(app):
    assert app.title[0].value == "Build a model"
    assert shown_params(app) == f"{count_params(FACE):,}"
    assert not app.error
    assert "1 MAC = 2 FLOPs" in " ".join(caption.value for caption in app.caption)
    assert len(app.dataframe) >= 3  # per-stage table, layers of a block, other blocks


def test_changing_a_stage_depth_changes_the_parameter_count(app):
    app.number_input(key="build.stage1.depth").set_value(3).run()
    deeper = replace(FACE, stages=(FACE.stages[0], replace(FACE.stages[1], depth=3), *FACE.stages[2:]))
    assert shown_params(app) == f"{count_params(deeper):,}" != f"{count_params(FACE):,}"
    table = app.dataframe[0].value
    assert table.loc[table["part"] == "stage2", "blocks"].item() == "3 x basic"


def test_block_type_shows_only_its_options(app):
    app.selectbox(key="build.stage0.block").set_value("inverted_residual").run()
    keys = {widget.key for widget in [*app.number_input, *app.selectbox]}
    assert {"build.stage0.expansion", "build.stage0.kernel_size", "build.stage0.se_ratio", "build.stage0.norm",
            "build.stage0.drop_block"} <= keys
    assert "build.stage0.groups" not in keys and "build.stage0.layer_scale" not in keys
    assert app.number_input(key="build.stage0.expansion").value == 6.0  # the block's own default
    assert shown_params(app) == f"{count_params(edit.change_block(FACE, 0, 'inverted_residual')):,}"
    app.selectbox(key="build.stage0.block").set_value("bottleneck").run()
    assert app.number_input(key="build.stage0.groups").value == 1


def test_add_move_and_remove_stages(app):
    next(b for b in app.button if b.label == "Add a stage").click().run()
    grown = edit.add_stage(FACE)
    assert len(grown.stages) == 5 and shown_params(app) == f"{count_params(grown):,}"
    assert app.button(key="build.up0").disabled  # the first stage cannot move up
    app.button(key="build.down0").click().run()
    moved = edit.move_stage(grown, 0, 1)
    assert app.number_input(key="build.stage0.out_chs").value == moved.stages[0].out_chs == 64
    assert shown_params(app) == f"{count_params(moved):,}"
    app.button(key="build.remove4").click().run()
    assert shown_params(app) == f"{count_params(edit.remove_stage(moved, 4)):,}"
    assert "build.stage4.depth" not in {widget.key for widget in app.number_input}


def test_impossible_model_shows_the_field_and_keeps_the_last_valid_numbers(app):
    app.selectbox(key="build.stage0.block").set_value("bottleneck").run()
    valid = shown_params(app)
    app.number_input(key="build.stage0.out_chs").set_value(2).run()
    assert not app.exception
    messages = [element.value for element in app.error]
    assert any("stages[0].out_chs" in message for message in messages)
    assert any("change **Stage 1 > Width**" in message for message in messages)
    assert shown_params(app) == valid  # the last possible model stays on screen
    assert all(element.proto.disabled for element in app.get("download_button"))
    app.number_input(key="build.stage0.out_chs").set_value(64).run()
    assert not app.error and shown_params(app) != valid


def test_stem_errors_are_explained(app):
    app.number_input(key="build.stem.kernel_size").set_value(4).run()
    assert any("stem.kernel_size: 4 must be odd" in element.value for element in app.error)


def test_hand_off_to_training(app):
    app.number_input(key="build.head.embedding_dim").set_value(128).run()
    next(b for b in app.button if b.label == "Use this model for training").click().run()
    handed = ModelSpec.from_dict(app.session_state["facelab.model_spec"])
    assert handed.head.embedding_dim == 128
    assert count_params(handed) == count_params(replace(FACE, head=replace(FACE.head, embedding_dim=128)))
    assert "The Train page will use this model" in app.success[0].value


def test_load_a_preset(app):
    app.selectbox(key="build.preset").set_value("resnet50")
    next(b for b in app.button if b.label == "Load").click().run()
    assert shown_params(app) == "25,557,032"  # torchvision's resnet50
    assert app.number_input(key="build.stage3.out_chs").value == 2048


def test_teaching_items_sit_next_to_live_numbers(app):
    shown = text(app)
    for item in (1, 2, 3, 4, 6, 9, 10, 11, 12, 13):
        assert f"**{item} · " in shown, item
    expander = "\n".join(element.value for element in app.expander[0].markdown)
    for item in (3, 4, 5, 7, 8):
        assert f"**{item} · " in expander, item
    first_conv = nn.Conv2d(32, 32, 3, bias=False).weight.numel()  # stage 1's first conv, counted by torch
    assert f"32·32·3² = **{first_conv:,}** parameters" in shown
    assert f"{count_params(FACE):,} parameters: 3.9% of the 35,000,000 budget" in shown
    app.number_input(key="build.budget_m").set_value(1.0).run()
    assert "(**over** it" in text(app)


def test_explained_stage_survives_loading_other_models(app):
    app.selectbox(key="build.explain").set_value(3).run()
    assert "Stage 4" in app.selectbox(key="build.explain").format_func(3)
    app.selectbox(key="build.preset").set_value("convnext_tiny")
    next(b for b in app.button if b.label == "Load").click().run()
    assert not app.exception and app.selectbox(key="build.explain").value == 3
    assert "**8 · ConvNeXt block.**" in text(app)
    app.selectbox(key="build.preset").set_value("face_mobilenet")
    next(b for b in app.button if b.label == "Load").click().run()
    app.selectbox(key="build.explain").set_value(4).run()
    next(b for b in app.button if b.label == "Blank").click().run()  # one stage left: explain the first
    assert not app.exception and app.selectbox(key="build.explain").value == 0


def test_a_model_that_crashes_pytorch_in_channels_last_is_flagged(app):
    assert not app.warning
    app.number_input(key="build.stage0.out_chs").set_value(8).run()  # stage 2's shortcut: 1x1, stride 2, 8 channels
    assert not app.exception and not app.error
    assert any("`stages.1.0.shortcut.0`" in w.value and "channels_last" in w.value for w in app.warning)


def test_classes_follow_the_data_set_in_the_sidebar(tmp_path):
    make_dataset(tmp_path / "five", {f"id{k}": 2 for k in range(5)}, {"id0": 1})
    page = AppTest.from_file("../views/build.py", default_timeout=60)
    page.session_state["facelab.data_root"] = str(tmp_path / "five")
    page.run()
    assert page.number_input(key="build.num_classes").value == 5
    assert shown_params(page) == f"{count_params(replace(FACE, num_classes=5)):,}"
    assert "Train always sizes the classifier" in page.number_input(key="build.num_classes").help
    page.selectbox(key="build.preset").set_value("resnet50")
    next(b for b in page.button if b.label == "Load").click().run()  # ImageNet presets keep 1000, said so
    assert page.number_input(key="build.num_classes").value == 1000
    assert any("to the 5 identities of five, not to 1,000" in c.value for c in page.caption)
    next(b for b in page.button if b.label == "Blank").click().run()
    assert page.number_input(key="build.num_classes").value == 5
    make_dataset(tmp_path / "three", {f"id{k}": 2 for k in range(3)}, {"id0": 1})
    page.session_state["facelab.data_root"] = str(tmp_path / "three")  # another data set: the field follows
    page.run()
    assert page.number_input(key="build.num_classes").value == 3
    assert not any("Train will size" in c.value for c in page.caption)
    page.number_input(key="build.num_classes").set_value(7).run()  # a number the student typed stays
    page.session_state["facelab.data_root"] = str(tmp_path / "five")
    page.run()
    assert page.number_input(key="build.num_classes").value == 7
    assert any("to the 5 identities of five, not to 7" in c.value for c in page.caption)


def _graphviz_sources(page: AppTest) -> list[str]:
    return [element.proto.spec for element in page.get("graphviz_chart")]


def test_the_second_look_draws_counts_and_compares(app):
    sources = _graphviz_sources(app)
    assert len(sources) == 4  # the network, the explained stage's block, and the slides' two blocks
    assert "stage4" in sources[0] and "MACs per image" in sources[0]
    assert "ConvNeXt block" in sources[3] and "MobileNetV2 inverted residual" in sources[2]
    tables = [frame.value for frame in app.dataframe]
    fields = next(t for t in tables if "receptive field" in t.columns)
    assert list(fields["receptive field"]) == ["3x3 px", "7x7 px", "13x13 px", "25x25 px", "49x49 px"]
    memory = next(t for t in tables if "MiB" in t.columns)
    assert memory["MiB"].iloc[-1] == pytest.approx(memory["MiB"].iloc[:-1].sum(), abs=0.3)
    presets = next(t for t in tables if "budget" in t.columns)
    verdicts = dict(zip(presets["preset"], presets["budget"]))
    assert verdicts["hw2p2_resnet50"] == "over" and verdicts["hw2p2_convnext_tiny"] == "fits"


def test_the_drawing_follows_the_spec(app):
    app.selectbox(key="build.stage1.block").set_value("convnext").run()
    assert not app.exception
    app.selectbox(key="build.explain").set_value(1).run()
    block = _graphviz_sources(app)[1]
    assert "ConvNeXt block" in block and "depthwise 7x7 conv" in block


def test_the_memory_of_a_batch_grows_with_it(app):
    first = next(t for t in (f.value for f in app.dataframe) if "MiB" in t.columns)
    app.number_input(key="build.memory_batch").set_value(128).run()
    second = next(t for t in (f.value for f in app.dataframe) if "MiB" in t.columns)
    assert second["MiB"].iloc[3] > 1.9 * first["MiB"].iloc[3] and second["MiB"].iloc[0] == first["MiB"].iloc[0]
