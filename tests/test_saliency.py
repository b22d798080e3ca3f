"""Saliency maps: every method on every model, checked against hand-made references
(autograd gradients, IG completeness, occlusion by hand, GradCAM by hooks)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.eval import saliency
from tests.explore_models import explore_models, face_images

MODELS = explore_models()


@pytest.fixture(scope="module")
def faces():
    return face_images(3)


def _normalized(model_info, pixels):
    mean = torch.tensor(model_info.mean).view(1, -1, 1, 1)
    std = torch.tensor(model_info.std).view(1, -1, 1, 1)
    return (pixels - mean) / std


def _score(info, pixels, target):
    forward = saliency.PixelClassifier(info.model, info.mean, info.std, info.class_weights).eval()
    return forward(pixels)[:, target]


@pytest.mark.parametrize("info", MODELS, ids=[m.label for m in MODELS])
@pytest.mark.parametrize("method", sorted(saliency.METHODS))
def test_every_method_on_every_model(info, method, faces):
    images, _ = faces
    targets = saliency.choose_targets(info.model, images[:1], info.mean, info.std, "predicted",
                                      class_weights=info.class_weights)
    result = saliency.explain_class(info.model, images[:1], info.mean, info.std, method, targets,
                                    class_weights=info.class_weights)
    assert result.maps.shape == (1, 64, 64)
    assert np.isfinite(result.maps).all()
    assert all(np.abs(m).max() > 0 for m in result.maps), "a map is all zero"
    heat = saliency.heatmap(result.maps[0], method)
    assert heat.shape == (64, 64) and heat.min() >= 0 and heat.max() == pytest.approx(1.0)


def test_saliency_is_the_absolute_input_gradient(faces):
    info = MODELS[0]
    pixels = faces[0][:1].float().div(255).requires_grad_(True)
    score = _score(info, pixels, 5).sum()
    (grad,) = torch.autograd.grad(score, pixels)
    result = saliency.explain_class(info.model, faces[0][:1], info.mean, info.std, "saliency", 5,
                                    class_weights=info.class_weights)
    np.testing.assert_allclose(result.maps[0], grad.abs().sum(1)[0].numpy(), rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("info", MODELS[:2], ids=[m.label for m in MODELS[:2]])
def test_integrated_gradients_add_up_to_the_score_difference(info, faces):
    """Completeness: the attributions sum to score(face) - score(mean-color baseline)."""
    image = faces[0][:1]
    result = saliency.explain_class(info.model, image, info.mean, info.std, "integrated_gradients", 7,
                                    class_weights=info.class_weights, n_steps=64)
    baseline = torch.tensor(info.mean).view(1, -1, 1, 1).expand(1, 3, 64, 64)
    with torch.no_grad():
        expected = (_score(info, image.float() / 255, 7) - _score(info, baseline, 7)).item()
    assert result.maps[0].sum() == pytest.approx(expected, rel=0.05, abs=1e-4)
    assert result.scores[0] == pytest.approx(_score(info, image.float() / 255, 7).item(), rel=1e-5)


def test_occlusion_matches_covering_by_hand(faces):
    """With window = stride = 16 each pixel is covered once: its value is the score drop
    when its square turns mean-gray, once per color channel."""
    info = MODELS[0]
    image = faces[0][:1].float() / 255
    result = saliency.explain_class(info.model, faces[0][:1], info.mean, info.std, "occlusion", 2,
                                    class_weights=info.class_weights, window=16, stride=16)
    with torch.no_grad():
        full = _score(info, image, 2).item()
        covered = image.clone()
        covered[:, :, 16:32, 32:48] = torch.tensor(info.mean).view(1, 3, 1, 1)
        drop = full - _score(info, covered, 2).item()
    assert result.maps[0, 20, 40] == pytest.approx(3 * drop, rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("info", MODELS[:2], ids=[m.label for m in MODELS[:2]])
def test_gradcam_matches_hooks_by_hand(info, faces):
    model, stage = info.model, 1
    pixels = faces[0][:1].float() / 255
    store = {}
    handle = model.stages[stage].register_forward_hook(lambda m, i, o: store.update(act=o))
    try:
        score = _score(info, pixels, 4).sum()
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(score, store["act"])
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = (weights * store["act"]).sum(1, keepdim=True)
    expected = F.interpolate(cam, size=(64, 64), mode="bilinear")[0, 0].detach().numpy()
    result = saliency.explain_class(model, faces[0][:1], info.mean, info.std, "gradcam", 4, stage=stage,
                                    class_weights=info.class_weights)
    np.testing.assert_allclose(result.maps[0], expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("method", ["integrated_gradients", "gradcam"])
def test_pair_mode_explains_the_cosine_of_the_pair(method, faces):
    info = MODELS[0]
    images, _ = faces
    map_a, map_b, cosine = saliency.explain_pair(info.model, images[0], images[1], info.mean, info.std, method)
    with torch.no_grad():
        embeddings = info.model.embed(_normalized(info, images[:2].float() / 255))
    expected = F.cosine_similarity(embeddings[:1], embeddings[1:]).item()
    assert cosine == pytest.approx(expected, abs=1e-5)
    assert map_a.scores[0] == pytest.approx(expected, abs=1e-5) == map_b.scores[0]
    for result in (map_a, map_b):
        assert result.maps.shape == (1, 64, 64) and np.isfinite(result.maps).all() and np.abs(result.maps).max() > 0
    assert not np.allclose(map_a.maps, map_b.maps)


def test_pair_integrated_gradients_are_complete(faces):
    info = MODELS[0]
    images, _ = faces
    map_a, _, cosine = saliency.explain_pair(info.model, images[0], images[1], info.mean, info.std,
                                             "integrated_gradients", n_steps=64)
    baseline = torch.tensor(info.mean).view(1, -1, 1, 1).expand(1, 3, 64, 64)
    with torch.no_grad():
        reference = info.model.embed(_normalized(info, images[1:2].float() / 255))
        at_baseline = F.cosine_similarity(info.model.embed(_normalized(info, baseline)), reference).item()
    assert map_a.maps[0].sum() == pytest.approx(cosine - at_baseline, rel=0.05, abs=1e-4)


def test_targets_predicted_true_and_chosen(faces):
    info = MODELS[0]
    images, labels = faces
    with torch.no_grad():
        scores = saliency.PixelClassifier(info.model, info.mean, info.std, info.class_weights)(images.float() / 255)
    predicted = saliency.choose_targets(info.model, images, info.mean, info.std, "predicted",
                                        class_weights=info.class_weights)
    assert predicted == scores.argmax(1).tolist()
    assert saliency.choose_targets(info.model, images, info.mean, info.std, "true", labels.tolist()) == labels.tolist()
    assert saliency.choose_targets(info.model, images, info.mean, info.std, "chosen", chosen=9) == [9, 9, 9]
    with pytest.raises(ValueError, match="true"):
        saliency.choose_targets(info.model, images, info.mean, info.std, "true")


def test_bad_requests_name_the_problem(faces):
    info = MODELS[0]
    image = faces[0][0]
    with pytest.raises(ValueError, match="method"):
        saliency.explain_class(info.model, image, info.mean, info.std, "lime", 0)
    with pytest.raises(ValueError, match="stage"):
        saliency.explain_class(info.model, image, info.mean, info.std, "gradcam", 0, stage=12)
    with pytest.raises(ValueError, match="class 5000"):
        saliency.explain_class(info.model, image, info.mean, info.std, "saliency", 5000)


def test_overlay_blends_with_the_chosen_opacity(faces):
    import matplotlib
    image = faces[0][0]
    heat = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    assert np.array_equal(saliency.overlay(image, heat, 0.0), image.permute(1, 2, 0).numpy())
    gray = torch.full((3, 64, 64), 100, dtype=torch.uint8)
    full = saliency.overlay(gray, heat, 1.0)
    assert full.shape == (64, 64, 3) and full.dtype == np.uint8
    hottest = np.array(matplotlib.colormaps["jet"](1.0)[:3]) * 255  # heat 1: the map's color alone
    coldest = 0.8 * 100 + 0.2 * np.array(matplotlib.colormaps["jet"](0.0)[:3]) * 255  # heat 0: 20% color
    np.testing.assert_allclose(full[-1, -1], hottest, atol=1)
    np.testing.assert_allclose(full[0, 0], coldest, atol=1)


def test_display_filter_removes_the_stride_checkerboard():
    checkerboard = np.indices((64, 64)).sum(0) % 2 * 2.0 - 1.0  # +1/-1 alternating pixels
    ramp = np.linspace(0.2, 1, 64, dtype=np.float32)[None, :].repeat(64, 0)
    striped = ramp * (1 + 0.5 * checkerboard)  # magnitudes alternating from pixel to pixel
    smoothed = saliency.heatmap(striped, "integrated_gradients")
    reference = saliency.heatmap(ramp, "integrated_gradients")
    np.testing.assert_allclose(smoothed[1:-1, 1:-1], reference[1:-1, 1:-1], atol=0.02)
    raw = saliency.heatmap(striped, "integrated_gradients", smooth=False)
    assert np.abs(raw - reference).max() > 0.3  # without the filter the checkerboard dominates


def test_stage_choices_describe_each_stage():
    info = MODELS[0]
    choices = saliency.stage_choices(info.model)
    assert [index for _, index in choices] == list(range(len(info.model.stages)))
    assert choices[-1][0].startswith(f"stage {len(choices)}: {info.model.spec.stages[-1].out_chs} ch")
