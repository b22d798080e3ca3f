"""profile(spec): parameters, MACs, output shapes and activation memory of a model,
for the stem, every stage, every block and the head, without building the model.

Each block counts its own layers on paper (``count`` in lib/model/blocks.py, the
arithmetic in lib/model/counting.py), so a profile costs microseconds and the Build
page can recount while a slider moves. The numbers are those of the real
module: tests compare every layer with FaceNet's parameters,
``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2) and the tensors
the layers write.

Conventions: MACs are the multiply-accumulates of convolutions and linear
layers for one image (1 MAC = 2 FLOPs); activations are the values the layers
write for one image in a forward pass, stored as float32 (4 bytes each).
"""
from __future__ import annotations

from dataclasses import dataclass

from lib.model.blocks import BLOCKS
from lib.model.counting import Layer, Tally, Totals
from lib.model.spec import ModelSpec, StageSpec

BYTES_PER_VALUE = 4  # float32


@dataclass(frozen=True)
class PartProfile(Totals):
    """The stem, one block, or the head. ``name`` is its module path in FaceNet
    ("stem", "stages.1.0", "head"); each layer's name is its full module path."""

    name: str
    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class StageProfile(Totals):
    summed_over = "blocks"
    index: int
    spec: StageSpec
    blocks: tuple[PartProfile, ...]

    @property
    def name(self) -> str:
        return f"stage{self.index + 1}"

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.blocks[0].in_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.blocks[-1].out_shape


@dataclass(frozen=True)
class Profile(Totals):
    summed_over = "parts"
    spec: ModelSpec
    stem: PartProfile
    stages: tuple[StageProfile, ...]
    head: PartProfile

    def parts(self) -> list[PartProfile | StageProfile]:
        """Stem, each stage, head: the rows of the per-stage table (they add up to the totals)."""
        return [self.stem, *self.stages, self.head]

    @property
    def activation_bytes(self) -> int:
        return self.activations * BYTES_PER_VALUE

    def layers(self) -> list[Layer]:
        blocks = [block for stage in self.stages for block in stage.blocks]
        return [layer for part in (self.stem, *blocks, self.head) for layer in part.layers]

    def to_dict(self) -> dict:
        """{"params", "macs", "stages": [{"name", "params", "macs", "out_shape"}, ...]} where
        "stages" lists the stem, every stage and the head, so the rows add up to the totals."""
        rows = [{"name": part.name, "params": part.params, "macs": part.macs, "out_shape": list(part.out_shape)}
                for part in self.parts()]
        return {"params": self.params, "macs": self.macs, "stages": rows}


def profile(spec: ModelSpec) -> Profile:
    """Count ``spec`` layer by layer. Raises ValueError (from spec.validate) if it is impossible."""
    spec.validate()
    tally = _count_stem(spec)
    stem = _part("stem", "stem", (spec.in_chs, spec.input_size, spec.input_size), tally)
    chs, size = tally.chs, tally.size
    stages = []
    for index, stage in enumerate(spec.stages):
        blocks = []
        for position in range(stage.depth):
            tally = Tally(chs, size, f"stages.{index}.{position}.")
            in_shape = tally.shape
            count_block(tally, stage, first=position == 0)
            blocks.append(_part(f"stages.{index}.{position}", stage.block, in_shape, tally))
            chs, size = tally.chs, tally.size
        stages.append(StageProfile(index, stage, tuple(blocks)))
    tally = Tally(chs, size)
    head = _part("head", "head", tally.shape, _count_head(spec, tally))
    return Profile(spec, stem, tuple(stages), head)


def count_block(tally: Tally, stage: StageSpec, first: bool = True) -> Tally:
    """One block of ``stage`` (the first one carries the stride), counted from ``tally``'s map."""
    return BLOCKS[stage.block].count(tally, stage.out_chs, stage.stride if first else 1, **stage.block_options())


def _part(name: str, kind: str, in_shape: tuple[int, ...], tally: Tally) -> PartProfile:
    return PartProfile(name, kind, in_shape, tally.shape, tuple(tally.layers))


def _count_stem(spec: ModelSpec) -> Tally:
    """The same layers as lib.model.net.build_stem."""
    stem, tally = spec.stem, Tally(spec.in_chs, spec.input_size, "stem.")
    if stem.kind == "patchify":
        return tally.conv("0", stem.out_chs, stem.kernel_size, stem.stride, bias=True, padding=0).norm("1", "layer")
    tally.conv("0", stem.out_chs, stem.kernel_size, stem.stride).norm("1").act("2", stem.act)
    return tally.max_pool("3") if stem.pool else tally


def _count_head(spec: ModelSpec, tally: Tally) -> Tally:
    """The same layers as FaceNet's head_conv, pool, pool_norm, embedding and classifier."""
    head = spec.head
    if head.conv_chs:
        tally.conv_norm_act("head_conv", head.conv_chs, 1, act=head.conv_act)
    tally.global_pool("pool")
    if head.pool_norm == "layer":
        tally.norm("pool_norm", "layer")
    if head.embedding_dim:
        tally.linear("embedding.0", head.embedding_dim, bias=False).norm("embedding.1", "batch")
    return tally.linear("classifier", spec.num_classes)  # dropout writes nothing in eval


def human(count: float, unit: str = "") -> str:
    """11689512 -> '11.7M': three significant figures for the eye; the tables keep exact numbers."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= factor:
            return f"{count / factor:.3g}{suffix}{unit}"
    return f"{count:g}{unit}"


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(value) for value in shape)
