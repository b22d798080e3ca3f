"""Blocks, specs and presets: shapes, gradients, options, SE, stochastic depth,
validation errors, JSON round trip, and parameter counts against torchvision."""
from __future__ import annotations

import inspect
from dataclasses import fields, replace

import pytest
import torch
import torchvision
from torch import nn

from lib.model.blocks import BLOCKS, DropPath, LayerNorm2d, SqueezeExcite
from lib.model.net import FaceNet, count_params
from lib.model.presets import PRESETS
from lib.model.spec import HeadSpec, ModelSpec, StageSpec, StemSpec
from tests.block_cases import BLOCK_CASES, CASE_IDS, CASES

SIZE = 9  # odd, so a stride-2 block has to round


def test_every_registered_block_is_exercised():
    assert set(BLOCK_CASES) == set(BLOCKS)


@pytest.mark.parametrize("name,in_chs,out_chs,stride,options", CASES, ids=CASE_IDS)
def test_block_shape_and_backward(name, in_chs, out_chs, stride, options):
    torch.manual_seed(0)
    block = BLOCKS[name](in_chs, out_chs, stride, **options)
    x = torch.randn(2, in_chs, SIZE, SIZE, requires_grad=True)
    out = block(x)
    # 3x3 padding-1 stride 2 on 9 gives 5; ConvNeXt's 2x2 stride-2 downsampling gives 4
    expected = SIZE if stride == 1 else (4 if name == "convnext" else 5)
    assert out.shape == (2, out_chs, expected, expected)
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, param in block.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_options_are_constructor_arguments_and_spec_fields(name):
    cls = BLOCKS[name]
    signature = inspect.signature(cls.__init__).parameters
    stage_fields = {f.name for f in fields(StageSpec)}
    for option, default in cls.options.items():
        assert signature[option].default == default, option
        assert option in stage_fields, option
    assert "drop_path" in signature  # every block accepts a stochastic depth rate


def test_bottleneck_groups_match_torchvision_resnext():
    ours = BLOCKS["bottleneck"](64, 256, 1, groups=32, base_width=4)
    theirs = torchvision.models.resnext50_32x4d().layer1[0]
    assert ours.spatial[0].weight.shape == theirs.conv2.weight.shape == (128, 4, 3, 3)
    assert ours.spatial[0].groups == theirs.conv2.groups == 32
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


def test_options_reach_the_layers():
    ir = BLOCKS["inverted_residual"](8, 8, 1, expansion=4, kernel_size=5)
    assert ir.depthwise[0].weight.shape == (32, 1, 5, 5) and ir.depthwise[0].groups == 32
    assert isinstance(BLOCKS["inverted_residual"](8, 8, 1, expansion=1).expand, nn.Identity)
    convnext = BLOCKS["convnext"](8, 8, 1, norm="batch", layer_scale=0.0, kernel_size=3)
    assert isinstance(convnext.norm, nn.BatchNorm2d) and convnext.gamma is None
    assert convnext.depthwise.weight.shape == (8, 1, 3, 3)
    assert isinstance(BLOCKS["convnext"](8, 8).norm, LayerNorm2d)
    assert isinstance(BLOCKS["basic"](8, 8, act="gelu").act1, nn.GELU)
    assert BLOCKS["conv"](4, 8, kernel_size=7).conv[0].weight.shape == (8, 4, 7, 7)


@pytest.mark.parametrize("name", [n for n in sorted(BLOCKS) if "se_ratio" in BLOCKS[n].options])
def test_se_adds_exactly_its_two_1x1_convs(name):
    in_chs, out_chs = 16, 16
    plain = BLOCKS[name](in_chs, out_chs, 1)
    with_se = BLOCKS[name](in_chs, out_chs, 1, se_ratio=0.25)
    se = [m for m in with_se.modules() if isinstance(m, SqueezeExcite)]
    assert len(se) == 1
    channels = se[0].reduce.in_channels
    squeezed = round(channels * 0.25)
    extra = 2 * channels * squeezed + channels + squeezed  # two 1x1 convs with bias
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(with_se) - count(plain) == extra


