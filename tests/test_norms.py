"""Batch, Layer, Group and Instance norm in every block: counted right, and only BatchNorm
lets one image's output depend on the other images of its batch."""
import pytest
import torch
from torch import nn

from lib.model.blocks import BLOCKS, NORMS
from lib.model.net import FaceNet
from lib.model.profile import profile
from lib.model.spec import ModelSpec, StageSpec, StemSpec

BLOCK_OPTIONS = {"bottleneck": {"expansion": 2, "base_width": 32}, "inverted_residual": {"expansion": 2}}


def spec_with(block: str, norm: str) -> ModelSpec:
    stages = (StageSpec(block=block, out_chs=32, depth=2, stride=2, norm=norm, **BLOCK_OPTIONS.get(block, {})),)
    return ModelSpec(stem=StemSpec(out_chs=16), stages=stages, input_size=16, num_classes=5)


@pytest.mark.parametrize("norm", sorted(NORMS))
@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_every_block_takes_every_norm_and_counts_it(block, norm):
    spec = spec_with(block, norm).validate()
    model = FaceNet(spec)
    used = {type(m) for m in model.stages.modules()}
    assert NORMS[norm] in used
    assert profile(spec).params == sum(p.numel() for p in model.parameters())


def test_group_norm_uses_32_groups_where_the_channels_allow():
    assert NORMS["group"](64).num_groups == 32 and NORMS["group"](48).num_groups == 16
    assert NORMS["group"](6).num_groups == 2


@pytest.mark.parametrize("norm,depends", [("batch", True), ("layer", False), ("group", False), ("instance", False)])
def test_only_batchnorm_mixes_the_images_of_a_batch(norm, depends):
    torch.manual_seed(0)
    stages = FaceNet(spec_with("basic", norm)).stages.train()  # the stem keeps its BatchNorm: test the stage
    maps = torch.randn(4, 16, 16, 16)
    alone = stages(maps[:1]) if norm != "batch" else None
    together = stages(maps)
    other_batch = stages(torch.cat([maps[:1], torch.randn(3, 16, 16, 16)]))
    moved = not torch.allclose(together[0], other_batch[0], atol=1e-5)
    assert moved == depends
    if alone is not None:  # per-image statistics: a batch of one trains like any other
        assert torch.allclose(alone[0], together[0], atol=1e-5)


def test_instance_norm_learns_a_scale_and_shift():
    layer = NORMS["instance"](8)
    assert isinstance(layer, nn.InstanceNorm2d) and layer.affine and layer.weight.shape == (8,)
