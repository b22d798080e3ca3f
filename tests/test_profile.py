"""profile() against the real modules: parameters, FlopCounterMode MACs, the values
each layer writes and its output shape, layer by layer, for every block and preset."""
from __future__ import annotations

import random

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lib.model.blocks import BLOCKS
from lib.model.counting import Tally
from lib.model.net import FaceNet, count_params
from lib.model.presets import PRESETS
from lib.model.profile import human, profile
from lib.model.spec import HeadSpec, ModelSpec, StageSpec, StemSpec
from tests.block_cases import CASE_IDS, CASES


def measure(module: nn.Module, x: torch.Tensor) -> tuple[dict, dict, int]:
    """What the real module does, per layer: {name: (params, macs, values written)},
    {leaf name: output shape}, and the FlopCounterMode total MACs."""
    written, shapes, hooks = {}, {}, []
    for name, sub in module.named_modules():
        if not list(sub.children()):
            def hook(_, inputs, output, name=name):
                written[name] = 0 if output is inputs[0] else output.numel()  # identity writes nothing
                shapes[name] = tuple(output.shape[1:])
            hooks.append(sub.register_forward_hook(hook))
    counter = FlopCounterMode(display=False)
    with counter:
        module(x)
    for handle in hooks:
        handle.remove()
    flops = counter.get_flop_counts()
    root = type(module).__name__
    rows = {}
    for name, sub in module.named_modules():
        if not list(sub.children()):
            macs = sum(flops.get(f"{root}.{name}", {}).values()) // 2
            rows[name] = (sum(p.numel() for p in sub.parameters()), macs, written.get(name, 0))
        else:  # parameters a composite module holds itself (ConvNeXt's layer scale)
            for pname, param in sub.named_parameters(recurse=False):
                rows[f"{name}.{pname}" if name else pname] = (param.numel(), 0, 0)
    rows = {name: row for name, row in rows.items() if any(row)}
    shapes = {name: shape for name, shape in shapes.items() if name in rows}
    return rows, shapes, counter.get_total_flops() // 2


def counted(layers) -> tuple[dict, dict]:
    rows = {layer.name: (layer.params, layer.macs, layer.activations) for layer in layers}
    shapes = {layer.name: layer.out_shape for layer in layers if layer.activations}
    return rows, shapes


@pytest.mark.parametrize("name,in_chs,out_chs,stride,options", CASES, ids=CASE_IDS)
def test_block_count_matches_the_real_block_layer_by_layer(name, in_chs, out_chs, stride, options):
    with torch.device("meta"):
        block = BLOCKS[name](in_chs, out_chs, stride, **options).eval()
        rows, shapes, total = measure(block, torch.zeros(1, in_chs, 9, 9))
    tally = BLOCKS[name].count(Tally(in_chs, 9), out_chs, stride, **options)
    assert counted(tally.layers) == (rows, shapes)
    assert tally.macs == total
    assert tally.params == sum(p.numel() for p in block.parameters())


def check_model(spec: ModelSpec) -> None:
    """profile(spec) equals the real FaceNet per layer, per block, per stage and in total."""
    result = profile(spec)
    with torch.device("meta"):
        model = FaceNet(spec).eval()
        x = torch.zeros(1, spec.in_chs, spec.input_size, spec.input_size)
        rows, shapes, total_macs = measure(model, x)
        stage_shapes, y = [], model.stem(x)
        for stage in model.stages:
            y = stage(y)
            stage_shapes.append(tuple(y.shape[1:]))
    assert counted(result.layers()) == (rows, shapes)
    assert result.macs == total_macs
    assert result.params == sum(p.numel() for p in model.parameters()) == count_params(spec)
    assert result.activation_bytes == 4 * sum(row[2] for row in rows.values())
    for stage_profile, stage_module, shape in zip(result.stages, model.stages, stage_shapes):
        assert stage_profile.params == sum(p.numel() for p in stage_module.parameters())
        assert stage_profile.out_shape == shape
        for block_profile, block_module in zip(stage_profile.blocks, stage_module):
            assert block_profile.params == sum(p.numel() for p in block_module.parameters())
    assert result.stem.params == sum(p.numel() for p in model.stem.parameters())
    assert result.head.out_shape == (spec.num_classes,)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_match_the_real_model_and_flop_counter(name):
    check_model(PRESETS[name])


