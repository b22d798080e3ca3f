"""Batched augmentation (lib/data/batch_augment.py, lib/data/batch_ops.py) against
torchvision.transforms.v2.functional applied image by image with the same parameters, its parameter
draws against torchvision's own make_params, and its use in lib/train/batches.py.

Tolerances: steps that only copy pixels (flips, pad + crop, erasing, grayscale choice) must match
exactly. Resampling, blur and colour steps compute the same sums in another order (a matrix product
instead of torch's interpolate kernel, two 1-D convolutions instead of one 2-D one, another HSV
formula), so they agree to float32 rounding: 2e-5 on values in [0, 1], far below one grey level
(1/255 = 0.004). Nearest-neighbour affine warps may pick the other neighbour where a sampling point
lies within float rounding of half-way between two pixels: at most 0.1 % of the pixels."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as nnf
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as tvf

from lib.data import batch_augment as ba
from lib.data import batch_ops as ops
from lib.data.augment import DEFAULT_PIPELINE, training_transform, validate_pipeline
from lib.data.datasets import ImageSet
from lib.data.transforms import TRANSFORMS
from lib.train.batches import EpochBatches, batch_seed

ATOL = 2e-5
POLICIES = ("RandAugment", "TrivialAugmentWide", "AutoAugment", "AugMix")


def images(count: int = 6, height: int = 20, width: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, height, width, generator=torch.Generator().manual_seed(seed))


def per_image(function, batch: torch.Tensor, *per_image_args) -> torch.Tensor:
    """torchvision's functional on each image, with image b's own arguments."""
    return torch.stack([function(image, *(arg[b] for arg in per_image_args)) for b, image in enumerate(batch)])


def as_list(tensor: torch.Tensor) -> list:
    return tensor.tolist()


# ----------------------------------------------------------------------------- given parameters

@pytest.mark.parametrize("size", [(20, 24), (9, 7), (31, 40)])  # the input's size, shrinking (antialias), enlarging
def test_resized_crop_matches_torchvision_resized_crop(size):
    batch = images()
    top, left = torch.tensor([0, 3, 5, 0, 10, 2]), torch.tensor([0, 4, 1, 12, 0, 7])
    height, width = torch.tensor([20, 9, 15, 4, 10, 17]), torch.tensor([24, 10, 23, 12, 3, 6])
    ours = ops.resized_crop(batch, top, left, height, width, size)
    theirs = torch.stack([tvf.resized_crop(image, int(t), int(l), int(h), int(w), list(size), antialias=True)
                          for image, t, l, h, w in zip(batch, top, left, height, width)])
    assert ours.shape == (6, 3, *size)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
    # A flip after the crop, done by reading the sampling positions in reverse.
    flip_x, flip_y = torch.tensor([True, False, True, False, True, False]), torch.tensor([True, True] + [False] * 4)
    flipped = ops.resized_crop(batch, top, left, height, width, size, flip_x=flip_x, flip_y=flip_y)
    theirs = torch.where(flip_x[:, None, None, None], tvf.hflip(theirs), theirs)
    theirs = torch.where(flip_y[:, None, None, None], tvf.vflip(theirs), theirs)
    torch.testing.assert_close(flipped, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric"])
def test_pad_crop_matches_pad_then_crop(mode):
    batch = images()
    padding = (3, 1, 4, 2)  # left, top, right, bottom
    top, left = torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([0, 7, 3, 5, 2, 1])
    ours = ops.pad_crop(batch, top, left, (20, 24), padding, mode)
    padded = tvf.pad(batch, list(padding), padding_mode=mode)
    theirs = torch.stack([tvf.crop(image, int(t), int(l), 20, 24) for image, t, l in zip(padded, top, left)])
    assert torch.equal(ours, theirs)


def test_flips_turn_exactly_the_chosen_images():
    batch, chosen = images(), torch.tensor([True, False, True, True, False, False])
    assert torch.equal(ops.flip(batch, chosen, -1), torch.where(chosen[:, None, None, None], tvf.hflip(batch), batch))
    assert torch.equal(ops.flip(batch, chosen, -2), torch.where(chosen[:, None, None, None], tvf.vflip(batch), batch))


def _mismatch(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float(((ours - theirs).abs() > ATOL).float().mean())


def test_affine_matches_torchvision_affine_image_by_image():
    batch = images(count=8, height=24, width=30)
    generator = torch.Generator().manual_seed(1)
    angle = torch.rand(8, generator=generator) * 80 - 40
    translate = torch.randint(-4, 5, (8, 2), generator=generator).double()
    scale = 0.8 + 0.4 * torch.rand(8, generator=generator)
    shear = torch.rand(8, 2, generator=generator) * 30 - 15
    ours = ops.affine(batch, angle, translate, scale, shear)
    theirs = torch.stack([tvf.affine(image, angle=float(a), translate=as_list(t), scale=float(s), shear=as_list(h),
                                     interpolation=v2.InterpolationMode.NEAREST, fill=0)
                          for image, a, t, s, h in zip(batch, angle, translate, scale, shear)])
    assert _mismatch(ours, theirs) <= 1e-3
    assert float((ours == 0).float().mean()) > 0.01  # some pixels came from outside: filled with 0


def test_rotation_matches_torchvision_rotate():
    batch, angle = images(count=5, height=22, width=22), torch.tensor([-30.0, -7.5, 3.0, 12.0, 44.0])
    ours = ops.affine(batch, **ops.rotation_as_affine(angle))
    theirs = per_image(lambda image, a: tvf.rotate(image, float(a), fill=0), batch, angle)
    assert _mismatch(ours, theirs) <= 1e-3
    assert not torch.equal(ours, batch)


def test_color_jitter_applies_the_four_operations_in_each_images_own_order():
    batch = images()
    order = torch.stack([torch.randperm(4, generator=torch.Generator().manual_seed(b)) for b in range(6)])
    factors = torch.tensor([[1.3, 0.6, 1.4, 0.1], [0.7, 1.5, 0.2, -0.3], [1.0, 1.0, 1.0, 0.0],
                            [0.5, 1.2, 1.6, 0.45], [1.6, 0.3, 0.9, -0.05], [0.9, 0.9, 0.0, 0.2]])
    functions = (tvf.adjust_brightness, tvf.adjust_contrast, tvf.adjust_saturation, tvf.adjust_hue)

    def reference(image, image_order, image_factors):
        for op in image_order.tolist():
            image = functions[op](image, float(image_factors[op]))
        return image

    ours = ops.color_jitter(batch, order, factors)
    torch.testing.assert_close(ours, per_image(reference, batch, order, factors), atol=ATOL, rtol=0)
    assert len({tuple(row) for row in order.tolist()}) > 1  # the images really had other orders


def test_hue_shift_and_grayscale_match_torchvision():
    batch, shift = images(), torch.tensor([-0.5, -0.2, 0.0, 0.1, 0.33, 0.5])
    torch.testing.assert_close(ops.hue_shift(batch, shift), per_image(lambda x, h: tvf.adjust_hue(x, float(h)),
                                                                     batch, shift), atol=ATOL, rtol=0)
    chosen = torch.tensor([True, False, False, True, True, False])
    gray = tvf.rgb_to_grayscale(batch, num_output_channels=3)
    torch.testing.assert_close(ops.grayscale(batch, chosen), torch.where(chosen[:, None, None, None], gray, batch),
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("kernel_size", [(3, 3), (7, 5)])
def test_gaussian_blur_uses_each_images_sigma(kernel_size):
    batch, sigma = images(), torch.tensor([0.1, 0.5, 1.0, 1.7, 2.0, 4.0])
    ours = ops.gaussian_blur(batch, kernel_size, sigma)
    theirs = per_image(lambda image, s: tvf.gaussian_blur(image, list(kernel_size), [float(s), float(s)]), batch, sigma)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_erase_blanks_each_chosen_images_own_box():
    batch, value = images(), torch.tensor([0.5])
    top, left = torch.tensor([0, 3, 5, 1, 0, 2]), torch.tensor([1, 0, 2, 9, 3, 3])
    height, width = torch.tensor([4, 2, 7, 0, 20, 5]), torch.tensor([3, 6, 2, 3, 24, 5])
    chosen = torch.tensor([True, True, False, True, True, True])
    theirs = torch.stack([tvf.erase(image, int(t), int(l), int(h), int(w), value[:, None, None]) if c else image
                          for image, t, l, h, w, c in zip(batch, top, left, height, width, chosen)])
    assert torch.equal(ops.erase(batch, top, left, height, width, chosen, value), theirs)


# ----------------------------------------------------------------------------- drawing parameters

def _torchvision_draws(transform, size, count: int) -> list[dict]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return [transform.make_params([torch.zeros(3, *size)]) for _ in range(count)]


@pytest.mark.parametrize("scale, ratio", [((0.08, 1.0), (0.75, 1.333)), ((0.9, 1.0), (0.5, 2.0))])
def test_crop_boxes_follow_torchvision_random_resized_crop(scale, ratio):
    """Areas within scale, aspect ratios log-uniform within ratio, and (the second case, where most
    tries do not fit) as many centre fallbacks and the same mean box as torchvision's make_params."""
    size, count = (40, 50), 4000
    ours = ba.draw_crop_boxes(count, size, scale, ratio, torch.Generator().manual_seed(3))
    theirs = _torchvision_draws(v2.RandomResizedCrop(size, scale=scale, ratio=ratio), size, 2000)
    h, w = ours["height"].double(), ours["width"].double()
    assert bool(((ours["top"] >= 0) & (ours["top"] + ours["height"] <= 40)).all())
    assert bool(((ours["left"] >= 0) & (ours["left"] + ours["width"] <= 50)).all())
    area = h * w / 2000
    fitted = area < 0.999  # (boxes that fit; the fallback is the whole image here)
    assert bool((area[fitted] >= scale[0] * 0.9).all()) and bool((area <= scale[1] + 1e-9).all())
    log_ratio = (w / h)[fitted].log()
    low, high = torch.log(torch.tensor(ratio, dtype=torch.float64))
    assert bool(((log_ratio > low - 0.15) & (log_ratio < high + 0.15)).all())  # +-rounding to whole pixels
    theirs_h = torch.tensor([d["height"] for d in theirs], dtype=torch.float64)
    theirs_w = torch.tensor([d["width"] for d in theirs], dtype=torch.float64)
    assert float((h * w).mean()) == pytest.approx(float((theirs_h * theirs_w).mean()), rel=0.04)
    assert float((w / h).log().mean()) == pytest.approx(float((theirs_w / theirs_h).log().mean()), abs=0.03)
    assert float((~fitted).double().mean()) == pytest.approx(float((theirs_h * theirs_w >= 1998).double().mean()),
                                                             abs=0.03)


