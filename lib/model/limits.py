"""What a forward pass may cost on a shared host, checked before one runs.

Parameter counts say nothing about memory: a 4,096-channel stem on 64x64 faces has 400k
parameters (a 1.6 MB checkpoint), yet each image's stem writes 3 x 64 MiB of activations, so
one batch of 128 embeddings asks for gigabytes. Two limits, set by the host's owner through
environment variables (lib/base/config.py), guard every place a model runs:

- FACELAB_MAX_BATCH_ACTIVATION_BYTES: the activations one batch may write, counted as
  lib/model/profile.py counts them (every layer's output, float32: what training keeps for
  the backward pass, an upper bound of what inference holds at once);
- FACELAB_MAX_MACS_PER_IMAGE: the multiply-accumulates of one image's forward pass.

A FaceLab spec is measured on paper (``spec_usage``, microseconds). Any other ``nn.Module``
is measured by running it once on the meta device (``module_usage``): tensors there have
shapes but no storage, so nothing is allocated; forward hooks add up what each layer writes,
and ``FlopCounterMode`` counts the FLOPs (1 MAC = 2 FLOPs). Both give a ``Usage``;
``check_batch`` refuses one over a limit with a ``ResourceRefused`` naming the layer that
costs most, and ``batch_size_within`` picks the largest batch that fits.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.func import functional_call
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from lib.base import config
from lib.model.profile import BYTES_PER_VALUE, human, profile
from lib.model.spec import ModelSpec

MAX_EMBED_BATCH = 256  # beyond this a bigger batch embeds no faster on a CPU
EXPLORE_MIN_BATCH = 64  # a model that cannot embed this many faces per batch is refused for exploring
_MEASURE_LOCK = threading.Lock()  # hooks and FlopCounterMode are per-module state: one measurement at a time


class ResourceRefused(ValueError):
    """A model (or a batch of it) over this host's activation memory or MACs limit. A ValueError,
    so every page and command that reports bad input shows its message."""


@dataclass(frozen=True)
class Layer:
    """One layer's share of a forward pass for one image."""
    name: str
    kind: str
    out_shape: tuple[int, ...]
    value: int  # bytes written, or MACs

    def describe(self) -> str:
        shape = "x".join(map(str, self.out_shape))
        return f"layer {self.name} ({self.kind}, output {shape})" if shape else f"layer {self.name} ({self.kind})"


@dataclass(frozen=True)
class Usage:
    """What one image costs in a forward pass, and the layers that cost most."""
    input_shape: tuple[int, ...]  # (channels, height, width)
    activation_bytes: int
    macs: int
    largest_activations: Layer | None
    largest_macs: Layer | None


# ----------------------------------------------------------------------------- measuring

def spec_usage(spec: ModelSpec, input_size: int | None = None) -> Usage:
    """One image's cost from the analytic profile (at ``input_size`` instead of the spec's, if given).
    ValueError (from spec.validate) for an impossible spec."""
    if input_size is not None and input_size != spec.input_size:
        spec = replace(spec, input_size=input_size)
    result = profile(spec)
    layers = result.layers()
    writes = max(layers, key=lambda layer: layer.activations, default=None)
    works = max(layers, key=lambda layer: layer.macs, default=None)
    return Usage((spec.in_chs, spec.input_size, spec.input_size), result.activation_bytes, result.macs,
                 _from_profile(writes, writes.activations * BYTES_PER_VALUE) if writes else None,
                 _from_profile(works, works.macs) if works else None)


def _from_profile(layer, value: int) -> Layer:
    return Layer(layer.name, layer.kind, tuple(layer.out_shape), value)


def module_usage(module: nn.Module, input_shape: tuple[int, ...]) -> Usage:
    """One image's cost measured by running ``module`` (its ``forward``, in eval mode) on the meta
    device: its weights are swapped for storage-less copies for that one call, so a model of any
    size is measured without allocating its activations. Layers (leaf modules) that hand their
    input back unchanged (Identity, Dropout in eval) write nothing. ValueError if it cannot run."""
    shape = tuple(int(side) for side in input_shape)
    state = {name: torch.empty_like(tensor, device="meta")
             for name, tensor in [*module.named_parameters(), *module.named_buffers()]}
    written: dict[str, tuple[str, tuple[int, ...], int]] = {}  # layer -> (kind, output shape, bytes)
    macs: dict[str, int] = {}
    counter = FlopCounterMode(display=False)
    with _MEASURE_LOCK, _eval_mode(module):
        hooks = _layer_hooks(module, written, macs, counter)
        try:
            with counter:
                functional_call(module, state, (torch.zeros((1, *shape), device="meta"),))
        except Exception as err:  # a module that cannot run on meta tensors cannot be measured, so it cannot run here
            raise ValueError(f"the model could not be measured for a {'x'.join(map(str, shape))} input "
                             f"({type(err).__name__}: {err})") from None
        finally:
            for handle in hooks:
                handle.remove()
    writes = max(written.items(), key=lambda item: item[1][2], default=None)
    works = max(macs.items(), key=lambda item: item[1], default=None)
    return Usage(shape, sum(entry[2] for entry in written.values()), counter.get_total_flops() // 2,
                 Layer(writes[0], *writes[1]) if writes else None,
                 Layer(works[0], *written[works[0]][:2], works[1]) if works and works[1] else None)


