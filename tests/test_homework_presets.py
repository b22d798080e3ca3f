"""The homework's real setting (7,000 identities, 112 px): which classic networks fit the
35M budget, checked against torchvision's own models with 7,000 classes."""
import pytest
import torch
from torchvision import models

from lib.base.config import PARAMETER_BUDGET
from lib.model.net import FaceNet
from lib.model.presets import HOMEWORK_PRESETS, PRESETS, budget_rows
from lib.model.profile import profile

TORCHVISION = {"hw2p2_resnet18": models.resnet18, "hw2p2_resnet34": models.resnet34,
               "hw2p2_resnet50": models.resnet50, "hw2p2_mobilenet_v2": models.mobilenet_v2,
               "hw2p2_convnext_tiny": models.convnext_tiny}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_homework_presets_count_what_torchvision_builds(name):
    with torch.device("meta"):
        reference = TORCHVISION[name](num_classes=7000)
    assert profile(PRESETS[name]).params == sum(p.numel() for p in reference.parameters())


def test_the_budget_verdicts_of_the_course_setting():
    rows = {row["preset"]: row for row in budget_rows(PARAMETER_BUDGET)}
    assert set(HOMEWORK_PRESETS) <= set(rows) and len(rows) == len(PRESETS)
    # ResNet-50 (37.9M) and SE-ResNet-50 (40.4M) break the budget at 7,000 classes; ConvNeXt-T (33.2M) fits.
    assert round(rows["hw2p2_resnet50"]["parameters"] / 1e6, 1) == 37.9 and not rows["hw2p2_resnet50"]["within budget"]
    assert round(rows["hw2p2_se_resnet50"]["parameters"] / 1e6, 1) == 40.4
    assert not rows["hw2p2_se_resnet50"]["within budget"]
    assert round(rows["hw2p2_convnext_tiny"]["parameters"] / 1e6, 1) == 33.2
    assert rows["hw2p2_convnext_tiny"]["within budget"]
    for row in rows.values():
        assert row["within budget"] == (row["parameters"] <= PARAMETER_BUDGET)


def test_a_homework_preset_runs_at_112_px():
    spec = PRESETS["hw2p2_resnet18"]
    with torch.device("meta"):
        logits = FaceNet(spec)(torch.empty(2, 3, 112, 112))
    assert tuple(logits.shape) == (2, 7000)
