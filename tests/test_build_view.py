"""What the Build page shows, checked against real torch modules."""
from __future__ import annotations

from torch import nn

from lib.model.blocks import BLOCKS, SqueezeExcite
from lib.model.presets import PRESETS
from lib.model.profile import profile
from lib.model.spec import ModelSpec
from lib.ui.build_notes import BLOCK_NOTES, concept_notes
from lib.ui.build_view import block_alternatives, cost_chart, layer_formulas, layer_rows, parts_table

count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731


def test_alternatives_are_the_real_blocks_at_this_position():
    result = profile(PRESETS["resnet50"])
    stage = result.stages[1]  # 256 -> 512 channels, stride 2, 56x56 in
    rows = block_alternatives(stage.spec, stage.in_shape)
    assert rows[0]["parameters"] == stage.blocks[0].params
    by_label = {row["block"]: row["parameters"] for row in rows}
    assert by_label["4 · ResNet basic block"] == count(BLOCKS["basic"](256, 512, 2))
    assert by_label["7 · MobileNetV2 inverted residual"] == count(BLOCKS["inverted_residual"](256, 512, 2))
    assert by_label["11 · ResNeXt bottleneck 32x4d"] == count(BLOCKS["bottleneck"](256, 512, 2, groups=32, base_width=4))
    assert by_label["10 · Basic block + SE (1/16)"] == count(BLOCKS["basic"](256, 512, 2, se_ratio=1 / 16))


def test_shortcut_column_follows_the_real_block():
    result = profile(PRESETS["mobilenet_v2"])
    first = result.stages[0]  # 32 -> 16 channels: MobileNetV2 keeps no shortcut here
    rows = block_alternatives(first.spec, first.in_shape)
    assert rows[0]["shortcut"] == "no" and not BLOCKS["inverted_residual"](32, 16, 1).use_residual
    assert "10 of 17" in concept_notes(result, 0, 35_000_000)[6]  # torchvision's mobilenet_v2 has 10 shortcuts


def test_alternatives_skip_bottlenecks_too_narrow_to_exist():
    result = profile(PRESETS["face_resnet"])
    labels = [row["block"] for row in block_alternatives(result.stages[0].spec, result.stages[0].in_shape)]
    assert "11 · ResNeXt bottleneck 32x4d" not in labels and "5 · ResNet bottleneck" in labels


def test_layer_rows_and_parts_table_add_up():
    result = profile(PRESETS["face_convnext"])
    block = result.stages[1].blocks[0]
    rows = layer_rows(block)
    assert [row["layer"] for row in rows][:2] == ["downsample.0 (LayerNorm)", "downsample.1 (conv)"]
    shown = sum(int(row["parameters"].rsplit("= ", 1)[1].replace(",", "")) for row in rows if row["parameters"])
    assert shown == block.params
    table = parts_table(result)
    assert sum(row["parameters"] for row in table) == result.params
    assert table[2]["change"] == "size ÷2, channels x2"
    assert list(cost_chart(result).data[0].y) == [row["parameters"] for row in table]


def test_notes_quote_numbers_torch_agrees_with():
    result = profile(PRESETS["resnet18"])
    notes = concept_notes(result, stage_index=2, budget=35_000_000)  # stage3: 128 -> 256 channels
    assert set(notes) == {1, 2, 3, 6, 9, 10, 11, 12, 13}
    separable = nn.Sequential(nn.Conv2d(128, 128, 3, groups=128, bias=False), nn.Conv2d(128, 256, 1, bias=False))
    full = nn.Conv2d(128, 256, 3, bias=False)
    assert f"= **{count(separable):,}** weights, against N·M·K² = **{count(full):,}**" in notes[3]
    assert f"**{count(SqueezeExcite(256, 1 / 16)):,}** parameters" in notes[10]
    assert f"with g = 32: **{count(nn.Conv2d(256, 256, 3, groups=32, bias=False)):,}**" in notes[11]
    assert f"2·C = **{count(nn.BatchNorm2d(256)):,}**" in notes[12]
    assert "÷4" in notes[9] and "8 of 8" in notes[6]
    assert "11,689,512 parameters: 33.4% of the 35,000,000 budget" in notes[13]
    assert set(BLOCK_NOTES) == set(BLOCKS)


def test_notes_for_a_model_without_stages():
    notes = concept_notes(profile(ModelSpec(stages=())), 0, 35_000_000)
    assert "no stage downsamples" in notes[9] and "0 of 0" in notes[6]
    assert "`stem.0`" in notes[1]  # with no blocks, the stem's conv explains the convolution cost


def test_layer_formulas_name_each_rule_once_and_the_rows_give_its_numbers():
    result = profile(PRESETS["face_se_resnet"])
    block = result.stages[1].blocks[0]  # 32 -> 64 channels, stride 2: convs, norms, SE, a 1x1 shortcut
    assert layer_formulas(block) == "conv M·N·K², BatchNorm 2·C, 1x1 conv M·N + N, 1x1 conv M·N"
    conv1 = layer_rows(block)[0]
    assert conv1 == {"layer": "conv1", "parameters": f"32·64·3² = {count(nn.Conv2d(32, 64, 3, bias=False)):,}",
                     "MACs": "18.9M", "output": "64x32x32"}  # 18,432 weights x 32·32 positions = 18,874,368