def _layer_hooks(module: nn.Module, written: dict, macs: dict, counter: FlopCounterMode) -> list:
    """Hooks on every leaf module: the bytes of its meta outputs (real tensors are another thread's
    forward pass through the same model, not this measurement), and the FLOPs counted while it ran."""
    handles = []
    for name, sub in module.named_modules():
        if next(sub.children(), None) is not None:
            continue
        started = {}

        def before(_, __, started=started):
            started["flops"] = counter.get_total_flops()

        def after(layer, inputs, output, name=name, started=started):
            tensors = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor) and t.device.type == "meta"]
            if not tensors:
                return
            size = sum(t.numel() * t.element_size() for t in tensors if not _shares_input(t, inputs))
            earlier = written[name][2] if name in written else 0  # a layer called twice writes twice
            written[name] = (type(layer).__name__, tuple(tensors[0].shape[1:]), earlier + size)
            macs[name] = macs.get(name, 0) + (counter.get_total_flops() - started.get("flops", 0)) // 2

        handles += [sub.register_forward_pre_hook(before), sub.register_forward_hook(after)]
    return handles


def _shares_input(output: torch.Tensor, inputs: tuple) -> bool:
    """The output is an input handed back (Identity, Dropout in eval) or a view of one (Flatten):
    it takes no memory of its own."""
    sources = [t for t in tree_leaves(inputs) if isinstance(t, torch.Tensor)]
    base = output._base if output._base is not None else output
    return any(output is t or base is t or base is t._base for t in sources)


@contextmanager
def _eval_mode(module: nn.Module):
    """Every submodule in eval mode for the measurement, each one's own mode restored after."""
    modes = {sub: sub.training for sub in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for sub, training in modes.items():
            sub.training = training


def usage_of(model: nn.Module, input_shape: tuple[int, ...]) -> Usage:
    """One image's cost for ``model`` fed ``input_shape`` (C, H, W) images: on paper for a FaceNet
    (its spec) fed square images, measured on the meta device for anything else."""
    spec = getattr(model, "spec", None)
    chs, height, width = (tuple(input_shape) + (0, 0, 0))[:3]
    if isinstance(spec, ModelSpec) and height == width and chs == spec.in_chs:
        try:
            return spec_usage(spec, height)
        except ValueError:
            pass  # an input size the spec refuses: the real module still runs, so measure it
    return module_usage(model, tuple(input_shape))


# ----------------------------------------------------------------------------- checking

def byte_text(count: float) -> str:
    """201326592 -> '192 MiB' (binary units, as the limits are set)."""
    for factor, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if count >= factor:
            return f"{count / factor:.3g} {unit}"
    return f"{int(count)} B"


def check_batch(usage: Usage, batch_size: int, purpose: str, batch_hint: str | None = "a smaller batch") -> Usage:
    """``usage`` if a batch of ``batch_size`` images fits this host's limits; else ResourceRefused
    saying which limit, by how much, which layer costs most and how to fix it. ``purpose`` ends the
    sentence "N images of HxW need X for ..." ("a training batch"); ``batch_hint`` says how to
    shrink the batch, None where the user cannot."""
    side = "x".join(map(str, usage.input_shape[1:]))
    _check_macs(usage, side)
    limit = config.max_batch_activation_bytes()
    needed = usage.activation_bytes * batch_size
    if needed > limit:
        layer = usage.largest_activations
        where = f" The largest is {layer.describe()}: {byte_text(layer.value)} per image." if layer else ""
        stride = "a stride of 2 in the stem (smaller feature maps)"
        fixes = f"fewer channels there, {stride} or {batch_hint}" if batch_hint else f"fewer channels there or {stride}"
        raise ResourceRefused(
            f"too much activation memory for this host: {batch_size} images of {side} need {byte_text(needed)} "
            f"({byte_text(usage.activation_bytes)} per image) for {purpose}, over the limit of {byte_text(limit)}."
            f"{where} Use {fixes}; the host's owner can raise the limit with {config.MAX_BATCH_ACTIVATION_BYTES_ENV}.")
    return usage


def _check_macs(usage: Usage, side: str) -> None:
    limit = config.max_macs_per_image()
    if usage.macs > limit:
        layer = usage.largest_macs
        where = f" The most is in {layer.describe()}: {human(layer.value)} MACs." if layer else ""
        raise ResourceRefused(
            f"too much computation for this host: one image of {side} takes {human(usage.macs)} MACs, over "
            f"the limit of {human(limit)} MACs per image.{where} Use fewer channels or blocks, a stride of 2 in "
            f"the stem, or a smaller input size; the host's owner can raise the limit with "
            f"{config.MAX_MACS_PER_IMAGE_ENV}.")


def check_training(spec: ModelSpec, batch_size: int) -> Usage:
    """Refuse (ResourceRefused) a model whose training batch of ``batch_size`` images is over the limits."""
    return check_batch(spec_usage(spec), batch_size, "a training batch", "a smaller batch_size")


def check_explorable(spec_or_usage: ModelSpec | Usage) -> Usage:
    """Refuse (ResourceRefused) a model the Explore pages could not embed ``EXPLORE_MIN_BATCH`` faces
    at a time with (at its spec's input size, for a spec)."""
    usage = spec_usage(spec_or_usage) if isinstance(spec_or_usage, ModelSpec) else spec_or_usage
    return check_batch(usage, EXPLORE_MIN_BATCH,
                       f"one batch of embeddings (Explore embeds at least {EXPLORE_MIN_BATCH} faces at a time)", None)


def batch_size_within(usage: Usage, cap: int = MAX_EMBED_BATCH) -> int:
    """The largest batch (at most ``cap``, at least 1) whose activations fit the host's limit."""
    per_image = max(1, usage.activation_bytes)
    return max(1, min(int(cap), config.max_batch_activation_bytes() // per_image))