def test_crop_box_areas_are_uniform_and_aspect_ratios_log_uniform():
    """Large images, so rounding to whole pixels hardly matters: the quartiles of the area share and of
    log(width / height) lie a quarter, half and three quarters of the way through their ranges."""
    boxes = ba.draw_crop_boxes(8000, (400, 400), (0.1, 0.2), (0.25, 4.0), torch.Generator().manual_seed(4))
    area = (boxes["height"] * boxes["width"]).double() / 160000
    log_ratio = (boxes["width"].double() / boxes["height"].double()).log()
    quartiles = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    torch.testing.assert_close(area.quantile(quartiles), 0.1 + 0.1 * quartiles, atol=0.004, rtol=0)
    low, high = torch.log(torch.tensor([0.25, 4.0], dtype=torch.float64))
    torch.testing.assert_close(log_ratio.quantile(quartiles), low + (high - low) * quartiles, atol=0.05, rtol=0)


def test_erase_boxes_and_rate_follow_torchvision_random_erasing():
    size, count, p = (32, 32), 4000, 0.3
    step = ba.EraseStep(p, (0.02, 0.33), (0.3, 3.3), [0])
    ours = step.draw(count, size, torch.Generator().manual_seed(5))
    theirs = _torchvision_draws(v2.RandomErasing(p=1.0, scale=(0.02, 0.33), ratio=(0.3, 3.3)), size, 2000)
    assert float(ours["chosen"].double().mean()) == pytest.approx(p, abs=0.03)
    area = (ours["height"] * ours["width"]).double()
    assert bool(((ours["height"] < 32) & (ours["width"] < 32)).all())
    assert float(area.mean()) == pytest.approx(sum(d["h"] * d["w"] for d in theirs) / 2000, rel=0.05)


