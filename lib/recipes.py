"""Named training recipes: hyperparameters that work together, as data.

A recipe is a set of TrainConfig fields (lib/train_config.py) plus the model
preset it was made for. The Train page applies one to its widgets; the user
can then change anything. Two are built in (a quick CPU recipe for LFW-64 and
the ConvNeXt recipe of the course, scaled down to LFW-64); every run file in
recipes/*.json (the demo checkpoints' recipes) is offered too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from lib import config


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    summary: str
    config: dict = field(default_factory=dict)  # TrainConfig fields
    preset: str = ""  # the model preset the recipe was made for ("" = any) ...
    model: dict | None = None  # ... or its own model spec


def _lite_resnet() -> dict:
    """face_resnet with a stride-2 stem: a quarter of the MACs, the same parameters."""
    from lib.presets import PRESETS
    spec = PRESETS["face_resnet"]
    return replace(spec, name="face_resnet_lite", stem=replace(spec.stem, stride=2)).to_dict()


QUICK_CPU = Recipe(
    name="quick_cpu",
    title="Quick CPU run on LFW-64",
    summary="A small ResNet (widths 32-256, one block per stage, a stride-2 stem to spare the CPU), SGD "
            "with Nesterov momentum, a cosine schedule after one warm-up epoch and label smoothing: ten "
            "epochs that give a useful model on a laptop CPU.",
    config={"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
            "schedule": "cosine", "warmup_epochs": 1.0, "epochs": 10, "batch_size": 64, "label_smoothing": 0.1,
            "ema": False, "mix": "none", "drop_path_rate": None, "loss": "ce", "precision": "fp32"},
    model=_lite_resnet())

CONVNEXT = Recipe(
    name="convnext_course",
    title="ConvNeXt recipe (course table, scaled to LFW-64)",
    summary="The ConvNeXt paper's training recipe from the course: AdamW, cosine decay after a linear "
            "warm-up, label smoothing, MixUp, stochastic depth and an EMA of the weights, with the batch, "
            "epochs and EMA decay scaled to a data set of 2,800 images (see the table).",
    config={"optimizer": "adamw", "lr": 1e-3, "momentum": 0.9, "nesterov": False, "weight_decay": 0.05,
            "schedule": "cosine", "warmup_epochs": 2.0, "epochs": 30, "batch_size": 128, "label_smoothing": 0.1,
            "ema": True, "ema_decay": 0.99, "mix": "mixup", "mix_alpha": 0.8, "drop_path_rate": 0.1,
            "grad_clip": 0.0, "loss": "ce", "precision": "fp32"},
    preset="face_convnext")

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (QUICK_CPU, CONVNEXT)}

# The course's ConvNeXt-T ImageNet-1K table next to the scaled recipe: (setting, paper, here, why).
CONVNEXT_TABLE = [
    ("optimizer", "AdamW", "AdamW", "decoupled weight decay"),
    ("base learning rate", "4e-3", "1e-3", "the paper's rate is for batch 4096; scaled for batch 128 and few steps"),
    ("weight decay", "0.05", "0.05", ""),
    ("optimizer momentum", "β1, β2 = 0.9, 0.999", "0.9, 0.999", ""),
    ("batch size", "4096", "128", "LFW-64 has 2,800 training images: 4096 would be more than one epoch"),
    ("training epochs", "300", "30", "minutes, not days, on a CPU"),
    ("learning rate schedule", "cosine decay", "cosine decay", ""),
    ("warmup epochs", "20", "2", "the same share of training (about 7%)"),
    ("warmup schedule", "linear", "linear", ""),
    ("layer-wise lr decay", "none", "none", ""),
    ("randaugment", "(9, 0.5)", "Augment page", "add RandAugment to the pipeline there if you want it"),
    ("label smoothing", "0.1", "0.1", ""),
    ("mixup", "0.8", "0.8", ""),
    ("cutmix", "1.0", "off", "one batch mix at a time here; pick CutMix with alpha 1.0 instead of MixUp to try it"),
    ("stochastic depth", "0.1 / 0.4 / 0.5 / 0.5 (T/S/B/L)", "0.1", "the smallest model's rate"),
    ("layer scale", "1e-6", "block default", "set per stage on the Build page"),
    ("gradient clip", "none", "none", ""),
    ("EMA of weights", "0.9999", "0.99", "EMA averages about 1/(1-decay) steps: 10,000 is more than this whole run"),
]


def file_recipes() -> dict[str, Recipe]:
    """The run files in recipes/*.json as recipes (their hyperparameters and preset)."""
    found = {}
    for path in sorted(config.RECIPES_DIR.glob("*.json")):
        try:
            run = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a broken file is reported by `python -m lib train`, not here
        if not isinstance(run, dict) or not isinstance(run.get("config"), dict):
            continue
        model = run.get("model")
        found[f"file:{path.stem}"] = Recipe(
            name=f"file:{path.stem}", title=f"{path.stem} (recipes/{path.name})",
            summary=str(run.get("description") or f"The recipe of the run file recipes/{path.name}."),
            config=dict(run["config"]), preset=model if isinstance(model, str) else "",
            model=model if isinstance(model, dict) else None)
    return found


def all_recipes() -> dict[str, Recipe]:
    return {**RECIPES, **file_recipes()}
