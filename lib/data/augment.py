"""Augmentation pipelines as data, built into torchvision.transforms.v2.

A pipeline is a list of steps ``{"name": "RandomHorizontalFlip", "params": {"p": 0.5}}``
whose names and parameters come from ``TRANSFORMS`` (lib/data/transforms.py).
``validate_pipeline`` fills in defaults and rejects anything else with a
ValueError naming the step, the transform and the parameter. Built pipelines
take ONE uint8 [3, H, W] tensor (the in-memory images of lib/data/datasets.py).

Previews are seeded per cell (seed, image, sample) inside ``fork_rng``: the
same images, pipeline and seed give the same pictures every time, and a
preview never disturbs the random state of anything else.
"""
from __future__ import annotations

import copy
import json
import math

import torch
from torchvision.transforms import v2

from lib.base.json_text import parse_json
from lib.data.transforms import BATCH_MIXES, IMAGE_SIZE, MEAN, STD, TRANSFORMS, Expr, Param

# ----------------------------------------------------------------------------- validation

MAX_STEPS = 64  # the editor holds each of the TRANSFORMS once; a longer list is not a pipeline anyone wrote


def _number(value, integer: bool) -> float | int | None:
    """``value`` as an int (``integer``) or a float; None when it is not a number of that kind.
    An integer too large for a float becomes +-inf, which every range check then refuses."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):
        return value if integer else _int_as_float(value)
    if integer:
        return int(value) if value.is_integer() else None  # False for inf and nan
    return value


def _int_as_float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _shown(value, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message quotes a pasted value, not all of it."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_value(where: str, spec: Param, value):
    """The normalized (JSON-ready) value, or ValueError naming ``where`` and the problem."""
    def fail(problem: str):
        raise ValueError(f"{where} = {_shown(value)} {problem}")

    span = f"between {spec.low:g} and {spec.high:g}" if spec.low is not None else ""
    if spec.kind in ("int", "float"):
        number = _number(value, spec.kind == "int")
        if number is None:
            fail(f"is not {'an integer' if spec.kind == 'int' else 'a number'}")
        if not spec.low <= number <= spec.high:
            fail(f"is out of range: must be {span}")
        if spec.odd and number % 2 == 0:
            fail("must be odd")
        return number
    if spec.kind == "choice":
        if value not in spec.choices:
            fail(f"is not one of {', '.join(spec.choices)}")
        return value
    if spec.kind == "floats" and value is None:
        return None
    count = 2 if spec.kind == "range" else 3
    if not isinstance(value, (list, tuple)) or len(value) != count:
        fail(f"must be a list of {count} numbers")
    numbers = [_number(v, False) for v in value]
    if any(n is None or not spec.low <= n <= spec.high for n in numbers):
        fail(f"has a value out of range: each must be {span}")
    if spec.kind == "range" and numbers[0] > numbers[1]:
        fail("is not a range: the first value must not exceed the second")
    return numbers


def _validate_step(index: int, step) -> dict:
    if not isinstance(step, dict) or not isinstance(step.get("name"), str):
        raise ValueError(f"step {index}: expected {{'name': ..., 'params': {{...}}}}, got {_shown(step)}")
    name = step["name"]
    if name not in TRANSFORMS:
        raise ValueError(f"step {index}: unknown transform {_shown(name)}; known: {', '.join(TRANSFORMS)}")
    extra = sorted(set(step) - {"name", "params"})
    if extra:
        raise ValueError(f"step {index} ({name}): unknown key {_shown(extra[0])}; a step has only 'name' and 'params'")
    params = step.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ValueError(f"step {index} ({name}): params must be a mapping, got {_shown(params)}")
    specs = TRANSFORMS[name].params
    for key in params:
        if key not in specs:
            allowed = ", ".join(specs) or "none"
            raise ValueError(f"step {index} ({name}): unknown parameter {_shown(key)}; parameters: {allowed}")
    return {"name": name, "params": {key: _check_value(f"step {index} ({name}): parameter {key}", spec,
                                                        params.get(key, spec.default))
                                     for key, spec in specs.items()}}


def validate_pipeline(steps) -> list[dict]:
    """Normalized copy of ``steps`` (every parameter present, JSON types); ValueError otherwise."""
    if not isinstance(steps, (list, tuple)):
        raise ValueError("a pipeline is a list of steps {'name': ..., 'params': {...}}, "
                         f"got {type(steps).__name__}")
    if len(steps) > MAX_STEPS:
        raise ValueError(f"a pipeline of {len(steps)} steps is too long: at most {MAX_STEPS}")
    normalized = [_validate_step(index, step) for index, step in enumerate(steps)]
    for index, step in enumerate(normalized[:-1]):
        if step["name"] == "Normalize":
            raise ValueError(f"step {index} (Normalize): must be the last step (it turns the image into floats)")
    return normalized


def pipeline_to_json(steps) -> str:
    return json.dumps(validate_pipeline(steps), indent=2)


def pipeline_from_json(text: str) -> list[dict]:
    return validate_pipeline(parse_json(text, "pipeline JSON"))


DEFAULT_PIPELINE: list[dict] = validate_pipeline([
    {"name": "RandomResizedCrop", "params": {"size": 0, "scale": [0.8, 1.0], "ratio": [0.9, 1.1]}},
    {"name": "RandomHorizontalFlip", "params": {"p": 0.5}},
    {"name": "ColorJitter", "params": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.0}},
])


def default_pipeline() -> list[dict]:
    """A fresh copy of DEFAULT_PIPELINE, safe to edit."""
    return copy.deepcopy(DEFAULT_PIPELINE)


# ----------------------------------------------------------------------------- building

class AtInputSize(torch.nn.Module):
    """A v2 transform whose ``size`` is the input image's own (H, W), built once per input size."""

    def __init__(self, class_name: str, kwargs: dict):
        super().__init__()
        self.class_name, self.kwargs, self._built = class_name, kwargs, {}

    def forward(self, *inputs):
        size = tuple(v2.functional.get_size(inputs[0]))
        if size not in self._built:
            kwargs = {k: (size if v == IMAGE_SIZE else v) for k, v in self.kwargs.items()}
            self._built[size] = getattr(v2, self.class_name)(**kwargs)
        return self._built[size](*inputs)

    def extra_repr(self) -> str:
        return f"{self.class_name}, " + ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())


