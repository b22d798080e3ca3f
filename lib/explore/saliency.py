"""Saliency for the Saliency and Inspect pages: one face (a class score) or one pair
(its cosine similarity), on an explored checkpoint, with class names instead of indices."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lib.eval import saliency
from lib.explore.models import ExploreModel


@dataclass
class FaceMap:
    heat: np.ndarray        # [H, W] in [0, 1] for display
    raw: np.ndarray         # [H, W] signed attribution
    target: str             # what was explained, in words
    score: float
    predicted: str
    confidence: str         # "p = 0.83" (softmax of a CE model) or "cos = 0.61" (margin head)


def _class_names(model: ExploreModel) -> list[str]:
    return model.classes or [f"class {i}" for i in range(model.model.num_classes)]


def resolve_target(model: ExploreModel, image: torch.Tensor, kind: str, true_name: str | None,
                   chosen_name: str | None) -> int:
    """The class index to explain: the model's prediction, the image's true identity, or a chosen one."""
    names = _class_names(model)
    if kind == "predicted":
        return saliency.choose_targets(model.model, image, model.mean, model.std, "predicted",
                                       class_weights=model.class_weights)[0]
    wanted = true_name if kind == "true" else chosen_name
    if wanted not in names:
        raise ValueError(f"target: {model.label} was not trained on {wanted!r}, so it has no class score for "
                         f"that person; explain the predicted class instead")
    return names.index(wanted)


def stage_index(model: ExploreModel, position: int, image_size: int) -> int:
    """GradCAM's stage counted from the end (0 = last stage), clamped to this model's depth."""
    stages = len(saliency.stage_modules(model.model, image_size))
    return max(0, stages - 1 - min(position, stages - 1))


def explain_face(model: ExploreModel, image: torch.Tensor, method: str, kind: str = "predicted",
                 true_name: str | None = None, chosen_name: str | None = None, stage_from_end: int = 0,
                 **options) -> FaceMap:
    target = resolve_target(model, image, kind, true_name, chosen_name)
    result = saliency.explain_class(model.model, image, model.mean, model.std, method, target,
                                    stage=stage_index(model, stage_from_end, image.shape[-1]), class_weights=model.class_weights,
                                    **options)
    names = _class_names(model)
    predicted, confidence = prediction(model, image)
    return FaceMap(heat=saliency.heatmap(result.maps[0], method), raw=result.maps[0],
                   target=names[target], score=float(result.scores[0]),
                   predicted=names[predicted], confidence=confidence)


def verdict(predicted: str, true_name: str) -> tuple[bool, str]:
    """(right?, "predicted X" or "predicted X (true: Y)"), with LFW's underscores as spaces."""
    right = predicted == true_name
    words = f"predicted **{predicted.replace('_', ' ')}**"
    return right, words if right else f"{words} (true: **{true_name.replace('_', ' ')}**)"


def verdict_markdown(predicted: str, true_name: str) -> str:
    """The verdict as Streamlit markdown: green with a check when right, red with a cross when wrong."""
    right, words = verdict(predicted, true_name)
    return f":green[:material/check_circle: {words}]" if right else f":red[:material/cancel: **wrong:** {words}]"


def prediction(model: ExploreModel, image: torch.Tensor) -> tuple[int, str]:
    """(class, confidence in words). A margin head's cosines have no calibrated softmax without
    its scale, so they are reported as the cosine itself."""
    forward = saliency.PixelClassifier(model.model, model.mean, model.std, model.class_weights).eval()
    with torch.no_grad():
        scores = forward(saliency.to_pixels(image))[0]
    best = int(scores.argmax())
    if model.class_weights is not None:
        return best, f"cos = {float(scores[best]):.2f}"
    return best, f"p = {float(torch.softmax(scores, 0)[best]):.2f}"


@dataclass
class PairMaps:
    heat_a: np.ndarray
    heat_b: np.ndarray
    cosine: float


def explain_pair(model: ExploreModel, image_a: torch.Tensor, image_b: torch.Tensor, method: str,
                 stage_from_end: int = 0, **options) -> PairMaps:
    map_a, map_b, cosine = saliency.explain_pair(model.model, image_a, image_b, model.mean, model.std, method,
                                                 stage=stage_index(model, stage_from_end, image_a.shape[-1]), **options)
    return PairMaps(saliency.heatmap(map_a.maps[0], method), saliency.heatmap(map_b.maps[0], method), cosine)
