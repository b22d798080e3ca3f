"""Models the Explore tests run on: the shipped demo checkpoints when they are
present, otherwise randomly initialised face presets (so the tests still run
on a fresh clone before the demos are trained)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lib import config
from lib.net import FaceNet
from lib.presets import PRESETS

DEMO_NAMES = ("demo-ce", "demo-arcface", "demo-cosface", "demo-sphereface")
RANDOM_PRESETS = ("face_resnet", "face_mobilenet", "face_convnext")


@dataclass
class ModelInfo:
    label: str
    model: FaceNet
    mean: tuple
    std: tuple
    class_weights: torch.Tensor | None


def demo_folders() -> list:
    folders = [config.CHECKPOINTS_DIR / name for name in DEMO_NAMES]
    return [f for f in folders if (f / "model.safetensors").exists()]


def explore_models() -> list[ModelInfo]:
    folders = demo_folders()
    if folders:
        from lib.explore import load_model
        return [ModelInfo(folder.name, *load_model(folder)) for folder in folders]
    infos = []
    for seed, name in enumerate(RANDOM_PRESETS):
        torch.manual_seed(seed)
        infos.append(ModelInfo(f"random-{name}", _like_trained(FaceNet(PRESETS[name])).eval(),
                               (0.5, 0.42, 0.38), (0.27, 0.24, 0.24), None))
    return infos


def _like_trained(model: FaceNet) -> FaceNet:
    """Give every norm layer non-trivial statistics and shifts. Freshly initialised, a ReLU net
    without biases is positively homogeneous (embed(a*x) = a*embed(x)), which makes the cosine
    of a pair flat along Integrated Gradients' path: nothing like a trained model."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    return model


def face_images(count: int, split: str = "dev") -> tuple[torch.Tensor, torch.Tensor]:
    """The first image of ``count`` different identities of the embedded data (uint8, labels)."""
    from lib.data import load_split
    image_set = load_split(config.EMBEDDED_DATA, split)
    picks, seen = [], set()
    for index, label in enumerate(image_set.labels.tolist()):
        if label not in seen:
            seen.add(label)
            picks.append(index)
        if len(picks) == count:
            break
    return image_set.images[picks], image_set.labels[picks]
