"""Stochastic depth per stage and DropBlock: training-only, invisible to a checkpoint, and
editable on the Build page without changing what the model's own rule gives."""
from dataclasses import replace

import pytest
import torch
from torchvision.ops import DropBlock2d

from lib.model.edit import from_fields, to_fields
from lib.model.net import FaceNet, drop_path_rates
from lib.model.presets import PRESETS
from lib.model.spec import ModelSpec

BASE = replace(PRESETS["face_resnet"], drop_path_rate=0.3)


def with_stages(spec: ModelSpec, **changes_by_index) -> ModelSpec:
    stages = list(spec.stages)
    for key, changes in changes_by_index.items():
        index = int(key[1:])
        stages[index] = replace(stages[index], **changes)
    return replace(spec, stages=tuple(stages))


def test_the_linear_rule_and_a_stage_of_its_own():
    assert drop_path_rates(BASE) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    own = with_stages(BASE, s1={"drop_path": 0.5})
    assert drop_path_rates(own) == pytest.approx([0.0, 0.5, 0.2, 0.3])
    built = [m.rate for m in FaceNet(own).modules() if type(m).__name__ == "DropPath"]
    assert built == pytest.approx([0.0, 0.5, 0.2, 0.3])


def test_dropblock_trains_only_and_leaves_the_weights_alone():
    torch.manual_seed(0)
    plain = FaceNet(BASE)
    blocked = FaceNet(with_stages(BASE, s2={"drop_block": 0.3, "drop_block_size": 3}))
    assert isinstance(blocked.stages[2][-1], DropBlock2d) and blocked.stages[2][-1].block_size == 3
    assert list(blocked.state_dict()) == list(plain.state_dict())  # checkpoints load either way
    blocked.load_state_dict(plain.state_dict())
    images = torch.randn(4, 3, 64, 64)
    plain.eval(), blocked.eval()
    with torch.no_grad():
        assert torch.equal(plain.embed(images), blocked.embed(images))
        blocked.train()
        maps = blocked.stages[:3](blocked.stem(images))
    assert (maps == 0).float().mean() > 0.05  # whole squares of the map are zeroed in training


def test_build_fields_show_the_rule_and_keep_it_unless_changed():
    values = to_fields(BASE)
    assert [values[f"stage{i}.drop_path"] for i in range(4)] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert values["stage0.drop_block"] == 0.0 and values["stage0.drop_block_size"] == 3
    unchanged = from_fields(BASE, values)
    assert [stage.drop_path for stage in unchanged.stages] == [None] * 4
    values["stage3.drop_path"], values["stage3.drop_block"] = 0.6, 0.2
    changed = from_fields(BASE, values)
    assert changed.stages[3].drop_path == 0.6 and changed.stages[3].drop_block == 0.2
    assert drop_path_rates(replace(changed, drop_path_rate=0.0))[3] == 0.6  # its own rate, whatever the rule


@pytest.mark.parametrize("field,value", [("drop_path", 0.95), ("drop_block", 0.6), ("drop_block_size", 0)])
def test_out_of_range_regularisation_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"stages\[1\]\.{field}"):
        with_stages(BASE, s1={field: value}).validate()


def test_specs_without_regularisation_write_as_before_and_round_trip():
    old = BASE.to_dict()
    assert all(key not in stage for stage in old["stages"] for key in ("drop_path", "drop_block", "drop_block_size"))
    assert ModelSpec.from_dict(old) == BASE
    regularised = with_stages(BASE, s2={"drop_block": 0.1, "drop_path": 0.2})
    written = regularised.to_dict()["stages"][2]
    assert (written["drop_block"], written["drop_path"]) == (0.1, 0.2)
    assert ModelSpec.from_json(regularised.to_json()) == regularised