def test_flip_grayscale_jitter_and_affine_draws_stay_in_their_ranges():
    generator, count = torch.Generator().manual_seed(7), 5000
    assert float(ba.FlipStep(0.3, -1).draw(count, (8, 8), generator)["chosen"].double().mean()) == \
        pytest.approx(0.3, abs=0.02)
    assert float(ba.GrayscaleStep(0.1).draw(count, (8, 8), generator)["chosen"].double().mean()) == \
        pytest.approx(0.1, abs=0.015)
    jitter = v2.ColorJitter(brightness=0.2, contrast=(0.5, 0.9), saturation=0, hue=0.1)
    drawn = ba.ColorJitterStep((jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)).draw(
        count, (8, 8), generator)
    factors = drawn["factors"]
    for column, (low, high) in enumerate([(0.8, 1.2), (0.5, 0.9), (1.0, 1.0), (-0.1, 0.1)]):
        assert low - 1e-6 <= float(factors[:, column].min()) and float(factors[:, column].max()) <= high + 1e-6
        assert float(factors[:, column].mean()) == pytest.approx((low + high) / 2, abs=0.01)
    # Saturation 0 is no operation: each image gets a random order of the other three.
    assert torch.equal(drawn["order"].sort(1).values, torch.tensor([0, 1, 3]).expand(count, 3))
    for op in (0, 1, 3):
        assert float((drawn["order"][:, 0] == op).double().mean()) == pytest.approx(1 / 3, abs=0.025)
    affine = ba.AffineStep((-10.0, 10.0), (0.1, 0.2), (0.9, 1.1), (-5.0, 5.0)).draw(count, (30, 40), generator)
    assert float(affine["angle"].abs().max()) <= 10 and float(affine["scale"].min()) >= 0.9
    assert torch.equal(affine["translate"], affine["translate"].round())  # whole pixels, like torchvision
    assert float(affine["translate"][:, 0].abs().max()) == 4 and float(affine["translate"][:, 1].abs().max()) == 6
    assert float(affine["shear"][:, 0].abs().max()) <= 5 and bool((affine["shear"][:, 1] == 0).all())


