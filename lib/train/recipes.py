"""Named training recipes: the run files in recipes/*.json, read for the Train page.

A run file ``{"name", "description", "model", "config"}`` is what
`python -m lib train` runs (the demo checkpoints are made from them); the Train
page offers each as a recipe: its TrainConfig fields fill the widgets and its
model (a preset name or a spec) becomes a choice. The files are the one
registry of recipes; the page adds nothing of its own beyond TrainConfig's
defaults when the folder is empty. ``convnext_table`` sets the course's
ConvNeXt table beside the values of the recipe that scales it to LFW-64.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from lib.base import config

FIRST = ("quick-cpu", "convnext-course")  # listed first, in this order; the rest by name
CONVNEXT_RECIPE = "convnext-course"


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    summary: str
    config: dict = field(default_factory=dict)  # TrainConfig fields
    preset: str = ""  # the model preset the recipe was made for ("" = any) ...
    model: dict | None = None  # ... or its own model spec


DEFAULTS = Recipe(name="defaults", title="TrainConfig defaults",
                  summary="No recipe files in recipes/: the engine's own defaults.")


def _read(path) -> Recipe | None:
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a broken file is reported by `python -m lib train`, not here
    if not isinstance(run, dict) or not isinstance(run.get("config"), dict):
        return None
    model = run.get("model")
    return Recipe(name=path.stem, title=f"{path.stem} (recipes/{path.name})",
                  summary=str(run.get("description") or f"The run file recipes/{path.name}."),
                  config=dict(run["config"]), preset=model if isinstance(model, str) else "",
                  model=model if isinstance(model, dict) else None)


def all_recipes() -> dict[str, Recipe]:
    """Every readable recipe file, the FIRST ones first; TrainConfig's defaults if there are none."""
    found = {recipe.name: recipe for recipe in map(_read, sorted(config.RECIPES_DIR.glob("*.json"))) if recipe}
    order = [name for name in FIRST if name in found] + [name for name in sorted(found) if name not in FIRST]
    return {name: found[name] for name in order} or {DEFAULTS.name: DEFAULTS}


# The course's ConvNeXt-T ImageNet-1K recipe: (setting, the paper's value, TrainConfig field or a fixed
# text for what is set elsewhere, why it differs on LFW-64).
_CONVNEXT_ROWS = (
    ("optimizer", "AdamW", "optimizer", "decoupled weight decay"),
    ("base learning rate", "4e-3", "lr", "the paper's rate is for batch 4096; smaller batches take smaller rates"),
    ("weight decay", "0.05", "weight_decay", ""),
    ("optimizer momentum β1 (β2 = 0.999)", "0.9", "momentum", ""),
    ("batch size", "4096", "batch_size", "LFW-64 has 2,802 training images: 4096 is more than an epoch"),
    ("training epochs", "300", "epochs", "hours, not days"),
    ("learning rate schedule", "cosine decay", "schedule", ""),
    ("warmup epochs", "20", "warmup_epochs", "about the same share of training"),
    ("warmup schedule", "linear", "=linear", ""),
    ("layer-wise lr decay", "none", "=none", ""),
    ("randaugment", "(9, 0.5)", "=on the Augment page", "add RandAugment to the pipeline there"),
    ("label smoothing", "0.1", "label_smoothing", ""),
    ("mixup / cutmix", "0.8 / 1.0", "mix", "one batch mix at a time here"),
    ("stochastic depth", "0.1 / 0.4 / 0.5 / 0.5 (T/S/B/L)", "drop_path_rate", "the smallest model's rate"),
    ("layer scale", "1e-6", "=per stage, on the Build page", ""),
    ("gradient clip", "none", "grad_clip", ""),
    ("EMA of weights", "0.9999", "ema_decay", "EMA averages about 1/(1-decay) steps: 10,000 would outlast the run"),
)


def convnext_table(recipe: Recipe | None) -> list[dict]:
    """Rows: setting, ConvNeXt paper (ImageNet), the recipe's value on LFW-64, why they differ."""
    from lib.train.config import TrainConfig
    settings = {**TrainConfig().to_dict(), **(recipe.config if recipe else {})}
    if not settings["ema"]:
        settings["ema_decay"] = False  # shown as "off"
    rows = []
    for setting, paper, source, why in _CONVNEXT_ROWS:
        if source.startswith("="):
            here = source[1:]
        elif source == "mix":
            mix = settings.get("mix", "none")
            here = "none" if mix == "none" else f"{mix} {settings.get('mix_alpha', '')}".strip()
        else:
            here = _text(settings.get(source, "-"))
        rows.append({"setting": setting, "ConvNeXt paper (ImageNet)": paper, "this recipe (LFW-64)": here, "why": why})
    return rows


def _text(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value == 0:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)
