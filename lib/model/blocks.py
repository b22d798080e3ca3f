"""The building blocks of FaceLab models, one readable nn.Module each.

Every block takes ``(in_chs, out_chs, stride=1, **options)``; the options a
block understands, with their defaults, are listed in its ``options`` class
attribute, so the spec, the Build page and the code generator all learn them
from one place. ``BLOCKS`` maps a block's name to its class.

Each block also has a static ``count(tally, out_chs, stride, **options)`` that
walks the same layers, under the same names, through a lib.model.counting.Tally:
lib/model/profile.py counts a model from it without building one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # blocks describe themselves to a Tally; they never need to import it
    from lib.model.counting import Tally

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "gelu": nn.GELU, "silu": nn.SiLU, "none": nn.Identity}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (ConvNeXt's norm)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = super().forward(x)
        return x.permute(0, 3, 1, 2)


class GroupNorm2d(nn.GroupNorm):
    """GroupNorm (Wu & He 2018) with 32 groups (fewer where the channels do not divide): statistics per image,
    so small batches (or a batch of one) train as well as large ones."""

    def __init__(self, channels: int):
        super().__init__(next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0), channels)


class InstanceNorm2d(nn.InstanceNorm2d):
    """InstanceNorm: each channel of each image normalised on its own (style transfer's norm),
    with a learned scale and shift like the other norms here."""

    def __init__(self, channels: int):
        super().__init__(channels, affine=True)


# BatchNorm averages over the batch; the others normalise each image alone.
NORMS = {"batch": nn.BatchNorm2d, "layer": LayerNorm2d, "group": GroupNorm2d, "instance": InstanceNorm2d}


def make_act(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def make_norm(name: str, channels: int) -> nn.Module:
    return NORMS[name](channels)


class ConvNormAct(nn.Sequential):
    """conv(k, stride, groups) -> norm -> act: the unit most blocks are made of."""

    def __init__(self, in_chs, out_chs, kernel_size=3, stride=1, groups=1, norm="batch", act="relu"):
        super().__init__(
            nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False),
            make_norm(norm, out_chs),
            make_act(act),
        )


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al. 2018): pool -> 1x1 reduce -> ReLU -> 1x1 expand -> sigmoid -> rescale."""

    def __init__(self, channels: int, se_ratio: float):
        super().__init__()
        squeezed = max(1, int(round(channels * se_ratio)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.gate(self.expand(self.act(self.reduce(self.pool(x)))))
        return x * weights


def make_se(channels: int, se_ratio: float) -> nn.Module:
    return SqueezeExcite(channels, se_ratio) if se_ratio > 0 else nn.Identity()


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, drop a residual branch
    for a random subset of samples and rescale the rest; identity in eval."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


def shortcut(in_chs: int, out_chs: int, stride: int, norm: str = "batch") -> nn.Module:
    """ResNet projection shortcut: 1x1 conv + norm when the shape changes, else identity."""
    if stride == 1 and in_chs == out_chs:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), make_norm(norm, out_chs))


def count_shortcut(t: Tally, out_chs: int, stride: int, norm: str = "batch") -> Tally:
    """The shortcut as a branch of ``t`` (join it back after the main path)."""
    skip = t.branch("shortcut.")
    if stride != 1 or t.chs != out_chs:
        skip.conv("0", out_chs, 1, stride).norm("1", norm)
    return skip


class ConvBlock(nn.Module):
    """x -> conv(k) -> BN -> act. A plain VGG-style layer, no shortcut."""

    options = {"kernel_size": 3, "act": "relu", "norm": "batch"}
    has_residual = False

    def __init__(self, in_chs, out_chs, stride=1, kernel_size=3, act="relu", norm="batch", drop_path=0.0):
        super().__init__()
        self.conv = ConvNormAct(in_chs, out_chs, kernel_size, stride, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    @staticmethod
    def count(t: Tally, out_chs, stride=1, kernel_size=3, act="relu", norm="batch", drop_path=0.0) -> Tally:
        """The same layers as __init__, counted on paper (lib/model/counting.py)."""
        return t.conv_norm_act("conv", out_chs, kernel_size, stride, act=act, norm=norm)


class BasicBlock(nn.Module):
    """x -> 3x3 conv -> BN -> ReLU -> 3x3 conv -> BN [-> SE] -> + shortcut(x) -> ReLU. ResNet (He et al. 2016)."""

    options = {"se_ratio": 0.0, "act": "relu", "norm": "batch"}
    has_residual = True

    def __init__(self, in_chs, out_chs, stride=1, se_ratio=0.0, act="relu", norm="batch", drop_path=0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, out_chs)
        self.act1 = make_act(act)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, padding=1, bias=False)
        self.bn2 = make_norm(norm, out_chs)
        self.se = make_se(out_chs, se_ratio)
        self.drop_path = DropPath(drop_path)
        self.shortcut = shortcut(in_chs, out_chs, stride, norm)
        self.act2 = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.act2(self.drop_path(out) + self.shortcut(x))

    @staticmethod
    def count(t: Tally, out_chs, stride=1, se_ratio=0.0, act="relu", norm="batch", drop_path=0.0) -> Tally:
        skip = count_shortcut(t, out_chs, stride, norm)
        t.conv("conv1", out_chs, 3, stride).norm("bn1", norm).act("act1", act)
        t.conv("conv2", out_chs, 3).norm("bn2", norm).squeeze_excite("se", se_ratio)
        return t.join(skip).act("act2", act)


class Bottleneck(nn.Module):
    """x -> 1x1 reduce -> 3x3 (stride, groups) -> 1x1 expand [-> SE] -> + shortcut(x) -> ReLU.
    ResNet v1.5 (stride on the 3x3); groups and base_width make it ResNeXt (Xie et al. 2017)."""

    options = {"expansion": 4, "groups": 1, "base_width": 64, "se_ratio": 0.0, "act": "relu", "norm": "batch"}
    has_residual = True

    def __init__(self, in_chs, out_chs, stride=1, expansion=4, groups=1, base_width=64,
                 se_ratio=0.0, act="relu", norm="batch", drop_path=0.0):
        super().__init__()
        width = bottleneck_width(out_chs, expansion, groups, base_width)
        self.reduce = ConvNormAct(in_chs, width, 1, norm=norm, act=act)
        self.spatial = ConvNormAct(width, width, 3, stride, groups=groups, norm=norm, act=act)
        self.expand = nn.Conv2d(width, out_chs, 1, bias=False)
        self.bn = make_norm(norm, out_chs)
        self.se = make_se(out_chs, se_ratio)
        self.drop_path = DropPath(drop_path)
        self.shortcut = shortcut(in_chs, out_chs, stride, norm)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.spatial(self.reduce(x))
        out = self.se(self.bn(self.expand(out)))
        return self.act(self.drop_path(out) + self.shortcut(x))

    @staticmethod
    def count(t: Tally, out_chs, stride=1, expansion=4, groups=1, base_width=64, se_ratio=0.0,
              act="relu", norm="batch", drop_path=0.0) -> Tally:
        width = bottleneck_width(out_chs, expansion, groups, base_width)
        skip = count_shortcut(t, out_chs, stride, norm)
        t.conv_norm_act("reduce", width, 1, act=act, norm=norm)
        t.conv_norm_act("spatial", width, 3, stride, groups, act=act, norm=norm)
        t.conv("expand", out_chs, 1).norm("bn", norm).squeeze_excite("se", se_ratio)
        return t.join(skip).act("act", act)


def bottleneck_width(out_chs: int, expansion: float, groups: int, base_width: int) -> int:
    """Channels of the 3x3 conv, as torchvision computes them: planes * base_width/64 * groups."""
    planes = int(out_chs / expansion)
    return int(planes * (base_width / 64.0)) * groups


class InvertedResidual(nn.Module):
    """x -> 1x1 expand (t) -> kxk depthwise (stride) [-> SE] -> 1x1 linear project [+ x].
    MobileNetV2 (Sandler et al. 2018): the shortcut joins the thin ends, and the
    projection has no activation (a linear bottleneck)."""

    options = {"expansion": 6, "kernel_size": 3, "se_ratio": 0.0, "act": "relu6", "norm": "batch"}
    has_residual = True

    def __init__(self, in_chs, out_chs, stride=1, expansion=6, kernel_size=3, se_ratio=0.0,
                 act="relu6", norm="batch", drop_path=0.0):
        super().__init__()
        hidden = int(round(in_chs * expansion))
        self.use_residual = stride == 1 and in_chs == out_chs
        self.expand = ConvNormAct(in_chs, hidden, 1, norm=norm, act=act) if expansion != 1 else nn.Identity()
        self.depthwise = ConvNormAct(hidden, hidden, kernel_size, stride, groups=hidden, norm=norm, act=act)
        self.se = make_se(hidden, se_ratio)
        self.project = nn.Conv2d(hidden, out_chs, 1, bias=False)
        self.bn = make_norm(norm, out_chs)
        self.drop_path = DropPath(drop_path) if self.use_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.depthwise(self.expand(x)))
        out = self.bn(self.project(out))
        return x + self.drop_path(out) if self.use_residual else out

    @staticmethod
    def count(t: Tally, out_chs, stride=1, expansion=6, kernel_size=3, se_ratio=0.0, act="relu6",
              norm="batch", drop_path=0.0) -> Tally:
        hidden = int(round(t.chs * expansion))
        if expansion != 1:
            t.conv_norm_act("expand", hidden, 1, act=act, norm=norm)
        t.conv_norm_act("depthwise", hidden, kernel_size, stride, groups=hidden, act=act, norm=norm)
        t.squeeze_excite("se", se_ratio)
        return t.conv("project", out_chs, 1).norm("bn", norm)


