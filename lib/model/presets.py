"""Named model specs: the ImageNet classics, built exactly like torchvision's
(same parameter count), and small face models sized for 64x64 LFW-64 on a CPU."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lib.model.profile import profile
from lib.model.spec import HeadSpec, ModelSpec, StageSpec, StemSpec

IMAGENET = {"input_size": 224, "num_classes": 1000}
RESNET_STEM = StemSpec(kind="conv", out_chs=64, kernel_size=7, stride=2, pool=True, act="relu")


def _resnet(name: str, block: str, widths, depths, **stage_options) -> ModelSpec:
    stages = tuple(StageSpec(block=block, out_chs=w, depth=d, stride=1 if i == 0 else 2, **stage_options)
                   for i, (w, d) in enumerate(zip(widths, depths)))
    return ModelSpec(name=name, stem=RESNET_STEM, stages=stages, **IMAGENET)


def _mobilenet_v2() -> ModelSpec:
    # (expansion, out_chs, depth, stride) of the MobileNetV2 paper's table 2.
    rows = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    stages = tuple(StageSpec(block="inverted_residual", out_chs=c, depth=n, stride=s, expansion=t)
                   for t, c, n, s in rows)
    return ModelSpec(name="mobilenet_v2", stem=StemSpec(kind="conv", out_chs=32, kernel_size=3, stride=2, act="relu6"),
                     stages=stages, head=HeadSpec(conv_chs=1280, conv_act="relu6", dropout=0.2), **IMAGENET)


def _convnext_tiny() -> ModelSpec:
    stages = tuple(StageSpec(block="convnext", out_chs=c, depth=d, stride=1 if i == 0 else 2)
                   for i, (c, d) in enumerate(zip((96, 192, 384, 768), (3, 3, 9, 3))))
    return ModelSpec(name="convnext_tiny", stem=StemSpec(kind="patchify", out_chs=96, kernel_size=4, stride=4, act="none"),
                     stages=stages, head=HeadSpec(pool_norm="layer"), drop_path_rate=0.1, **IMAGENET)


FACE = {"input_size": 64, "num_classes": 298}
# The homework's real setting: 112x112 faces of 7,000 identities. The classifier alone holds
# 7,000 x (features + 1) weights, which is what pushes ResNet-50 (37.9M) past the 35M budget.
HOMEWORK = {"input_size": 112, "num_classes": 7000}
HOMEWORK_BASES = ("resnet18", "resnet34", "resnet50", "se_resnet50", "mobilenet_v2", "convnext_tiny")


def _face_resnet() -> ModelSpec:
    """Widths 32 -> 256 like the course's starter network, one basic block per stage."""
    stages = tuple(StageSpec(block="basic", out_chs=c, depth=1, stride=s)
                   for c, s in ((32, 1), (64, 2), (128, 2), (256, 2)))
    return ModelSpec(name="face_resnet", stem=StemSpec(kind="conv", out_chs=32, kernel_size=3, stride=1),
                     stages=stages, head=HeadSpec(embedding_dim=256, dropout=0.0), **FACE)


def _face_mobilenet() -> ModelSpec:
    rows = [(1, 16, 1, 1), (4, 32, 2, 2), (4, 64, 2, 2), (4, 128, 2, 2), (4, 256, 1, 1)]
    stages = tuple(StageSpec(block="inverted_residual", out_chs=c, depth=n, stride=s, expansion=t)
                   for t, c, n, s in rows)
    return ModelSpec(name="face_mobilenet", stem=StemSpec(kind="conv", out_chs=32, kernel_size=3, stride=1, act="relu6"),
                     stages=stages, head=HeadSpec(conv_chs=512, conv_act="relu6", embedding_dim=256), **FACE)


def _face_convnext() -> ModelSpec:
    stages = tuple(StageSpec(block="convnext", out_chs=c, depth=d, stride=1 if i == 0 else 2)
                   for i, (c, d) in enumerate(zip((48, 96, 192, 384), (1, 1, 2, 1))))
    return ModelSpec(name="face_convnext", stem=StemSpec(kind="patchify", out_chs=48, kernel_size=2, stride=2, act="none"),
                     stages=stages, head=HeadSpec(pool_norm="layer", embedding_dim=256), drop_path_rate=0.05, **FACE)


def _build_presets() -> dict[str, ModelSpec]:
    resnet50 = _resnet("resnet50", "bottleneck", (256, 512, 1024, 2048), (3, 4, 6, 3))
    presets = [
        _resnet("resnet18", "basic", (64, 128, 256, 512), (2, 2, 2, 2)),
        _resnet("resnet34", "basic", (64, 128, 256, 512), (3, 4, 6, 3)),
        resnet50,
        _mobilenet_v2(),
        _convnext_tiny(),
        _resnet("se_resnet50", "bottleneck", (256, 512, 1024, 2048), (3, 4, 6, 3), se_ratio=1 / 16),
        _resnet("resnext50_32x4d", "bottleneck", (256, 512, 1024, 2048), (3, 4, 6, 3), groups=32, base_width=4),
        _face_resnet(),
        replace(_face_resnet(), name="face_se_resnet",
                stages=tuple(replace(s, se_ratio=0.25) for s in _face_resnet().stages)),
        _face_mobilenet(),
        _face_convnext(),
    ]
    presets += [replace(spec, name=f"hw2p2_{spec.name}", **HOMEWORK) for spec in presets
                if spec.name in HOMEWORK_BASES]
    return {spec.name: spec for spec in presets}


PRESETS: dict[str, ModelSpec] = _build_presets()
FACE_PRESETS = ("face_resnet", "face_se_resnet", "face_mobilenet", "face_convnext")
HOMEWORK_PRESETS = tuple(f"hw2p2_{name}" for name in HOMEWORK_BASES)


def budget_rows(budget: int) -> list[dict]:
    """Every preset with its size, counts and whether it fits the parameter budget (the Build page's table)."""
    rows = []
    for name, spec in PRESETS.items():
        counted = profile(spec)
        rows.append({"preset": name, "input": f"{spec.input_size}x{spec.input_size}", "classes": spec.num_classes,
                     "parameters": counted.params, "MACs": counted.macs, "within budget": counted.params <= budget})
    return rows


def resolve_spec(text: str) -> ModelSpec:
    """A preset name, a path to a spec JSON file, or spec JSON text -> ModelSpec.
    Raises ValueError saying which of the three failed and why (the spec is not validated here)."""
    text = text.strip()
    if text in PRESETS:
        return PRESETS[text]
    if text.startswith("{"):
        return ModelSpec.from_json(text)
    path = Path(text)
    if path.suffix.lower() == ".json" or path.exists():
        if not path.is_file():
            raise ValueError(f"model: no spec file at {text!r}")
        try:
            return ModelSpec.from_json(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: {err}") from None
    raise ValueError(f"model: {text!r} is not a preset ({', '.join(PRESETS)}) nor a spec JSON file")
