"""Models that are valid but meet a known PyTorch problem when they train.

PyTorch 2.14 on CPU crashes the whole process (a segmentation fault, no Python
error) in the backward pass of a 1x1 convolution with stride 2 and fewer than
16 input channels when tensors are in the channels_last (NHWC) layout. In a
FaceNet that is, for example, the shortcut of a stride-2 stage behind a stem
of 8 channels, or a 1x1 stem with stride 2 on the 3 colour channels. Measured
here: input channels 2 to 15 crash at maps of 56x56 and larger, 16 and more do
not; the check below is deliberately wider (any size, any channel count under
16), since the cost of a false alarm is only the speed channels_last would add.

``channels_last_crash_layers`` names the layers; ``channels_last_warning`` is the
sentence the Build and Train pages show. The training engine calls
``channels_last_crash_layers`` and trains such a model on a CPU in the default layout.
"""
from __future__ import annotations

import json
from functools import lru_cache

from lib.model.spec import ModelSpec

MIN_SAFE_IN_CHS = 16  # 1x1 stride-2 convolutions with at least this many input channels train fine


def channels_last_crash_layers(spec: ModelSpec | dict) -> list[str]:
    """Names of the layers ("stages.1.0.shortcut.0") whose backward pass crashes PyTorch on CPU
    in channels_last: 1x1 convolutions with stride > 1 and fewer than 16 input channels.
    Empty for a model that trains safely (or that cannot be built at all)."""
    spec_dict = spec.to_dict() if isinstance(spec, ModelSpec) else spec
    return list(_crash_layers(json.dumps(spec_dict, sort_keys=True)))


@lru_cache(maxsize=64)
def _crash_layers(spec_json: str) -> tuple[str, ...]:
    import torch
    from torch import nn

    from lib.model.net import FaceNet
    try:
        spec = ModelSpec.from_json(spec_json)
        with torch.device("meta"):  # the real modules, without memory for their weights
            model = FaceNet(spec)
    except (ValueError, TypeError, RuntimeError):
        return ()
    return tuple(name for name, module in model.named_modules()
                 if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
                 and module.stride != (1, 1) and module.in_channels < MIN_SAFE_IN_CHS)


def channels_last_warning(spec: ModelSpec | dict) -> str:
    """What to tell a student whose model has such a layer ('' when it has none)."""
    layers = channels_last_crash_layers(spec)
    if not layers:
        return ""
    shown = ", ".join(f"`{name}`" for name in layers[:3]) + (f" and {len(layers) - 3} more" if len(layers) > 3 else "")
    return (f"This model has a 1x1 convolution with stride 2 on fewer than {MIN_SAFE_IN_CHS} channels ({shown}). "
            "PyTorch crashes in its backward pass on a CPU when training uses the channels_last layout, so training "
            "on a CPU turns **channels_last** off for this model (its convolutions run a little slower). Giving the "
            f"layer before it at least {MIN_SAFE_IN_CHS} channels (a wider stem or stage) avoids it.")
