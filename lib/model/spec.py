"""A model is data: ModelSpec = stem + stages + head, as frozen dataclasses.

Specs round-trip through JSON, are edited with ``dataclasses.replace``, and
``validate()`` rejects impossible ones with a ValueError that names the field
and the bad value. ``PRESETS`` (lib/model/presets.py) holds the named starting points.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields

from lib.base.json_text import parse_json
from lib.model.blocks import ACTIVATIONS, BLOCKS, NORMS
from lib.model.counting import conv_out

STEM_KINDS = ("conv", "patchify")
STAGE_REGULARISATION_DEFAULTS = {"drop_path": None, "drop_block": 0.0, "drop_block_size": 3}
POOL_NORMS = ("none", "layer")


@dataclass(frozen=True)
class StemSpec:
    """conv: kxk conv (stride) -> BN -> act [-> 3x3 max-pool stride 2].
    patchify: non-overlapping kxk conv with stride k -> LayerNorm (ConvNeXt)."""

    kind: str = "conv"
    out_chs: int = 64
    kernel_size: int = 3
    stride: int = 1
    pool: bool = False
    act: str = "relu"


@dataclass(frozen=True)
class StageSpec:
    """``depth`` blocks of one type; the first has the stride and changes the width.
    Options left as None take the block's own default (``BLOCKS[block].options``).
    Regularisation per stage, in training only: ``drop_path`` is the stochastic-depth rate of
    its blocks (None: the model's linear rule from ``drop_path_rate``); ``drop_block`` drops
    ``drop_block_size`` x ``drop_block_size`` squares of the stage's output with that probability."""

    block: str = "basic"
    out_chs: int = 64
    depth: int = 1
    stride: int = 1
    expansion: float | None = None
    kernel_size: int | None = None
    groups: int | None = None
    base_width: int | None = None
    se_ratio: float | None = None
    act: str | None = None
    norm: str | None = None
    layer_scale: float | None = None
    drop_path: float | None = None
    drop_block: float = 0.0
    drop_block_size: int = 3

    def block_options(self) -> dict:
        """The options this stage's block takes, with block defaults filled in."""
        defaults = BLOCKS[self.block].options
        return {name: (default if getattr(self, name) is None else getattr(self, name))
                for name, default in defaults.items()}


@dataclass(frozen=True)
class HeadSpec:
    """[1x1 conv to conv_chs ->] global average pool [-> LayerNorm] [-> linear + BN embedding]
    -> dropout -> linear classifier. embedding_dim 0 means the pooled features are the embedding."""

    conv_chs: int = 0
    conv_act: str = "relu6"
    pool_norm: str = "none"
    embedding_dim: int = 0
    dropout: float = 0.0


@dataclass(frozen=True)
class ModelSpec:
    name: str = "custom"
    stem: StemSpec = field(default_factory=StemSpec)
    stages: tuple[StageSpec, ...] = ()
    head: HeadSpec = field(default_factory=HeadSpec)
    input_size: int = 64
    in_chs: int = 3
    num_classes: int = 298
    drop_path_rate: float = 0.0

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        for stage in data["stages"]:  # a stage without regularisation writes as specs did before it existed
            for name, default in STAGE_REGULARISATION_DEFAULTS.items():
                if stage.get(name) == default:
                    del stage[name]
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        if not isinstance(data, dict):
            raise ValueError(f"model spec must be a JSON object, got {type(data).__name__}")
        values = _known_fields(cls, data, "model")
        if not isinstance(values.get("name", ""), str):  # it names files and is looked up in PRESETS
            raise ValueError(f"name: {_shown(values['name'])} is not text; give the model a name like \"my_model\"")
        if "stem" in values:
            values["stem"] = StemSpec(**_known_fields(StemSpec, values["stem"], "stem"))
        if "head" in values:
            values["head"] = HeadSpec(**_known_fields(HeadSpec, values["head"], "head"))
        if "stages" in values:
            stages = values["stages"]
            if not isinstance(stages, (list, tuple)):
                raise ValueError(f"stages must be a list of stage objects, got {type(stages).__name__}")
            values["stages"] = tuple(StageSpec(**_known_fields(StageSpec, s, f"stages[{i}]"))
                                     for i, s in enumerate(stages))
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        return cls.from_dict(parse_json(text, "model spec"))

    def validate(self) -> "ModelSpec":
        """Raise ValueError naming the first impossible field; return self when valid."""
        _validate_stem(self)
        size = _spatial_after_stem(self)
        for index, (stage, in_chs) in enumerate(zip(self.stages, stage_in_chs(self))):
            _validate_stage(stage, f"stages[{index}]")
            _validate_hidden_chs(stage, in_chs, f"stages[{index}]")
            size = _spatial_after_stage(stage, size)
            if size < 1:
                raise ValueError(f"stages[{index}].stride: the feature map collapses below 1x1 "
                                 f"at input size {self.input_size}; remove a stride-2 stage or raise input_size")
        _validate_head(self.head)
        _check_int("num_classes", self.num_classes, 1, 1_000_000)
        _check_range("drop_path_rate", self.drop_path_rate, 0.0, 0.9)
        return self


def _known_fields(cls, data, where: str) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown field {_shown(unknown[0])} (known: {', '.join(sorted(names))})")
    return dict(data)


def _shown(value, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message quotes a pasted value, not all of it."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_range(name: str, value, low, high) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name}: {_shown(value)} is not a number in [{low}, {high}]")


def _check_int(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}: {_shown(value)} is not a whole number in [{low}, {high}]")


def _check_choice(name: str, value, choices) -> None:
    # Compared with the type too: True == 1 and 3.0 == 3, but torch refuses a float kernel size.
    if not any(type(value) is type(choice) and value == choice for choice in choices):
        raise ValueError(f"{name}: {_shown(value)} is not one of {', '.join(map(str, choices))}")


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: {_shown(value)} is not true or false")


def _validate_stem(spec: ModelSpec) -> None:
    _check_int("input_size", spec.input_size, 8, 1024)
    _check_int("in_chs", spec.in_chs, 1, 16)
    stem = spec.stem
    _check_choice("stem.kind", stem.kind, STEM_KINDS)
    _check_int("stem.out_chs", stem.out_chs, 1, 4096)
    _check_int("stem.kernel_size", stem.kernel_size, 1, 15)
    _check_int("stem.stride", stem.stride, 1, 8)
    _check_bool("stem.pool", stem.pool)
    _check_choice("stem.act", stem.act, tuple(ACTIVATIONS))
    if stem.kind == "conv" and stem.kernel_size % 2 == 0:
        raise ValueError(f"stem.kernel_size: {stem.kernel_size} must be odd for a 'conv' stem")
    if stem.kind == "patchify" and stem.kernel_size != stem.stride:
        raise ValueError(f"stem.stride: {stem.stride} must equal stem.kernel_size "
                         f"({stem.kernel_size}) for a 'patchify' stem (non-overlapping patches)")
    if _spatial_after_stem(spec) < 1:
        raise ValueError(f"stem.stride: input {spec.input_size}x{spec.input_size} collapses below 1x1 after the stem")


def _validate_stage(stage: StageSpec, where: str) -> None:
    _check_choice(f"{where}.block", stage.block, tuple(BLOCKS))
    _check_int(f"{where}.out_chs", stage.out_chs, 1, 8192)
    _check_int(f"{where}.depth", stage.depth, 1, 64)
    _check_choice(f"{where}.stride", stage.stride, (1, 2))
    allowed = BLOCKS[stage.block].options
    for name in ("expansion", "kernel_size", "groups", "base_width", "se_ratio", "act", "norm", "layer_scale"):
        if getattr(stage, name) is not None and name not in allowed:
            raise ValueError(f"{where}.{name}: the {stage.block!r} block has no {name!r} option "
                             f"(it takes: {', '.join(allowed)})")
    options = stage.block_options()
    _validate_options(options, stage, where)
    if stage.drop_path is not None:
        _check_range(f"{where}.drop_path", stage.drop_path, 0.0, 0.9)
    _check_range(f"{where}.drop_block", stage.drop_block, 0.0, 0.5)
    _check_int(f"{where}.drop_block_size", stage.drop_block_size, 1, 15)


def _validate_options(options: dict, stage: StageSpec, where: str) -> None:
    if "expansion" in options:
        _check_range(f"{where}.expansion", options["expansion"], 0.25, 16)
    if "kernel_size" in options:
        _check_choice(f"{where}.kernel_size", options["kernel_size"], (1, 3, 5, 7, 9, 11))
    if "se_ratio" in options:
        _check_range(f"{where}.se_ratio", options["se_ratio"], 0.0, 1.0)
    if "act" in options:
        _check_choice(f"{where}.act", options["act"], tuple(ACTIVATIONS))
    if "norm" in options:
        _check_choice(f"{where}.norm", options["norm"], tuple(NORMS))
    if "layer_scale" in options:
        _check_range(f"{where}.layer_scale", options["layer_scale"], 0.0, 10.0)
    if "groups" in options:
        _check_int(f"{where}.groups", options["groups"], 1, 1024)
        _check_int(f"{where}.base_width", options["base_width"], 1, 1024)
        from lib.model.blocks import bottleneck_width
        if bottleneck_width(stage.out_chs, options["expansion"], options["groups"], options["base_width"]) < 1:
            raise ValueError(f"{where}.out_chs: {stage.out_chs} is too narrow for expansion "
                             f"{options['expansion']}; the bottleneck would have no channels")


def _validate_hidden_chs(stage: StageSpec, in_chs: int, where: str) -> None:
    """Expanding blocks round width x expansion to whole channels; that must leave at least one."""
    if stage.block == "inverted_residual":  # expands its input: the stage's input, then its own width
        chs = min(in_chs, stage.out_chs) if stage.depth > 1 else in_chs
    elif stage.block == "convnext":  # expands its own width
        chs = stage.out_chs
    else:
        return
    expansion = stage.block_options()["expansion"]
    if int(round(chs * expansion)) < 1:
        raise ValueError(f"{where}.expansion: {expansion} x {chs} channels rounds to 0 hidden channels; "
                         f"raise the expansion or the width")


def _validate_head(head: HeadSpec) -> None:
    _check_int("head.conv_chs", head.conv_chs, 0, 8192)
    _check_choice("head.conv_act", head.conv_act, tuple(ACTIVATIONS))
    _check_choice("head.pool_norm", head.pool_norm, POOL_NORMS)
    _check_int("head.embedding_dim", head.embedding_dim, 0, 8192)
    _check_range("head.dropout", head.dropout, 0.0, 0.95)


def _spatial_after_stem(spec: ModelSpec) -> int:
    stem = spec.stem
    if stem.kind == "patchify":
        return conv_out(spec.input_size, stem.kernel_size, stem.stride, 0)
    size = conv_out(spec.input_size, stem.kernel_size, stem.stride, stem.kernel_size // 2)
    return conv_out(size, 3, 2, 1) if stem.pool and size >= 1 else size


def _spatial_after_stage(stage: StageSpec, size: int) -> int:
    if stage.stride == 1:
        return size
    if stage.block == "convnext":  # a 2x2 stride-2 conv, no padding
        return conv_out(size, 2, 2, 0)
    return conv_out(size, 3, 2, 1)


def stage_output_sizes(spec: ModelSpec) -> list[int]:
    """Spatial size (height = width) after the stem and after each stage."""
    sizes = [_spatial_after_stem(spec)]
    for stage in spec.stages:
        sizes.append(_spatial_after_stage(stage, sizes[-1]))
    return sizes


def stage_in_chs(spec: ModelSpec) -> list[int]:
    """Input channels of each stage: the stem's width, then the previous stage's."""
    chs = [spec.stem.out_chs]
    for stage in spec.stages[:-1]:
        chs.append(stage.out_chs)
    return chs


def feature_chs(spec: ModelSpec) -> int:
    """Channels entering global pooling."""
    if spec.head.conv_chs:
        return spec.head.conv_chs
    return spec.stages[-1].out_chs if spec.stages else spec.stem.out_chs


def embedding_dim(spec: ModelSpec) -> int:
    return spec.head.embedding_dim or feature_chs(spec)