class ConvNeXtBlock(nn.Module):
    """[downsample: norm -> 2x2 conv stride 2] x -> 7x7 depthwise -> norm -> 1x1 (4x) -> GELU -> 1x1
    -> layer scale -> + x. ConvNeXt (Liu et al. 2022): one norm and one activation per block."""

    options = {"expansion": 4, "kernel_size": 7, "norm": "layer", "layer_scale": 1e-6, "act": "gelu"}
    has_residual = True

    def __init__(self, in_chs, out_chs, stride=1, expansion=4, kernel_size=7, norm="layer",
                 layer_scale=1e-6, act="gelu", drop_path=0.0):
        super().__init__()
        self.downsample = nn.Identity()
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(make_norm(norm, in_chs),
                                            nn.Conv2d(in_chs, out_chs, stride, stride))
        hidden = int(round(out_chs * expansion))
        self.depthwise = nn.Conv2d(out_chs, out_chs, kernel_size, padding=kernel_size // 2, groups=out_chs)
        self.norm = make_norm(norm, out_chs)
        self.pointwise1 = nn.Conv2d(out_chs, hidden, 1)
        self.act = make_act(act)
        self.pointwise2 = nn.Conv2d(hidden, out_chs, 1)
        self.gamma = nn.Parameter(torch.full((out_chs, 1, 1), float(layer_scale))) if layer_scale > 0 else None
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        out = self.pointwise2(self.act(self.pointwise1(self.norm(self.depthwise(x)))))
        if self.gamma is not None:
            out = out * self.gamma
        return x + self.drop_path(out)

    @staticmethod
    def count(t: Tally, out_chs, stride=1, expansion=4, kernel_size=7, norm="layer", layer_scale=1e-6,
              act="gelu", drop_path=0.0) -> Tally:
        if stride != 1 or t.chs != out_chs:
            t.norm("downsample.0", norm).conv("downsample.1", out_chs, stride, stride, bias=True, padding=0)
        t.conv("depthwise", out_chs, kernel_size, groups=out_chs, bias=True).norm("norm", norm)
        t.conv("pointwise1", int(round(out_chs * expansion)), 1, bias=True).act("act", act)
        t.conv("pointwise2", out_chs, 1, bias=True)
        return t.layer_scale("gamma") if layer_scale > 0 else t


class DepthwiseSeparable(nn.Module):
    """x -> kxk depthwise (stride) -> BN -> ReLU [-> SE] -> 1x1 pointwise -> BN -> ReLU.
    MobileNetV1 (Howard et al. 2017): N*M + M*K^2 weights instead of N*M*K^2."""

    options = {"kernel_size": 3, "se_ratio": 0.0, "act": "relu", "norm": "batch"}
    has_residual = False

    def __init__(self, in_chs, out_chs, stride=1, kernel_size=3, se_ratio=0.0, act="relu", norm="batch",
                 drop_path=0.0):
        super().__init__()
        self.depthwise = ConvNormAct(in_chs, in_chs, kernel_size, stride, groups=in_chs, norm=norm, act=act)
        self.se = make_se(in_chs, se_ratio)
        self.pointwise = ConvNormAct(in_chs, out_chs, 1, norm=norm, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.se(self.depthwise(x)))

    @staticmethod
    def count(t: Tally, out_chs, stride=1, kernel_size=3, se_ratio=0.0, act="relu", norm="batch",
              drop_path=0.0) -> Tally:
        t.conv_norm_act("depthwise", t.chs, kernel_size, stride, groups=t.chs, act=act, norm=norm)
        return t.squeeze_excite("se", se_ratio).conv_norm_act("pointwise", out_chs, 1, act=act, norm=norm)


BLOCKS: dict[str, type[nn.Module]] = {
    "conv": ConvBlock,
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "inverted_residual": InvertedResidual,
    "convnext": ConvNeXtBlock,
    "dwsep": DepthwiseSeparable,
}

BLOCK_TITLES = {
    "conv": "Conv-BN-act",
    "basic": "ResNet basic block",
    "bottleneck": "ResNet bottleneck (ResNeXt with groups)",
    "inverted_residual": "MobileNetV2 inverted residual",
    "convnext": "ConvNeXt block",
    "dwsep": "Depthwise-separable (MobileNetV1)",
}