TORCHVISION = ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "convnext_tiny", "resnext50_32x4d"]


@pytest.mark.parametrize("name", TORCHVISION)
def test_imagenet_presets_have_torchvision_macs(name):
    with torch.device("meta"):
        model = getattr(torchvision.models, name)().eval()
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.zeros(1, 3, 224, 224))
    result = profile(PRESETS[name])
    assert result.macs == counter.get_total_flops() // 2
    assert result.params == sum(p.numel() for p in model.parameters())


def test_design_table_numbers():
    assert profile(PRESETS["resnet18"]).macs == 1_814_073_344  # 1.814G, as torchvision reports
    assert round(profile(PRESETS["convnext_tiny"]).macs / 1e9, 3) == 4.456
    assert round(profile(PRESETS["mobilenet_v2"]).macs / 1e9, 3) == 0.301


def _random_spec(rng: random.Random) -> ModelSpec:
    stages = []
    for _ in range(rng.randint(1, 3)):
        block = rng.choice(sorted(BLOCKS))
        allowed = BLOCKS[block].options
        choices = {"expansion": [1, 2, 4, 6], "kernel_size": [1, 3, 5, 7], "se_ratio": [0.0, 0.25],
                   "groups": [1, 2, 4], "norm": ["batch", "layer"], "layer_scale": [0.0, 1e-6],
                   "act": ["relu", "gelu", "none"]}
        options = {key: rng.choice(values) for key, values in choices.items() if key in allowed}
        stages.append(StageSpec(block=block, out_chs=rng.choice([4, 8, 16]), depth=rng.randint(1, 2),
                                stride=rng.choice([1, 2]), **options))
    patchify = rng.random() < 0.3
    stem = (StemSpec(kind="patchify", out_chs=8, kernel_size=2, stride=2) if patchify else
            StemSpec(out_chs=rng.choice([4, 8]), kernel_size=rng.choice([3, 5]), stride=rng.choice([1, 2]),
                     pool=rng.random() < 0.5, act=rng.choice(["relu", "none"])))
    head = HeadSpec(conv_chs=rng.choice([0, 12]), pool_norm=rng.choice(["none", "layer"]),
                    embedding_dim=rng.choice([0, 6]), dropout=0.1)
    return ModelSpec(stem=stem, stages=tuple(stages), head=head, input_size=rng.choice([15, 16]),
                     in_chs=rng.choice([1, 3]), num_classes=5)


def test_random_specs_match_the_real_model():
    rng, checked = random.Random(7), 0
    while checked < 25:
        spec = _random_spec(rng)
        try:
            spec.validate()
        except ValueError:
            continue
        check_model(spec)
        checked += 1


def _evaluate(numbers: str) -> int:
    """'(16/4)·32·3² + 32' -> 4*32*9 + 32: the arithmetic the Build page shows, done independently."""
    expression = numbers.replace("·", "*").replace("²", "**2").replace("/", "//")
    return eval(expression, {"__builtins__": {}}) if expression else 0  # noqa: S307 (digits and operators only)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_shown_formula_adds_up_to_the_layer_params(name):
    for layer in profile(PRESETS[name]).layers():
        assert _evaluate(layer.numbers) == layer.params, layer


def test_to_dict_rows_add_up_to_the_totals():
    result = profile(PRESETS["face_mobilenet"])
    data = result.to_dict()
    assert set(data) == {"params", "macs", "stages"}
    assert [row["name"] for row in data["stages"]] == ["stem", "stage1", "stage2", "stage3", "stage4", "stage5", "head"]
    assert all(set(row) == {"name", "params", "macs", "out_shape"} for row in data["stages"])
    assert sum(row["params"] for row in data["stages"]) == data["params"] == count_params(PRESETS["face_mobilenet"])
    assert sum(row["macs"] for row in data["stages"]) == data["macs"]
    assert data["stages"][1]["out_shape"] == [16, 64, 64]


def test_profile_rejects_an_impossible_spec():
    spec = ModelSpec(stages=(StageSpec(block="basic", stride=3),))
    with pytest.raises(ValueError, match=r"stages\[0\].stride"):
        profile(spec)


def test_human_numbers():
    assert [human(11_689_512), human(1_814_073_344), human(512), human(2048, "B")] == ["11.7M", "1.81G", "512", "2.05kB"]