def _instantiate(class_name: str, kwargs: dict, stats):
    resolved = {}
    for key, value in kwargs.items():
        if isinstance(value, Expr) and value in (MEAN, STD):
            if stats is None:
                raise ValueError("Normalize without mean/std uses the data set's statistics: pass stats=(mean, std)")
            value = tuple(stats[0] if value == MEAN else stats[1])
        elif isinstance(value, Expr) and value != IMAGE_SIZE:
            value = value.value
        resolved[key] = value
    if IMAGE_SIZE in resolved.values():
        return AtInputSize(class_name, resolved)
    return getattr(v2, class_name)(**resolved)


def build_step(step: dict, stats=None) -> list:
    """The v2 transforms of one validated step (Normalize is two: ToDtype then Normalize)."""
    return [_instantiate(name, kwargs, stats) for name, kwargs in TRANSFORMS[step["name"]].calls(step["params"])]


def build_pipeline(steps, stats=None) -> v2.Compose:
    """v2.Compose for one uint8 [3, H, W] image. ``stats`` = (mean, std) fills an empty Normalize."""
    steps = validate_pipeline(steps)
    return v2.Compose([t for step in steps for t in build_step(step, stats)])


def check_runs(steps, image_size=(64, 64)) -> tuple[int, int]:
    """Run the pipeline once on a blank image of ``image_size``; the output (height, width), or a
    ValueError naming the step torchvision refused (e.g. a crop larger than the padded image)."""
    steps = validate_pipeline(steps)
    image = torch.zeros(3, *image_size, dtype=torch.uint8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for index, step in enumerate(steps):
            try:
                for transform in build_step(step, ((0.5,) * 3, (0.5,) * 3)):
                    image = transform(image)
            except (ValueError, RuntimeError, TypeError) as error:
                size = "x".join(str(v) for v in image.shape[-2:])
                raise ValueError(f"step {index} ({step['name']}) fails on {size} images: {error}") from None
    return tuple(image.shape[-2:])


def _to_float(mean, std) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def training_transform(steps, mean, std) -> v2.Compose:
    """Pipeline, then ToDtype(float32, scale) and Normalize(mean, std) unless the steps end in Normalize.

    Runs per image: call it in DataLoader workers (one thread each) or with torch.set_num_threads(1);
    with several intra-op threads on a busy CPU, tiny per-image ops wait on each other (bench/augment_speed.py)."""
    steps = validate_pipeline(steps)
    transforms = [t for step in steps for t in build_step(step, (mean, std))]
    if not steps or steps[-1]["name"] != "Normalize":
        transforms += _to_float(mean, std)
    return v2.Compose(transforms)


def eval_transform(mean, std) -> v2.Compose:
    """No augmentation: uint8 -> float in [0, 1] -> Normalize. Works on [C,H,W] and on [N,C,H,W] batches."""
    return v2.Compose(_to_float(mean, std))


# ----------------------------------------------------------------------------- batch mixing

class BatchMix:
    """(float images [B,C,H,W], int64 labels [B]) -> (mixed images, soft targets [B, num_classes])."""

    def __init__(self, kind: str, alpha: float, num_classes: int):
        if kind not in BATCH_MIXES:
            raise ValueError(f"batch mix kind {kind!r} unknown; choose one of {', '.join(BATCH_MIXES)}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes = {num_classes!r}: need an integer of at least 2")
        spec = BATCH_MIXES[kind].alpha
        alpha = _check_value(f"{kind}: alpha", spec, alpha)
        self.kind, self.alpha, self.num_classes = kind, alpha, num_classes
        mixers = {"mixup": v2.MixUp, "cutmix": v2.CutMix}
        self._mixer = mixers[kind](alpha=alpha, num_classes=num_classes) if kind in mixers else None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        if self._mixer is None:
            return images, torch.nn.functional.one_hot(labels, self.num_classes).to(images.dtype)
        return self._mixer(images, labels)

    def __repr__(self) -> str:
        return f"BatchMix({self.kind!r}, alpha={self.alpha}, num_classes={self.num_classes})"


def batch_mix(kind: str, alpha: float, num_classes: int) -> BatchMix:
    return BatchMix(kind, alpha, num_classes)


def mix_preview(image_a: torch.Tensor, image_b: torch.Tensor, kind: str, alpha: float, seed: int):
    """Mix two uint8 images as a batch would: (mixed uint8 image, weight of a, weight of b)."""
    batch = torch.stack([image_a, image_b]).to(torch.float32) / 255.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mixed, targets = batch_mix(kind, alpha, 2)(batch, torch.tensor([0, 1]))
    # MixUp/CutMix pair image i with image i-1 of the batch, so output 0 mixes a with b.
    image = (mixed[0] * 255.0).round().clamp(0, 255).to(torch.uint8)
    return image, float(targets[0, 0]), float(targets[0, 1])


# ----------------------------------------------------------------------------- previews

def _cell_seed(seed: int, image_index: int, sample_index: int) -> int:
    return (int(seed) * 1_000_003 + image_index * 1_009 + sample_index) % (2**63)


def _without_normalize(steps: list[dict]) -> list[dict]:
    return [step for step in steps if step["name"] != "Normalize"]


def preview_grid(images: torch.Tensor, steps, samples: int, seed: int) -> torch.Tensor:
    """uint8 [N, samples, 3, h, w]: ``samples`` augmented versions of each image (Normalize left out,
    so the result can be shown). Identical for identical (images, steps, seed)."""
    pipeline = build_pipeline(_without_normalize(validate_pipeline(steps)))
    rows = []
    with torch.random.fork_rng(devices=[]):
        for i, image in enumerate(images):
            row = []
            for j in range(samples):
                torch.manual_seed(_cell_seed(seed, i, j))
                row.append(pipeline(image))
            rows.append(torch.stack(row))
    return torch.stack(rows)


def trace_steps(image: torch.Tensor, steps, seed: int, stats=None, image_index: int = 0) -> list:
    """[(title, tensor)]: the original, then the image after each step. Uses the seed of preview cell
    (image_index, 0), so the last picture equals that cell of ``preview_grid``."""
    steps = validate_pipeline(steps)
    trace = [("original", image)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_cell_seed(seed, image_index, 0))
        for number, step in enumerate(steps, start=1):
            for transform in build_step(step, stats):
                image = transform(image)
            trace.append((f"{number}. {step['name']}", image))
    return trace


def to_display(image: torch.Tensor) -> torch.Tensor:
    """uint8 [3,H,W] for showing: uint8 as it is; a float (normalized) image stretched to 0..255."""
    if image.dtype == torch.uint8:
        return image
    low, high = image.min(), image.max()
    scaled = (image - low) / (high - low).clamp_min(1e-8)
    return (scaled * 255).round().to(torch.uint8)
