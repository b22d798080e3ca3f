"""to_source(): a standalone file whose model is FaceNet(spec), weight for weight."""
from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from lib.model.blocks import BLOCKS, NORMS
from lib.model.codegen import to_source
from lib.model.net import FaceNet, count_params
from lib.model.presets import FACE_PRESETS, PRESETS
from lib.model.spec import HeadSpec, ModelSpec, StageSpec, StemSpec

# Every block type, SE, groups, a head conv, a pooled LayerNorm and an embedding, in one small model.
MIXED = ModelSpec(
    name="mixed", stem=StemSpec(kind="conv", out_chs=16, kernel_size=5, stride=2, pool=True, act="silu"),
    stages=(StageSpec(block="conv", out_chs=16, kernel_size=5),
            StageSpec(block="basic", out_chs=24, depth=2, stride=2, se_ratio=0.25),
            StageSpec(block="bottleneck", out_chs=32, depth=2, groups=4, base_width=16, se_ratio=0.125),
            StageSpec(block="inverted_residual", out_chs=32, depth=2, expansion=3, kernel_size=5, se_ratio=0.25),
            StageSpec(block="dwsep", out_chs=40, stride=2, se_ratio=0.25),
            StageSpec(block="convnext", out_chs=48, depth=2, norm="batch", layer_scale=0.5)),
    head=HeadSpec(conv_chs=64, conv_act="relu", pool_norm="layer", embedding_dim=20, dropout=0.2),
    input_size=40, num_classes=11, drop_path_rate=0.1)
# The same model with every norm FaceLab offers, one stage each.
NORMED = replace(MIXED, name="normed", stages=tuple(
    replace(stage, norm=norm) for stage, norm in zip(MIXED.stages, ("group", "instance", "layer", "group",
                                                                     "instance", "group"))))
# Stochastic depth set per stage and DropBlock on the last two stages.
REGULARISED = replace(MIXED, name="regularised", stages=tuple(
    replace(stage, drop_path=0.3 if index == 1 else None, drop_block=0.1 if index >= 4 else 0.0, drop_block_size=2)
    for index, stage in enumerate(MIXED.stages)))
PATCHIFY = replace(PRESETS["face_convnext"], name="patchify", stages=PRESETS["face_convnext"].stages[:2])


def load_generated(spec: ModelSpec) -> dict:
    namespace = {"__name__": "generated"}
    exec(compile(to_source(spec), f"<{spec.name}>", "exec"), namespace)  # noqa: S102 (our own generated code)
    return namespace


def randomize(model: torch.nn.Module) -> None:
    """Random weights and BatchNorm statistics, so every parameter and buffer matters."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor) * 0.2)


@pytest.mark.parametrize("spec", [MIXED, NORMED, REGULARISED, PATCHIFY, *(PRESETS[n] for n in FACE_PRESETS)],
                         ids=["mixed", "normed", "regularised", "patchify", *FACE_PRESETS])
def test_generated_model_loads_facelab_weights_and_gives_the_same_outputs(spec):
    reference = FaceNet(spec)
    randomize(reference)
    generated = load_generated(spec)["build_model"]()
    assert list(generated.state_dict()) == list(reference.state_dict())
    generated.load_state_dict(reference.state_dict())  # strict: same names and shapes
    reference.eval()
    generated.eval()
    size = min(spec.input_size, 32)  # the weights do not depend on the image size; keep the test quick
    images = torch.randn(2, spec.in_chs, size, size)
    with torch.no_grad():
        assert torch.equal(generated(images), reference(images))
        assert torch.equal(generated.embed(images), reference.embed(images))
        assert torch.equal(generated.features(images), reference.features(images))


@pytest.mark.parametrize("name", sorted(set(PRESETS) - set(FACE_PRESETS)))
def test_imagenet_presets_generate_the_same_parameters(name):
    spec = PRESETS[name]
    with torch.device("meta"):
        generated = load_generated(spec)["build_model"]()
        reference = FaceNet(spec)
    assert {k: v.shape for k, v in generated.state_dict().items()} == \
           {k: v.shape for k, v in reference.state_dict().items()}
    assert sum(p.numel() for p in generated.parameters()) == count_params(spec)


def test_training_behaviour_carries_over():
    """Dropout and stochastic depth rates are written out, so train mode behaves alike."""
    spec = replace(MIXED, drop_path_rate=0.3)
    reference, generated = FaceNet(spec), load_generated(spec)["build_model"]()
    generated.load_state_dict(reference.state_dict())
    rates = lambda model: [round(m.rate, 4) for m in model.modules() if type(m).__name__ == "DropPath"]  # noqa: E731
    assert rates(generated) == rates(reference) and max(rates(generated)) == 0.3
    assert generated.dropout.p == reference.dropout.p == 0.2


def test_source_imports_only_torch_and_defines_only_used_blocks():
    source = to_source(PRESETS["face_resnet"])
    tree = ast.parse(source)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"torch", "__future__"}
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    norms = {cls.__name__ for cls in NORMS.values()} - {"BatchNorm2d"}  # make_norm's table: norms are options
    assert classes - norms == {"BasicBlock", "DropPath", "SqueezeExcite", "FaceNet"}  # SE: an option of the block
    unused = {BLOCKS[name].__name__ for name in BLOCKS} - {"BasicBlock"}
    assert not unused & classes
    assert "count(" not in source and "options = {" not in source  # FaceLab's own bookkeeping stays out


def test_source_quotes_the_real_numbers():
    source = to_source(PRESETS["resnet18"])
    assert "11,689,512 parameters" in source and "1.81G MACs" in source and "1 MAC = 2 FLOPs" in source
    assert "make_stage(BasicBlock, 64, 128, depth=2, stride=2," in source


def test_generated_file_runs_on_its_own(tmp_path):
    path = tmp_path / "face_mobilenet.py"
    path.write_text(to_source(PRESETS["face_mobilenet"]))
    # -I: isolated mode, so nothing from this repository is importable; only torch
    done = subprocess.run([sys.executable, "-I", str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"{count_params(PRESETS['face_mobilenet']):,} parameters; "
                                   "logits (2, 298); embedding (2, 256)")


def test_impossible_spec_is_refused():
    with pytest.raises(ValueError, match=r"stages\[0\].depth"):
        to_source(ModelSpec(stages=(StageSpec(depth=0),)))
