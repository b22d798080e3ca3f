"""Receptive fields from the module graph, checked against the gradient of real models:
the input pixels whose gradient is non-zero for one output position are the pixels it sees."""
import pytest
import torch
from torch import nn

from lib.model.blocks import SqueezeExcite
from lib.model.net import FaceNet
from lib.model.presets import PRESETS
from lib.model.receptive import Field, module_field, stage_fields
from lib.model.spec import ModelSpec, StageSpec, StemSpec


def measured_field(body: nn.Module, size: int) -> int:
    """Width of the input region that moves the centre output position (float64, eval mode)."""
    body = body.double().eval()
    for module in body.modules():
        if isinstance(module, (nn.ReLU, nn.ReLU6)):  # a dead ReLU could hide an edge pixel
            module.forward = lambda x: x
        if isinstance(module, SqueezeExcite):  # its gate pools the whole image: the field is the conv path's
            module.forward = lambda x: x
    image = torch.randn(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    out = body(image)
    centre = out[0, :, out.shape[2] // 2, out.shape[3] // 2]
    # A random mix of channels: a plain sum after LayerNorm (channels summing to zero) has no gradient.
    (centre * torch.randn_like(centre)).sum().backward()
    columns = image.grad[0].abs().sum(dim=(0, 1)).nonzero().flatten()
    return int(columns.max() - columns.min() + 1)


def test_two_3x3_convs_see_what_one_5x5_sees():
    two = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    one = nn.Conv2d(3, 8, 5, padding=2)
    assert module_field(two) == module_field(one) == Field(5, 1)
    assert measured_field(two, 32) == measured_field(one, 32) == 5


def test_resnet18_matches_the_published_field():
    # ResNet-18's last stage sees 435 pixels (jump 32): the figure quoted for torchvision's model.
    assert stage_fields(FaceNet(PRESETS["resnet18"]))[-1] == Field(435, 32)


@pytest.mark.parametrize("name", ["face_resnet", "face_mobilenet", "face_convnext", "face_se_resnet"])
def test_every_stage_matches_the_gradient(name):
    spec = PRESETS[name]
    model = FaceNet(spec)
    fields = stage_fields(model)
    layers = [model.stem] + list(model.stages)
    for depth, field in enumerate(fields):
        body = nn.Sequential(*layers[:depth + 1])
        size = max(64, field.size + 4 * field.jump) // field.jump * field.jump + field.jump
        assert measured_field(body, size) == field.size, f"{name}: after {depth} stages"


def test_a_pooling_stem_counts_the_pool():
    spec = ModelSpec(stem=StemSpec(out_chs=8, kernel_size=7, stride=2, pool=True),
                     stages=(StageSpec(block="basic", out_chs=8, depth=1, stride=1),), num_classes=4)
    stem_field = stage_fields(FaceNet(spec))[0]
    assert stem_field == Field(7 + 2 * 2, 4)  # 7x7 stride 2, then a 3x3 pool over a jump of 2
