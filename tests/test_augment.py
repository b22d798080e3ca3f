"""lib/data/augment.py: every registered transform, hand-computed references, seeds, JSON, validation, MixUp/CutMix."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from lib.data.advice import pipeline_code, pipeline_warnings
from lib.data.augment import (
    DEFAULT_PIPELINE,
    batch_mix,
    build_pipeline,
    check_runs,
    eval_transform,
    mix_preview,
    pipeline_from_json,
    pipeline_to_json,
    preview_grid,
    trace_steps,
    training_transform,
    validate_pipeline,
)
from lib.data.transforms import BATCH_MIXES, TRANSFORMS

MEAN, STD = (0.55, 0.43, 0.36), (0.25, 0.21, 0.2)
STATS = (MEAN, STD)


def image(size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def run(steps, x, seed=0, stats=STATS):
    torch.manual_seed(seed)
    return build_pipeline(steps, stats=stats)(x)


def expected_side(name: str, params: dict, size: int) -> int:
    if name in ("Resize", "CenterCrop"):
        return params["size"]
    return params.get("size") or size


def extreme_settings(name: str):
    """Defaults, then every parameter at its low and its high end in turn (ranges as [low, high])."""
    specs = TRANSFORMS[name].params
    yield {}
    for param, spec in specs.items():
        if spec.kind == "choice":
            yield from ({param: choice} for choice in spec.choices)
        elif spec.kind == "range":
            yield {param: [spec.low, spec.high]}
        elif spec.kind == "floats":
            yield {param: [spec.low] * 3}
        elif spec.kind in ("int", "float"):
            low = spec.low if spec.kind == "float" else int(spec.low)
            high = spec.high if spec.kind == "float" else int(spec.high)
            yield from ({param: value} for value in (low, high) if not (spec.odd and value % 2 == 0))


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("size", [64, 112])
def test_every_transform_runs_with_right_type_and_shape(name, size):
    x = image(size)
    settings = list(extreme_settings(name)) if size == 64 else [{}]  # range ends once; both sizes by default
    for params in settings:
        if params.get("size", 0) > 128:
            continue  # 512-pixel outputs only cost time; the range end itself is checked at 64 below
        step = validate_pipeline([{"name": name, "params": params}])[0]
        out = run([step], x)
        side = expected_side(name, step["params"], size)
        assert out.shape == (3, side, side), (name, params)
        assert out.dtype == (torch.float32 if name == "Normalize" else torch.uint8), (name, params)


def test_size_range_end_is_accepted_by_torchvision():
    for name, extra in [("RandomResizedCrop", {}), ("RandomCrop", {"padding_mode": "constant"}), ("Resize", {}),
                        ("CenterCrop", {})]:
        out = run([{"name": name, "params": {"size": 512, **extra}}], image(64))
        assert out.shape == (3, 512, 512), name


def test_check_runs_names_the_step_torchvision_refuses():
    assert check_runs(DEFAULT_PIPELINE, (112, 112)) == (112, 112)
    assert check_runs([{"name": "Resize", "params": {"size": 32}}], (64, 64)) == (32, 32)
    with pytest.raises(ValueError, match=r"step 1 \(RandomCrop\) fails on 64x64 images"):
        check_runs([{"name": "RandomHorizontalFlip"}, {"name": "RandomCrop", "params": {"size": 512}}], (64, 64))


# ----------------------------------------------------------------------------- hand-computed references

def test_deterministic_settings_match_hand_computed_images():
    x = image(64)
    assert torch.equal(run([{"name": "RandomHorizontalFlip", "params": {"p": 1.0}}], x), x.flip(-1))
    assert torch.equal(run([{"name": "RandomVerticalFlip", "params": {"p": 1.0}}], x), x.flip(-2))
    assert torch.equal(run([{"name": "CenterCrop", "params": {"size": 56}}], x), x[:, 4:60, 4:60])
    assert torch.equal(run([{"name": "RandomCrop", "params": {"padding": 0}}], x), x)
    assert torch.equal(run([{"name": "RandomRotation", "params": {"degrees": 0.0}}], x), x)
    assert torch.equal(run([{"name": "ColorJitter", "params": {"brightness": 0, "contrast": 0, "saturation": 0}}], x), x)
    gray = run([{"name": "RandomGrayscale", "params": {"p": 1.0}}], x).to(torch.float32)
    luma = (0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2])  # ITU-R 601 weights
    assert torch.equal(gray[0], gray[1]) and (gray[0] - luma).abs().max() <= 1.0


def test_random_crop_with_padding_is_a_shift_of_the_reflected_image():
    x = image(64)
    out = run([{"name": "RandomCrop", "params": {"padding": 4, "padding_mode": "reflect"}}], x, seed=3)
    padded = F.pad(x[None].float(), (4, 4, 4, 4), mode="reflect")[0].to(torch.uint8)
    windows = [(i, j) for i in range(9) for j in range(9) if torch.equal(padded[:, i:i + 64, j:j + 64], out)]
    assert windows  # the output is one 64x64 window of the reflect-padded image


def test_gaussian_blur_matches_a_hand_built_kernel():
    x = image(64)
    out = run([{"name": "GaussianBlur", "params": {"kernel_size": 5, "sigma": [1.5, 1.5]}}], x)
    grid = torch.arange(5, dtype=torch.float64) - 2
    kernel_1d = torch.exp(-grid ** 2 / (2 * 1.5 ** 2))
    kernel_1d /= kernel_1d.sum()
    kernel = (kernel_1d[:, None] * kernel_1d[None, :]).expand(3, 1, 5, 5)
    padded = F.pad(x[None].double(), (2, 2, 2, 2), mode="reflect")
    reference = F.conv2d(padded, kernel, groups=3)[0].round()
    assert (out.double() - reference).abs().max() <= 1


def test_random_erasing_blanks_one_rectangle_within_the_scale_range():
    x = torch.full((3, 64, 64), 200, dtype=torch.uint8)
    out = run([{"name": "RandomErasing", "params": {"p": 1.0, "scale": [0.1, 0.2], "value": 0}}], x, seed=5)
    blank = (out == 0).all(dim=0)
    rows, cols = blank.any(dim=1).nonzero().flatten(), blank.any(dim=0).nonzero().flatten()
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert int(blank.sum()) == int(box)  # a filled rectangle
    assert 0.1 * 4096 * 0.9 <= int(box) <= 0.2 * 4096 * 1.1  # rounding of the side lengths


def test_training_and_eval_transforms_normalize_with_the_given_stats():
    x = image(64)
    reference = (x.double() / 255 - torch.tensor(MEAN, dtype=torch.float64).view(3, 1, 1)) \
        / torch.tensor(STD, dtype=torch.float64).view(3, 1, 1)
    assert torch.allclose(training_transform([], MEAN, STD)(x).double(), reference, atol=1e-5)
    batch = torch.stack([x, x.flip(-1)])
    out = eval_transform(MEAN, STD)(batch)
    assert out.shape == (2, 3, 64, 64) and torch.allclose(out[1].double(), reference.flip(-1), atol=1e-5)
    explicit = [{"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]
    assert torch.allclose(training_transform(explicit, MEAN, STD)(x), x.float() / 255 * 2 - 1, atol=1e-5)
    empty_normalize = [{"name": "Normalize", "params": {}}]  # empty mean/std: the data set's own
    assert torch.allclose(training_transform(empty_normalize, MEAN, STD)(x).double(), reference, atol=1e-5)


def test_default_pipeline_keeps_the_input_size():
    for size in (64, 112):
        out = training_transform(DEFAULT_PIPELINE, MEAN, STD)(image(size))
        assert out.shape == (3, size, size) and out.dtype == torch.float32
    assert pipeline_warnings(DEFAULT_PIPELINE) == []


# ----------------------------------------------------------------------------- seeds, steps, exported code

ALL_STEPS = [{"name": name, "params": {}} for name in TRANSFORMS if name not in ("Normalize", "CenterCrop", "Resize")]


def test_preview_is_seeded_and_leaves_the_global_rng_alone():
    images = torch.stack([image(64, s) for s in range(3)])
    torch.manual_seed(123)
    first = preview_grid(images, ALL_STEPS, samples=4, seed=7)
    after_preview = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after_preview)
    assert first.shape == (3, 4, 3, 64, 64) and first.dtype == torch.uint8
    assert torch.equal(preview_grid(images, ALL_STEPS, samples=4, seed=7), first)
    other = preview_grid(images, ALL_STEPS, samples=4, seed=8)
    assert not torch.equal(other, first)
    assert not torch.equal(first[0, 0], first[0, 1])  # samples of one image differ from each other


def test_step_inspector_ends_at_the_preview_sample():
    images = torch.stack([image(64, s) for s in range(2)])
    trace = trace_steps(images[1], DEFAULT_PIPELINE, seed=11, stats=STATS, image_index=1)
    assert [title for title, _ in trace] == ["original", "1. RandomResizedCrop", "2. RandomHorizontalFlip",
                                             "3. ColorJitter"]
    assert torch.equal(trace[-1][1], preview_grid(images, DEFAULT_PIPELINE, samples=1, seed=11)[1, 0])


def test_exported_code_reproduces_the_pipeline():
    steps = ALL_STEPS + [{"name": "Normalize", "params": {}}]
    namespace: dict = {}
    exec(pipeline_code(steps, (64, 64), MEAN, STD), namespace)  # the code a student downloads
    x = image(64)
    for seed in range(5):
        torch.manual_seed(seed)
        ours = training_transform(steps, MEAN, STD)(x)
        torch.manual_seed(seed)
        assert torch.equal(namespace["train_transform"](x), ours)
    assert torch.allclose(namespace["eval_transform"](x), eval_transform(MEAN, STD)(x))


def test_json_round_trip_of_every_transform():
    steps = validate_pipeline([{"name": name, "params": {}} for name in TRANSFORMS])
    text = pipeline_to_json(steps)
    assert pipeline_from_json(text) == steps and json.loads(text) == steps
    assert validate_pipeline(steps) == steps  # normalizing twice changes nothing


# ----------------------------------------------------------------------------- validation messages

@pytest.mark.parametrize("steps, words", [
    ("RandomHorizontalFlip", "a pipeline is a list"),
    ([{"name": "RandomHorizontalFlip"}, {"name": "Sharpen"}], "step 1: unknown transform 'Sharpen'"),
    ([{"name": "RandomRotation", "params": {"angle": 3}}], "step 0 (RandomRotation): unknown parameter 'angle'"),
    ([{"name": "RandomHorizontalFlip", "params": {"p": 1.5}}], "parameter p = 1.5 is out of range"),
    ([{"name": "RandomHorizontalFlip", "params": {"p": "half"}}], "p = 'half' is not a number"),
    ([{"name": "RandAugment", "params": {"num_ops": 2.5}}], "num_ops = 2.5 is not an integer"),
    ([{"name": "RandAugment", "params": {"num_ops": True}}], "num_ops = True is not an integer"),
    ([{"name": "GaussianBlur", "params": {"kernel_size": 4}}], "kernel_size = 4 must be odd"),
    ([{"name": "RandomResizedCrop", "params": {"scale": [0.9, 0.5]}}], "scale = [0.9, 0.5] is not a range"),
    ([{"name": "RandomResizedCrop", "params": {"scale": [0.9]}}], "must be a list of 2 numbers"),
    ([{"name": "AutoAugment", "params": {"policy": "faces"}}], "policy = 'faces' is not one of"),
    ([{"name": "Normalize", "params": {"std": [0, 1, 1]}}], "std = [0, 1, 1] has a value out of range"),
    ([{"name": "Normalize"}, {"name": "RandomHorizontalFlip"}], "step 0 (Normalize): must be the last step"),
    ([{"name": "RandomHorizontalFlip", "p": 0.5}], "unknown key 'p'"),
])
def test_validation_names_step_transform_and_parameter(steps, words):
    with pytest.raises(ValueError) as error:
        validate_pipeline(steps)
    assert words in str(error.value)


def test_bad_json_is_a_clear_error():
    with pytest.raises(ValueError, match="not valid JSON"):
        pipeline_from_json("[{'name': 'RandomHorizontalFlip'}")


# ----------------------------------------------------------------------------- warnings that teach

@pytest.mark.parametrize("step, words", [
    ({"name": "RandomVerticalFlip"}, "upside-down"),
    ({"name": "RandomResizedCrop", "params": {"scale": [0.2, 1.0]}}, "cut away the eyes"),
    ({"name": "ColorJitter", "params": {"hue": 0.3}}, "skin green or blue"),
    ({"name": "RandomRotation", "params": {"degrees": 90}}, "aligned upright"),
    ({"name": "CenterCrop", "params": {"size": 40}}, "drops forehead"),
])
def test_harmful_settings_are_flagged(step, words):
    warnings = [str(w) for w in pipeline_warnings([{"name": "RandomHorizontalFlip"}, step])]
    assert any(words in w and "step 1" in w for w in warnings), warnings


def test_pipeline_level_warnings():
    assert "no augmentation" in str(pipeline_warnings([])[0])
    sizes = [str(w) for w in pipeline_warnings([{"name": "Resize", "params": {"size": 32}}], (64, 64))]
    assert any("come out 32x32" in w and "stay 64x64" in w for w in sizes)


# ----------------------------------------------------------------------------- MixUp and CutMix

def test_no_mix_gives_one_hot_targets():
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([2, 0, 1, 2])
    out, targets = batch_mix("none", 1.0, 3)(images, labels)
    assert torch.equal(out, images) and torch.equal(targets, torch.eye(3)[labels])


def test_mixup_blends_images_and_labels_with_the_same_weight():
    images, labels = torch.rand(6, 3, 8, 8), torch.arange(6)
    torch.manual_seed(0)
    out, targets = batch_mix("mixup", 0.4, 6)(images, labels)
    lam = float(targets[0, 0])
    partner = labels.roll(1)  # each image is mixed with the previous one in the batch
    assert torch.allclose(targets.sum(dim=1), torch.ones(6))
    assert torch.allclose(targets[torch.arange(6), partner], torch.full((6,), 1 - lam))
    assert torch.allclose(out, lam * images + (1 - lam) * images.roll(1, dims=0), atol=1e-6)


def test_cutmix_label_weight_is_the_pasted_area():
    images = torch.arange(1, 7, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 32, 32).clone()
    torch.manual_seed(1)
    out, targets = batch_mix("cutmix", 1.0, 6)(images, torch.arange(6))
    for i in range(6):
        from_partner = float((out[i, 0] == images[i - 1, 0, 0, 0]).float().mean())
        assert math.isclose(from_partner, float(targets[i, (i - 1) % 6]), abs_tol=1e-6)
        assert math.isclose(float(targets[i].sum()), 1.0, abs_tol=1e-6)


def test_mix_preview_weights_and_validation():
    a, b = image(64, 1), image(64, 2)
    mixed, weight_a, weight_b = mix_preview(a, b, "mixup", 1.0, seed=4)
    assert math.isclose(weight_a + weight_b, 1.0, abs_tol=1e-6)
    blend = (weight_a * a.float() + weight_b * b.float())
    assert (mixed.float() - blend).abs().max() <= 1.0
    assert mix_preview(a, b, "mixup", 1.0, seed=4)[1] == weight_a
    assert set(BATCH_MIXES) == {"none", "mixup", "cutmix"}
    with pytest.raises(ValueError, match="unknown"):
        batch_mix("mosaic", 1.0, 10)
    with pytest.raises(ValueError, match="alpha = 0 is out of range"):
        batch_mix("mixup", 0, 10)
    with pytest.raises(ValueError, match="num_classes = 1"):
        batch_mix("cutmix", 1.0, 1)


def test_transforms_and_mixers_survive_pickling_for_dataloader_workers():
    import pickle

    transform = training_transform(ALL_STEPS + [{"name": "Normalize", "params": {}}], MEAN, STD)
    copy = pickle.loads(pickle.dumps(transform))
    x = image(64)
    torch.manual_seed(2)
    expected = transform(x)
    torch.manual_seed(2)
    assert torch.equal(copy(x), expected)
    mixer = pickle.loads(pickle.dumps(batch_mix("cutmix", 1.0, 4)))
    assert mixer(torch.rand(4, 3, 8, 8), torch.arange(4))[1].shape == (4, 4)