# ----------------------------------------------------------------------------- whole pipelines

EVERY_STEP = validate_pipeline([
    {"name": "RandomCrop", "params": {"size": 0, "padding": 4, "padding_mode": "reflect"}},
    {"name": "RandomResizedCrop", "params": {"size": 28}},
    {"name": "RandomHorizontalFlip"}, {"name": "RandomVerticalFlip", "params": {"p": 0.2}},
    {"name": "RandomRotation"}, {"name": "RandomAffine", "params": {"degrees": 5.0, "shear": 5.0}},
    {"name": "ColorJitter", "params": {"hue": 0.05}}, {"name": "RandomGrayscale"}, {"name": "GaussianBlur"},
    {"name": "RandomErasing", "params": {"p": 0.5}}, {"name": "Resize", "params": {"size": 30}},
    {"name": "CenterCrop", "params": {"size": 24}}, {"name": "Normalize"},
])


def uint8_batch(count: int = 8, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))


def test_every_step_but_the_policies_and_perspective_has_a_batched_form():
    for name in TRANSFORMS:
        pipeline = ba.batch_pipeline([{"name": name}], (0.5,) * 3, (0.2,) * 3)
        assert (pipeline is None) == (name in POLICIES + ("RandomPerspective",)), name
    assert ba.batch_pipeline(DEFAULT_PIPELINE + [{"name": "RandAugment"}], (0.5,) * 3, (0.2,) * 3) is None


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_random_crop_cuts_each_image_at_its_own_offset_of_the_padded_image(mode):
    """Every output is torchvision's pad + crop of its input at one of the 5 x 5 offsets, and the batch
    uses many different offsets."""
    steps = [{"name": "RandomCrop", "params": {"size": 0, "padding": 2, "padding_mode": mode}}]
    batch = uint8_batch(count=32, size=12)
    out = ba.batch_pipeline(steps, (0.0,) * 3, (1.0,) * 3)(batch, torch.Generator().manual_seed(8))
    padded = tvf.pad(batch.float() / 255, [2, 2, 2, 2], padding_mode=mode)
    offsets = set()
    for image, source in zip(out, padded):
        found = [(top, left) for top in range(5) for left in range(5)
                 if torch.allclose(tvf.crop(source, top, left, 12, 12), image, atol=1e-6)]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) >= 12


