"""Editing specs the Build page's way: fields round trip, stage edits, block changes."""
from __future__ import annotations

import pytest

from lib.model import edit
from lib.model.net import count_params
from lib.model.presets import PRESETS
from lib.model.spec import stage_output_sizes


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_fields_round_trip_every_preset(name):
    spec = PRESETS[name]
    again = edit.from_fields(spec, edit.to_fields(spec))
    assert again.validate() and count_params(again) == count_params(spec)
    assert again.to_dict() == edit.from_fields(again, edit.to_fields(again)).to_dict()


def test_fields_carry_widget_types_and_only_the_block_options():
    fields = edit.to_fields(PRESETS["mobilenet_v2"])
    assert isinstance(fields["stage1.expansion"], float) and isinstance(fields["stage1.out_chs"], int)
    assert "stage1.groups" not in fields and "stage1.kernel_size" in fields
    bottleneck = edit.to_fields(PRESETS["resnext50_32x4d"])
    assert (bottleneck["stage0.groups"], bottleneck["stage0.base_width"]) == (32, 4)


def test_from_fields_edits_values_and_ignores_options_a_block_lacks():
    spec = PRESETS["face_resnet"]
    edited = edit.from_fields(spec, {"stage2.depth": 3, "stage2.groups": 8, "head.dropout": 0.5, "input_size": 96})
    assert edited.stages[2].depth == 3 and edited.stages[2].groups is None
    assert (edited.head.dropout, edited.input_size) == (0.5, 96)
    patchify = edit.from_fields(spec, {"stem.kind": "patchify", "stem.kernel_size": 2})
    assert (patchify.stem.kernel_size, patchify.stem.stride) == (2, 2)


def test_add_stage_halves_the_size_and_doubles_the_width_until_2x2():
    spec = PRESETS["face_resnet"]  # 8x8 after its last stage
    for expected_size in (4, 2):
        spec = edit.add_stage(spec)
        assert stage_output_sizes(spec)[-1] == expected_size
        assert spec.stages[-1].out_chs == 2 * spec.stages[-2].out_chs
    spec = edit.add_stage(spec)
    assert spec.stages[-1].stride == 1 and spec.stages[-1].out_chs == spec.stages[-2].out_chs
    empty = edit.add_stage(edit.remove_stage(edit.blank_spec(), 0))
    assert len(empty.stages) == 1 and empty.validate()


def test_move_and_remove_stages():
    spec = PRESETS["face_resnet"]
    moved = edit.move_stage(spec, 1, -1)
    assert moved.stages[:2] == (spec.stages[1], spec.stages[0])
    assert edit.move_stage(spec, 0, -1) == spec and edit.move_stage(spec, 3, 1) == spec
    assert edit.remove_stage(spec, 3).stages == spec.stages[:3]
    with pytest.raises(ValueError, match="no stage 4"):
        edit.remove_stage(spec, 4)


def test_change_block_resets_options_and_keeps_se():
    spec = edit.from_fields(PRESETS["face_se_resnet"], {})
    changed = edit.change_block(spec, 0, "inverted_residual")
    assert changed.stages[0].block_options()["expansion"] == 6 and changed.stages[0].se_ratio == 0.25
    assert edit.change_block(changed, 0, "convnext").stages[0].se_ratio is None
    with pytest.raises(ValueError, match=r"stages\[0\].block"):
        edit.change_block(spec, 0, "transformer")


def test_change_stem_kind_gives_a_valid_stem():
    spec = edit.change_stem_kind(PRESETS["face_resnet"], "patchify")
    assert (spec.stem.kernel_size, spec.stem.stride, spec.stem.out_chs) == (4, 4, 32) and spec.validate()
    back = edit.change_stem_kind(spec, "conv")
    assert back.stem.kernel_size % 2 == 1 and back.stem.act == "relu" and back.validate()


def test_error_field_and_file_stem():
    assert edit.error_field("stages[1].stride: the feature map collapses") == "stages[1].stride"
    assert edit.error_field("parameters: 12 exceeds the budget") == "parameters"
    assert edit.error_field("model spec is not valid JSON: x") == ""
    assert edit.file_stem(edit.blank_spec()) == "my_model"
    assert edit.field_label("stages[3].stride") == "Stage 4 > Stride"
    assert edit.field_label("stem.kernel_size") == "Stem kernel" and edit.field_label("parameters") == "parameters"


def test_classes_for_data_sizes_face_models_and_keeps_imagenet_presets():
    assert edit.classes_for_data(PRESETS["face_resnet"], 40).num_classes == 40
    assert edit.classes_for_data(edit.blank_spec(), 7).num_classes == 7
    assert edit.classes_for_data(PRESETS["resnet50"], 40).num_classes == 1000  # compared with torchvision
    assert edit.classes_for_data(PRESETS["face_resnet"], 0) == PRESETS["face_resnet"]  # unreadable data set