def test_squeeze_excite_rescales_channels_by_the_gate():
    se = SqueezeExcite(4, 0.5)
    nn.init.zeros_(se.expand.weight)
    nn.init.zeros_(se.expand.bias)
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(se(x), 0.5 * x)  # sigmoid(0) = 0.5 for every channel
    nn.init.constant_(se.expand.bias, 100.0)  # gate saturates at 1: the map passes unchanged
    torch.testing.assert_close(se(x), x)


def test_drop_path_drops_whole_samples_and_rescales():
    torch.manual_seed(0)
    x = torch.rand(400, 3, 2, 2) + 0.1
    drop = DropPath(0.5)
    assert drop.eval()(x) is x
    assert DropPath(0.0).train()(x) is x
    out = drop.train()(x)
    dropped = (out == 0).flatten(1).all(1)
    kept = torch.isclose(out, 2 * x).flatten(1).all(1)
    assert bool((dropped | kept).all())
    assert 150 < int(kept.sum()) < 250


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_residual_flag_and_drop_path_in_blocks(name):
    torch.manual_seed(0)
    block = BLOCKS[name](8, 8, 1, drop_path=0.5).train()
    x = torch.rand(64, 8, 5, 5)  # non-negative: a final ReLU leaves the shortcut unchanged
    out = block(x)
    shortcut_only = (out == x).flatten(1).all(1)
    if BLOCKS[name].has_residual:
        # a dropped residual branch leaves exactly the shortcut; about half are dropped
        assert 10 < int(shortcut_only.sum()) < 54
    else:
        reference = BLOCKS[name](8, 8, 1, drop_path=0.0).train()
        reference.load_state_dict(block.state_dict())
        torch.testing.assert_close(out, reference(x))  # no residual branch: nothing to drop


# -- specs ----------------------------------------------------------------------------------

BASE = ModelSpec(stem=StemSpec(out_chs=8), stages=(StageSpec(block="basic", out_chs=8),), input_size=16)


def _stage(**changes) -> ModelSpec:
    return replace(BASE, stages=(replace(BASE.stages[0], **changes),))


INVALID = [
    (_stage(block="resnet"), "stages[0].block", "'resnet'"),
    (_stage(stride=3), "stages[0].stride", "3"),
    (_stage(depth=0), "stages[0].depth", "0"),
    (_stage(depth="2"), "stages[0].depth", "'2'"),
    (_stage(out_chs=0), "stages[0].out_chs", "0"),
    (_stage(groups=2), "stages[0].groups", "no 'groups' option"),
    (_stage(act="tanh"), "stages[0].act", "'tanh'"),
    (_stage(block="inverted_residual", kernel_size=4), "stages[0].kernel_size", "4"),
    (_stage(block="inverted_residual", expansion=0), "stages[0].expansion", "0"),
    (_stage(block="bottleneck", out_chs=2), "stages[0].out_chs", "2"),
    (_stage(block="bottleneck", groups=0), "stages[0].groups", "0"),
    (_stage(block="convnext", norm="weight"), "stages[0].norm", "'weight'"),
    (replace(_stage(block="inverted_residual", expansion=0.25), stem=StemSpec(out_chs=1)),
     "stages[0].expansion", "0 hidden channels"),
    (replace(BASE, stem=StemSpec(kind="patchify", out_chs=8, kernel_size=4, stride=4), input_size=8,
             stages=(StageSpec(block="convnext", out_chs=8, stride=2), StageSpec(block="convnext", out_chs=8, stride=2))),
     "stages[1].stride", "collapses below 1x1"),
    (replace(BASE, stem=StemSpec(kernel_size=4)), "stem.kernel_size", "4"),
    (replace(BASE, stem=StemSpec(kind="patchify", kernel_size=4, stride=2)), "stem.stride", "2"),
    (replace(BASE, stem=StemSpec(kind="pixelshuffle")), "stem.kind", "'pixelshuffle'"),
    (replace(BASE, input_size=4), "input_size", "4"),
    (replace(BASE, num_classes=0), "num_classes", "0"),
    (replace(BASE, drop_path_rate=2.0), "drop_path_rate", "2.0"),
    (replace(BASE, head=HeadSpec(dropout=1.5)), "head.dropout", "1.5"),
    (replace(BASE, head=HeadSpec(pool_norm="batch")), "head.pool_norm", "'batch'"),
    (replace(BASE, head=HeadSpec(embedding_dim=-1)), "head.embedding_dim", "-1"),
]