@pytest.mark.parametrize("size", [0, 20])  # enlarging (grid_sample) and shrinking (matrices)
def test_flips_taken_over_by_the_crop_give_the_same_pictures_as_separate_steps(size):
    steps = [{"name": "RandomResizedCrop", "params": {"size": size}}, {"name": "RandomHorizontalFlip"},
             {"name": "RandomVerticalFlip"}]
    fused = ba.batch_pipeline(steps, (0.5,) * 3, (0.2,) * 3)
    assert [type(step) for step in fused.steps] == [ba.ResizedCropStep] and len(fused.steps[0].flips) == 2
    separate = ba.BatchAugment([ba.ResizedCropStep((size, size) if size else None, (0.8, 1.0), (0.75, 1.33)),
                                ba.FlipStep(0.5, -1), ba.FlipStep(0.5, -2)], (0.5,) * 3, (0.2,) * 3)
    batch = uint8_batch()
    expected = separate(batch, torch.Generator().manual_seed(6))
    torch.testing.assert_close(fused(batch, torch.Generator().manual_seed(6)), expected, atol=1e-6, rtol=0)


def test_a_seed_gives_the_same_batch_and_each_image_its_own_parameters():
    augment = ba.batch_pipeline(EVERY_STEP, (0.5,) * 3, (0.2,) * 3)
    batch = uint8_batch()
    first = augment(batch, torch.Generator().manual_seed(11))
    assert first.shape == (8, 3, 24, 24) and first.dtype == torch.float32
    assert torch.equal(first, augment(batch, torch.Generator().manual_seed(11)))
    assert not torch.equal(first, augment(batch, torch.Generator().manual_seed(12)))
    copied = pickle.loads(pickle.dumps(augment))  # as DataLoader workers started by "spawn" receive it
    assert torch.equal(first, copied(batch, torch.Generator().manual_seed(11)))
    twins = augment(uint8_batch()[:1].expand(4, -1, -1, -1), torch.Generator().manual_seed(11))
    assert not torch.equal(twins[0], twins[1]) and not torch.equal(twins[2], twins[3])


