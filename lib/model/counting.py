"""Counting a network on paper: parameters, MACs and feature maps, layer by layer.

A ``Tally`` follows one image's feature map (channels x size x size) through
the layers of a block and records, for each layer, what the real module would
hold and do: its parameters, its multiply-accumulates (conv and linear only,
the convention torchvision and ``FlopCounterMode`` use: MACs = FLOPs / 2) and
the number of values it writes. Each block in lib/model/blocks.py describes itself to
a Tally with the same layer names as its real submodules, so lib/model/profile.py can
count a model without building it, and the tests can check every layer
against the real module.

Notation follows the course: a convolution from M input channels to N output
channels with a KxK kernel has N*M*K^2 weights, and does that many MACs at
every output position.
"""
from __future__ import annotations

from dataclasses import dataclass

NORM_TITLES = {"batch": "BatchNorm", "layer": "LayerNorm", "group": "GroupNorm", "instance": "InstanceNorm"}


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output side of a convolution or pooling window (the usual floor formula)."""
    return (size + 2 * padding - kernel) // stride + 1


@dataclass(frozen=True)
class Layer:
    """One layer's counts. ``formula`` names the parameter count in symbols,
    ``numbers`` puts this layer's values into it; ``activations`` is the number
    of values the layer writes for one image (a layer that passes its input
    through unchanged writes none)."""

    name: str
    kind: str
    formula: str
    numbers: str
    params: int
    macs: int
    activations: int
    out_shape: tuple[int, ...]


class Totals:
    """Parameters, MACs and activations of a part: sums over what it is made of
    (the attribute or method named by ``summed_over``)."""

    summed_over = "layers"

    def _summed_items(self):
        items = getattr(self, self.summed_over)
        return items() if callable(items) else items

    @property
    def params(self) -> int:
        return sum(item.params for item in self._summed_items())

    @property
    def macs(self) -> int:
        return sum(item.macs for item in self._summed_items())

    @property
    def activations(self) -> int:
        return sum(item.activations for item in self._summed_items())


class Tally(Totals):
    """Walks a (chs, size, size) feature map through layers, recording each one."""

    def __init__(self, chs: int, size: int, prefix: str = ""):
        self.chs, self.size, self.prefix = chs, size, prefix
        self.flat = False  # after global pooling the "map" is a vector of chs values
        self.layers: list[Layer] = []

    # -- bookkeeping -------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return (self.chs,) if self.flat else (self.chs, self.size, self.size)

    def _numel(self) -> int:
        return self.chs if self.flat else self.chs * self.size * self.size

    def _record(self, name, kind, formula, numbers, params, macs, writes=True) -> "Tally":
        self.layers.append(Layer(self.prefix + name, kind, formula, numbers, params, macs,
                                 self._numel() if writes else 0, self.shape))
        return self

    def branch(self, prefix: str = "") -> "Tally":
        """A second path from the current feature map (a shortcut); join() it back later."""
        return Tally(self.chs, self.size, self.prefix + prefix)

    def join(self, other: "Tally") -> "Tally":
        self.layers.extend(other.layers)
        return self

    # -- layers ------------------------------------------------------------
    def conv(self, name: str, out_chs: int, kernel: int, stride: int = 1, groups: int = 1,
             bias: bool = False, padding: int | None = None) -> "Tally":
        """nn.Conv2d(chs, out_chs, kernel, stride, padding (default kernel//2), groups, bias)."""
        in_chs = self.chs
        padding = kernel // 2 if padding is None else padding
        weights = out_chs * (in_chs // groups) * kernel * kernel
        self.chs, self.size = out_chs, conv_out(self.size, kernel, stride, padding)
        formula, numbers, kind = _conv_formula(in_chs, out_chs, kernel, groups)
        if bias:
            formula, numbers = formula + " + N", numbers + f" + {out_chs}"
        return self._record(name, kind, formula, numbers, weights + (out_chs if bias else 0),
                            weights * self.size * self.size)

    def conv_norm_act(self, name: str, out_chs: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                      norm: str = "batch", act: str = "relu") -> "Tally":
        """ConvNormAct: submodules .0 (conv), .1 (norm), .2 (activation)."""
        self.conv(f"{name}.0", out_chs, kernel, stride, groups)
        return self.norm(f"{name}.1", norm).act(f"{name}.2", act)

    def norm(self, name: str, kind: str = "batch") -> "Tally":
        """Any of the norms (lib/model/blocks.py NORMS): a learned scale and shift per channel."""
        return self._record(name, NORM_TITLES[kind], "2·C", f"2·{self.chs}", 2 * self.chs, 0)

    def act(self, name: str, act: str) -> "Tally":
        if act == "none":  # nn.Identity hands its input back: nothing is written
            return self
        return self._record(name, act, "0", "", 0, 0)

    def max_pool(self, name: str, kernel: int = 3, stride: int = 2, padding: int = 1) -> "Tally":
        self.size = conv_out(self.size, kernel, stride, padding)
        return self._record(name, "max pool", "0", "", 0, 0)

    def global_pool(self, name: str) -> "Tally":
        self.size = 1
        self._record(name, "average pool", "0", "", 0, 0)
        self.flat = True  # FaceNet flattens the pooled 1x1 map into a vector
        return self

    def linear(self, name: str, out_features: int, bias: bool = True) -> "Tally":
        in_features, self.chs = self.chs, out_features
        formula, numbers = "M·N", f"{in_features}·{out_features}"
        if bias:
            formula, numbers = formula + " + N", numbers + f" + {out_features}"
        weights = in_features * out_features
        return self._record(name, "linear", formula, numbers, weights + (out_features if bias else 0), weights)

    def layer_scale(self, name: str) -> "Tally":
        """A learned per-channel factor (ConvNeXt's gamma): C parameters, applied in forward."""
        return self._record(name, "layer scale", "C", f"{self.chs}", self.chs, 0, writes=False)

    def squeeze_excite(self, name: str, ratio: float) -> "Tally":
        """SqueezeExcite(chs, ratio): pool -> 1x1 reduce -> ReLU -> 1x1 expand -> sigmoid gate."""
        if ratio <= 0:
            return self
        chs, size = self.chs, self.size
        squeezed = max(1, int(round(chs * ratio)))
        self.size = 1
        self._record(f"{name}.pool", "average pool", "0", "", 0, 0)
        self.conv(f"{name}.reduce", squeezed, 1, bias=True).act(f"{name}.act", "relu")
        self.conv(f"{name}.expand", chs, 1, bias=True)._record(f"{name}.gate", "sigmoid", "0", "", 0, 0)
        self.size = size  # the gate rescales the full map: the shape is back to chs x size x size
        return self


def _conv_formula(in_chs: int, out_chs: int, kernel: int, groups: int) -> tuple[str, str, str]:
    """(symbols, numbers, kind) of a convolution's weight count, in the course's notation."""
    k2 = f"{kernel}²"
    if groups == 1:
        kind = "pointwise conv" if kernel == 1 else "conv"
        if kernel == 1:
            return "M·N", f"{in_chs}·{out_chs}", kind
        return "M·N·K²", f"{in_chs}·{out_chs}·{k2}", kind
    if groups == in_chs == out_chs:
        return "M·K²", f"{in_chs}·{k2}", "depthwise conv"
    return "(M/g)·N·K²", f"({in_chs}/{groups})·{out_chs}·{k2}", "grouped conv"