@pytest.mark.parametrize("spec,field,value", INVALID, ids=[f"{f}={v}" for _, f, v in INVALID])
def test_impossible_specs_name_the_field_and_value(spec, field, value):
    with pytest.raises(ValueError) as info:
        spec.validate()
    message = str(info.value)
    assert message.startswith(field), message
    assert value in message, message


@pytest.mark.parametrize("text,message", [
    ("[1, 2]", "must be a JSON object"),
    ("{not json", "not valid JSON"),
    ('{"stages": [{"blocks": "basic"}]}', "stages[0]: unknown field 'blocks'"),
    ('{"stem": 3}', "stem must be a JSON object"),
])
def test_bad_json_is_a_clear_value_error(text, message):
    with pytest.raises(ValueError) as info:
        ModelSpec.from_json(text)
    assert message in str(info.value)


FULL = ModelSpec(name="every field",
                 stem=StemSpec(kind="conv", out_chs=24, kernel_size=5, stride=2, pool=True, act="silu"),
                 stages=(StageSpec(block="bottleneck", out_chs=64, depth=2, stride=2, expansion=2, groups=4,
                                   base_width=16, se_ratio=0.125, act="relu"),
                         StageSpec(block="convnext", out_chs=96, depth=1, stride=2, expansion=3, kernel_size=5,
                                   norm="batch", layer_scale=0.5, act="gelu")),
                 head=HeadSpec(conv_chs=128, conv_act="relu", pool_norm="layer", embedding_dim=32, dropout=0.3),
                 input_size=48, in_chs=1, num_classes=7, drop_path_rate=0.2)


@pytest.mark.parametrize("spec", [*PRESETS.values(), FULL], ids=[*PRESETS, "full"])
def test_json_round_trip(spec):
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert again.to_dict() == spec.to_dict()
    assert count_params(again) == count_params(spec)


# -- presets against torchvision --------------------------------------------------------------

TORCHVISION = ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "convnext_tiny", "resnext50_32x4d"]


def _torchvision_params(name: str) -> int:
    with torch.device("meta"):
        model = getattr(torchvision.models, name)()
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", TORCHVISION)
def test_imagenet_presets_have_torchvision_parameter_counts(name):
    assert count_params(PRESETS[name]) == _torchvision_params(name)


def test_reference_numbers_from_the_design_table():
    expected = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                "mobilenet_v2": 3_504_872, "convnext_tiny": 28_589_128}
    assert {name: count_params(PRESETS[name]) for name in expected} == expected


def test_se_resnet50_adds_one_squeeze_excite_per_bottleneck():
    # SE on a bottleneck's C output channels with reduction 16: 2*C*C/16 weights + C + C/16 biases
    extra = sum(depth * (2 * c * (c // 16) + c + c // 16)
                for c, depth in zip((256, 512, 1024, 2048), (3, 4, 6, 3)))
    assert count_params(PRESETS["se_resnet50"]) == _torchvision_params("resnet50") + extra


@pytest.mark.parametrize("name", ["face_resnet", "face_se_resnet", "face_mobilenet", "face_convnext"])
def test_face_presets_are_small_and_embed_to_256(name):
    spec = PRESETS[name]
    assert (spec.input_size, spec.num_classes, spec.head.embedding_dim) == (64, 298, 256)
    assert count_params(spec) < 5_000_000  # trains in minutes on a laptop CPU
    model = FaceNet(spec).eval()
    with torch.no_grad():
        images = torch.randn(2, 3, 64, 64)
        assert model.embed(images).shape == (2, 256)
        assert model(images).shape == (2, 298)
