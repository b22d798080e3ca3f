"""The channels_last crash check, against the crash itself in a real training step."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

from lib.base import config
from lib.model.presets import PRESETS
from lib.model.spec import HeadSpec, ModelSpec, StageSpec, StemSpec
from lib.model.warnings import channels_last_crash_layers, channels_last_warning

# An 8-channel stem, then a stage that halves the size: its shortcut is a 1x1 stride-2 conv on 8 channels.
THIN = ModelSpec(name="thin", stem=StemSpec(kind="conv", out_chs=8, kernel_size=3, stride=1),
                 stages=(StageSpec(block="basic", out_chs=8, depth=1, stride=1),
                         StageSpec(block="basic", out_chs=16, depth=1, stride=2)),
                 head=HeadSpec(embedding_dim=0), input_size=64, num_classes=10)

ONE_STEP = """
import sys, torch
from lib.model.net import FaceNet
from lib.model.spec import ModelSpec
spec = ModelSpec.from_json(sys.argv[1])
for layout in (torch.contiguous_format, torch.channels_last):
    model = FaceNet(spec).to(memory_format=layout)
    images = torch.randn(8, 3, 64, 64).contiguous(memory_format=layout)
    torch.nn.functional.cross_entropy(model(images), torch.arange(8) % spec.num_classes).backward()
    print(layout, "trained", flush=True)
"""


def one_training_step(spec: ModelSpec) -> subprocess.CompletedProcess:
    """A training step in the default layout, then in channels_last, in a process of its own."""
    return subprocess.run([sys.executable, "-c", ONE_STEP, spec.to_json()], cwd=config.PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_flagged_model_crashes_in_channels_last_and_a_wider_one_does_not():
    assert channels_last_crash_layers(THIN) == ["stages.1.0.shortcut.0"]
    crashed = one_training_step(THIN)
    assert "torch.contiguous_format trained" in crashed.stdout  # the default layout is fine
    assert "torch.channels_last trained" not in crashed.stdout and crashed.returncode != 0
    wider = replace(THIN, stem=replace(THIN.stem, out_chs=16), stages=(replace(THIN.stages[0], out_chs=16),
                                                                        THIN.stages[1]))
    assert channels_last_crash_layers(wider) == []
    fine = one_training_step(wider)
    assert fine.returncode == 0 and "torch.channels_last trained" in fine.stdout, fine.stderr[-2000:]


def test_a_1x1_stride_2_stem_on_the_colour_channels_is_flagged():
    stem = replace(THIN, stem=StemSpec(kind="conv", out_chs=32, kernel_size=1, stride=2),
                   stages=(StageSpec(block="conv", out_chs=32, depth=1, stride=1),))
    assert channels_last_crash_layers(stem.to_dict()) == ["stem.0"]
    assert "`stem.0`" in channels_last_warning(stem) and "channels_last" in channels_last_warning(stem)


def test_presets_and_impossible_models_give_no_warning():
    assert all(channels_last_crash_layers(spec) == [] for spec in PRESETS.values())
    assert channels_last_warning(PRESETS["face_resnet"]) == ""
    broken = replace(THIN, stem=replace(THIN.stem, kernel_size=4))  # even kernel: validate() refuses it
    assert channels_last_crash_layers(broken) == []