def test_the_apply_path_needs_no_values_on_the_cpu():
    """On the meta device a tensor has no values: a step that read one back (.item(), a boolean mask
    index, a per-image loop over values) would fail here, so the same code runs on a GPU without syncs."""
    augment = ba.batch_pipeline(EVERY_STEP, (0.5,) * 3, (0.2,) * 3)
    out = augment(uint8_batch().to("meta"), torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and out.shape == (8, 3, 24, 24) and out.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_batch_is_augmented_without_waiting_for_the_gpu_and_like_on_the_cpu():
    augment = ba.batch_pipeline(EVERY_STEP, (0.5,) * 3, (0.2,) * 3)
    batch = uint8_batch()
    on_gpu = batch.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any operation that waits for the GPU raises
    try:
        out = augment(on_gpu, torch.Generator().manual_seed(4))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    on_cpu = augment(batch, torch.Generator().manual_seed(4))
    # The same parameters; float rounding may move a nearest-neighbour pick by one pixel here and there.
    assert float(((out.cpu() - on_cpu).abs() > 1e-3).float().mean()) < 0.01


def test_deterministic_steps_and_normalization_match_the_per_image_pipeline():
    """Resize + CenterCrop + Normalize: the per-image v2 pipeline resizes uint8 images with torch's
    fixed-point weights and rounds to whole grey levels, the batch stays float: within one grey level
    (then divided by the smallest std)."""
    steps = validate_pipeline([{"name": "Resize", "params": {"size": 20}},
                               {"name": "CenterCrop", "params": {"size": 16}}])
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    batch = uint8_batch()
    ours = ba.batch_pipeline(steps, mean, std)(batch, torch.Generator())
    reference = training_transform(steps, mean, std)
    theirs = torch.stack([reference(image) for image in batch])
    assert ours.shape == theirs.shape == (8, 3, 16, 16)
    torch.testing.assert_close(ours, theirs, atol=1 / 255 / 0.2, rtol=0)


def test_the_default_pipeline_varies_images_as_much_as_the_per_image_pipeline():
    """32 copies each of 32 smooth images: the spread of the copies of one image (the std over the copies,
    averaged over pixels) measures how strongly the pipeline augments; without any one of its steps it
    drops by 9 % or more. The means differ by torchvision's uint8 colour operations, which truncate
    (about half a grey level darker per operation, three of them: 0.03 after normalizing by 0.2)."""
    smooth = nnf.interpolate(torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(0)), size=32,
                             mode="bilinear")
    batch = (smooth * 255).round().to(torch.uint8).repeat_interleave(32, 0)
    ours = ba.batch_pipeline(DEFAULT_PIPELINE, (0.5,) * 3, (0.2,) * 3)(batch, torch.Generator().manual_seed(0))
    reference = training_transform(DEFAULT_PIPELINE, (0.5,) * 3, (0.2,) * 3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        theirs = torch.stack([reference(image) for image in batch])

    def spread(images):
        return float(images.view(32, 32, 3, 32, 32).std(1).mean())

    assert spread(ours) == pytest.approx(spread(theirs), rel=0.02)
    assert float(ours.mean()) == pytest.approx(float(theirs.mean()), abs=0.06)


# ----------------------------------------------------------------------------- training batches

def _split(count: int = 24) -> ImageSet:
    images = uint8_batch(count, 16)
    return ImageSet(images=images, labels=torch.arange(count) % 4, classes=list("abcd"), paths=[""] * count)


def test_training_batches_use_the_batched_pipeline_with_the_batch_seed():
    mean, std = (0.5,) * 3, (0.25,) * 3
    batches = EpochBatches(_split(), DEFAULT_PIPELINE, mean, std, batch_size=8, seed=3)
    batches.set_epoch(2)
    images, labels = batches[1]
    raw = batches.raw_batch(1)
    assert raw.seed == batch_seed(3, 2, 1) and raw.images.dtype == torch.uint8 and torch.equal(raw.labels, labels)
    expected = ba.batch_pipeline(DEFAULT_PIPELINE, mean, std)(raw.images, torch.Generator().manual_seed(raw.seed))
    assert torch.equal(images, expected)
    assert torch.equal(batches.augment_batch(raw.images, raw.seed), images)
    deferred = EpochBatches(_split(), DEFAULT_PIPELINE, mean, std, batch_size=8, seed=3, augment_in_loader=False)
    deferred.set_epoch(2)
    assert torch.equal(deferred[1].images, raw.images) and deferred[1].seed == raw.seed


def test_a_pipeline_without_batched_form_is_augmented_image_by_image():
    steps = validate_pipeline([{"name": "RandAugment"}])
    batches = EpochBatches(_split(), steps, (0.5,) * 3, (0.25,) * 3, batch_size=8, seed=3)
    batches.set_epoch(0)
    assert batches.batched is None
    images, _ = batches[0]
    raw = batches.raw_batch(0)
    assert torch.equal(images, batches.augment_batch(raw.images, raw.seed)) and images.shape == (8, 3, 16, 16)
    assert not torch.equal(images, batches.augment_batch(raw.images, raw.seed + 1))
