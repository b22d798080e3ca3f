"""Models made outside FaceLab, saved the ways students save them, for the foreign-model tests."""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torchvision
from torch import nn

from lib.model.zoo import build

# The smallest variant of every family FaceLab recognises, for real forwards. Wide ResNet is
# torchvision's ResNet class with wider bottlenecks (the code path of resnet50 and ResNeXt): its
# 69M parameters would cost seconds to make and save, so it is checked on the meta device only.
SMALLEST = ("resnet18", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_small",
            "convnext_tiny", "efficientnet_b0", "regnet_x_400mf", "regnet_y_400mf")

# The course notebook's style: forward returns {"feats": ..., "out": ...}; the constructor takes
# num_classes. Importing the file writes MARKER (so a test can tell whether its code ran).
COURSE_MODEL_CODE = '''
from pathlib import Path
import torch
from torch import nn

Path(__file__).with_name("imported.marker").write_text("the model's code ran")


class Network(nn.Module):
    def __init__(self, num_classes=7):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.cls_layer = nn.Linear(16, num_classes)

    def forward(self, x):
        feats = self.backbone(x)
        return {"feats": feats, "out": self.cls_layer(feats)}
'''


class CourseNetwork(nn.Module):
    """The same network as COURSE_MODEL_CODE, importable here (for ONNX exports)."""

    def __init__(self, num_classes: int = 7):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.cls_layer = nn.Linear(16, num_classes)

    def forward(self, x):
        feats = self.backbone(x)
        return {"feats": feats, "out": self.cls_layer(feats)}


def random_torchvision(name: str, num_classes: int, seed: int = 0) -> nn.Module:
    """torchvision's ``name`` with random weights, in eval mode. Built on meta and filled directly
    (constructor initialisation of a 69M-parameter model costs seconds); batch-norm statistics get
    plausible values so activations neither vanish nor explode."""
    generator = torch.Generator().manual_seed(seed)
    model = build(name, num_classes, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                tensor.zero_()
            elif key.endswith("running_var"):
                tensor.uniform_(0.5, 1.5, generator=generator)
            elif key.endswith(("running_mean", "bias")):
                tensor.normal_(0.0, 0.05, generator=generator)
            elif tensor.dim() > 1:
                fan_in = tensor[0].numel()
                tensor.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
            else:
                tensor.uniform_(0.8, 1.2, generator=generator)  # norm scales
    return model.eval()


def penultimate(model: nn.Module) -> nn.Module:
    """torchvision's own penultimate features: a copy whose final Linear is replaced by Identity."""
    features = copy.deepcopy(model)
    if hasattr(features, "fc"):
        features.fc = nn.Identity()
    else:
        features.classifier[-1] = nn.Identity()
    return features.eval()


def save_state_dict(model: nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


def save_course_checkpoint(model: nn.Module, path: Path, wrap: str = "") -> Path:
    """The course notebook's checkpoint dict, optionally from nn.DataParallel ("module.") or torch.compile
    ("_orig_mod.") names."""
    state = model.state_dict()
    if wrap:
        state = {f"{wrap}{key}": value for key, value in state.items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    torch.save({"model_state_dict": state, "optimizer_state_dict": optimizer.state_dict(),
                "scheduler_state_dict": scheduler.state_dict(), "epoch": 12, "metric": 0.91}, path)
    return path


class CodeTrap:
    """Unpickling this runs a shell command that creates ``marker``: the classic pickle attack."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch '{self.marker}'",))


def save_trap(path: Path, marker: Path, legacy: bool = False) -> Path:
    """A course-style checkpoint whose extra entry is a code trap (``legacy``: torch's old bare-pickle format)."""
    model = torchvision.models.resnet18(num_classes=3)
    torch.save({"model_state_dict": model.state_dict(), "trap": CodeTrap(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    return path
