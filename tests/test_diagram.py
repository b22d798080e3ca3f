"""Diagrams drawn from the real modules: every convolution of a block appears once, a skip
connection is drawn exactly where the module adds its input, and the network drawing
carries the profile's own counts."""
import re

import pytest
from torch import nn

from lib.model.diagram import block_dot, network_dot, stage_block_dot
from lib.model.net import FaceNet, build_stage
from lib.model.presets import FACE_PRESETS, PRESETS
from lib.model.profile import human, profile
from lib.model.spec import stage_in_chs

NODE = re.compile(r'^\s+"(?P<name>[^"]+)" \[label="(?P<label>[^"]*)"', re.M)
EDGE = re.compile(r'^\s+"(?P<a>[^"]+)" -> "(?P<b>[^"]+)";', re.M)


def nodes(dot: str) -> dict[str, str]:
    return {m["name"]: m["label"] for m in NODE.finditer(dot)}


def edges(dot: str) -> set[tuple[str, str]]:
    return {(m["a"], m["b"]) for m in EDGE.finditer(dot)}


def ancestors(dot: str, node: str) -> set[str]:
    links, found, todo = edges(dot), {node}, [node]
    while todo:
        here = todo.pop()
        for a, b in links:
            if b == here and a not in found:
                found.add(a)
                todo.append(a)
    return found


@pytest.mark.parametrize("name", FACE_PRESETS + ("mobilenet_v2",))
def test_each_stage_block_draws_every_conv_and_its_skip(name):
    spec = PRESETS[name]
    for index, stage in enumerate(spec.stages):
        module = build_stage(stage, stage_in_chs(spec)[index], [0.0] * stage.depth)[0]
        dot = stage_block_dot(spec, index)
        labels = nodes(dot)
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        se_convs = sum(isinstance(m, nn.Conv2d) for n, m in module.named_modules() if n.startswith("se."))
        drawn = [label for label in labels.values() if " conv" in label]
        assert len(drawn) == len(convs) - se_convs, f"{name} stage {index + 1}"  # SE is drawn as one node
        has_skip = getattr(module, "use_residual", True) if stage.block != "dwsep" else False
        if stage.block == "conv":
            has_skip = False
        adds = [n for n, label in labels.items() if label == "+"]
        assert bool(adds) == has_skip, f"{name} stage {index + 1}"
        if adds:  # two branches meet at the sum: the convolutions on one side only
            branches = [a for a, b in edges(dot) if b == adds[0]]
            assert len(branches) == 2
            only_one_side = ancestors(dot, branches[0]) ^ ancestors(dot, branches[1])
            assert any(" conv" in labels[n] for n in only_one_side)


def test_strides_and_widths_are_the_modules_own():
    spec = PRESETS["face_resnet"]
    labels = nodes(stage_block_dot(spec, 1)).values()
    assert "3x3 conv /2\\n32 -> 64" in labels and "1x1 conv /2\\n32 -> 64" in labels


def test_the_network_drawing_carries_the_profiles_counts():
    spec = PRESETS["face_convnext"]
    counted = profile(spec)
    labels = nodes(network_dot(counted))
    assert list(labels) == ["input", "stem"] + [f"stage{i + 1}" for i in range(len(spec.stages))] + ["head"]
    for part in counted.stages:
        assert f"{human(part.params)} params, {human(part.macs)} MACs" in labels[part.name]
    assert sum(p.numel() for p in FaceNet(spec).parameters()) == counted.params


def test_a_hostile_name_cannot_break_out_of_the_label():
    dot = block_dot(nn.Sequential(nn.Conv2d(3, 4, 3)), 'x"]; evil [label="y')
    assert 'label="x\\"]; evil [label=\\"y"' in dot


def test_drawing_leaves_other_threads_forward_passes_alone():
    """On a shared server one session draws while another runs a model: the recording is local
    to its thread (torch.fx's tracing patched nn.Module for every thread and broke such pages)."""
    import threading

    import torch

    model = FaceNet(PRESETS["face_resnet"]).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(images)
    failures: list[str] = []

    def run_model() -> None:
        for _ in range(20):
            try:
                with torch.no_grad():
                    if not torch.equal(model(images), expected):
                        failures.append("a different output")
            except Exception as error:  # noqa: BLE001 - any error in the other thread is the finding
                failures.append(repr(error))

    other = threading.Thread(target=run_model)
    other.start()
    for _ in range(20):
        stage_block_dot(PRESETS["face_convnext"], 1)
    other.join()
    assert failures == []
