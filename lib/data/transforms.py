"""The registry of augmentation transforms: one entry per torchvision.transforms.v2 class.

Each entry holds its parameters (type, range, default, one-line help) and a
function ``calls(params) -> [(v2 class name, keyword arguments)]``. The same
calls build the live pipeline (lib/data/augment.py) and print the exported Python
code, so what a student previews is exactly what the exported code does.

Parameter names follow torchvision's keywords. Two conveniences:
``size = 0`` means "the input's own size" (works for 64x64 and 112x112 data
alike) and Normalize's ``mean``/``std`` left empty mean "the training set's
channel statistics".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torchvision.transforms import v2


@dataclass(frozen=True)
class Expr:
    """A keyword value that prints as code (``repr``) but builds as ``value``."""

    code: str
    value: Any = None

    def __repr__(self) -> str:
        return self.code


IMAGE_SIZE = Expr("IMAGE_SIZE")  # resolved from each input image at call time
MEAN = Expr("MEAN")  # resolved from the data set's statistics at build time
STD = Expr("STD")


@dataclass(frozen=True)
class Param:
    """kind: int | float | range ([low, high] pair within low..high) | choice | floats (3 values or None)."""

    kind: str
    default: Any
    low: float | None = None
    high: float | None = None
    help: str = ""
    choices: tuple = ()
    step: float | None = None  # widget step
    odd: bool = False  # kernel sizes must be odd
    label: str = ""  # widget label when the bare name would hide a special value (e.g. "0 = input size")


@dataclass(frozen=True)
class TransformInfo:
    name: str
    group: str  # "crop & size" | "geometry" | "colour" | "occlusion" | "policy" | "normalize"
    help: str
    calls: Callable[[dict], list[tuple[str, dict]]]
    params: dict[str, Param] = field(default_factory=dict)


def _p(value: float) -> Param:
    return Param("float", value, 0.0, 1.0, "probability of applying it to an image", step=0.05)


def _size(help_text: str = "output side in pixels; 0 keeps the input size") -> Param:
    return Param("int", 0, 0, 512, help_text, step=1, label="size (0 = input size)")


def _sized(size: int):
    return IMAGE_SIZE if size == 0 else size


def _affine(p: dict) -> list:
    return [("RandomAffine", dict(degrees=p["degrees"], translate=(p["translate"],) * 2 if p["translate"] else None,
                                  scale=tuple(p["scale"]), shear=p["shear"] or None))]


def _color_jitter(p: dict) -> list:
    return [("ColorJitter", dict(brightness=p["brightness"], contrast=p["contrast"],
                                 saturation=p["saturation"], hue=p["hue"]))]


def _normalize(p: dict) -> list:
    mean = MEAN if p["mean"] is None else tuple(p["mean"])
    std = STD if p["std"] is None else tuple(p["std"])
    return [("ToDtype", dict(dtype=torch.float32, scale=True)), ("Normalize", dict(mean=mean, std=std))]


def _policy(name: str) -> Expr:
    return Expr(f"v2.AutoAugmentPolicy.{name.upper()}", v2.AutoAugmentPolicy(name))


_ENTRIES = [
    TransformInfo(
        "RandomResizedCrop", "crop & size",
        "Cut a random box (a share `scale` of the area, aspect `ratio`) and resize it back: faces at other zooms.",
        lambda p: [("RandomResizedCrop", dict(size=_sized(p["size"]), scale=tuple(p["scale"]),
                                              ratio=tuple(p["ratio"]), antialias=True))],
        {"size": _size(),
         "scale": Param("range", [0.8, 1.0], 0.05, 1.0, "share of the image area the box covers", step=0.05),
         "ratio": Param("range", [0.75, 1.33], 0.5, 2.0, "box width / height", step=0.05)}),
    TransformInfo(
        "RandomCrop", "crop & size",
        "Pad the border, then cut a box of the original size at a random place: small shifts of the face.",
        lambda p: [("RandomCrop", dict(size=_sized(p["size"]), padding=p["padding"] or None,
                                       pad_if_needed=True, padding_mode=p["padding_mode"]))],
        {"size": _size(),
         "padding": Param("int", 4, 0, 32, "pixels added on every side before cutting", step=1),
         "padding_mode": Param("choice", "reflect", help="how the added border is filled",
                               choices=("constant", "edge", "reflect", "symmetric"))}),
    TransformInfo(
        "Resize", "crop & size", "Scale the image so its shorter side has `size` pixels.",
        lambda p: [("Resize", dict(size=p["size"], antialias=True))],
        {"size": Param("int", 64, 8, 512, "shorter side after resizing, in pixels", step=1)}),
    TransformInfo(
        "CenterCrop", "crop & size", "Keep the central `size` x `size` pixels.",
        lambda p: [("CenterCrop", dict(size=p["size"]))],
        {"size": Param("int", 56, 8, 512, "side of the kept centre square, in pixels", step=1)}),
    TransformInfo(
        "RandomHorizontalFlip", "geometry", "Mirror left-right: a face and its mirror are the same person.",
        lambda p: [("RandomHorizontalFlip", dict(p=p["p"]))], {"p": _p(0.5)}),
    TransformInfo(
        "RandomVerticalFlip", "geometry", "Turn upside down: faces never appear like that in the test pairs.",
        lambda p: [("RandomVerticalFlip", dict(p=p["p"]))], {"p": _p(0.5)}),
    TransformInfo(
        "RandomRotation", "geometry", "Rotate by a random angle in [-degrees, degrees]: tilted heads.",
        lambda p: [("RandomRotation", dict(degrees=p["degrees"]))],
        {"degrees": Param("float", 10.0, 0.0, 180.0, "largest rotation either way, in degrees", step=1.0)}),
    TransformInfo(
        "RandomAffine", "geometry", "Random rotation, shift, zoom and shear in one step.",
        _affine,
        {"degrees": Param("float", 0.0, 0.0, 180.0, "largest rotation either way, in degrees", step=1.0),
         "translate": Param("float", 0.1, 0.0, 0.5, "largest shift, as a share of width/height", step=0.01),
         "scale": Param("range", [0.9, 1.1], 0.5, 2.0, "zoom factor range", step=0.05),
         "shear": Param("float", 0.0, 0.0, 45.0, "largest shear angle, in degrees", step=1.0)}),
    TransformInfo(
        "RandomPerspective", "geometry", "Warp as if seen from another viewpoint: small changes of head pose.",
        lambda p: [("RandomPerspective", dict(distortion_scale=p["distortion_scale"], p=p["p"]))],
        {"distortion_scale": Param("float", 0.2, 0.0, 1.0, "how far corners may move (0 none, 1 extreme)", step=0.05),
         "p": _p(0.5)}),
    TransformInfo(
        "ColorJitter", "colour", "Random brightness, contrast, saturation and hue: other cameras and lighting.",
        _color_jitter,
        {"brightness": Param("float", 0.2, 0.0, 1.0, "brightness factor drawn from [1-b, 1+b]", step=0.05),
         "contrast": Param("float", 0.2, 0.0, 1.0, "contrast factor drawn from [1-c, 1+c]", step=0.05),
         "saturation": Param("float", 0.2, 0.0, 1.0, "saturation factor drawn from [1-s, 1+s]", step=0.05),
         "hue": Param("float", 0.0, 0.0, 0.5, "hue shift drawn from [-h, h] (0.5 = half the colour wheel)",
                      step=0.01)}),
    TransformInfo(
        "RandomGrayscale", "colour", "Drop colour sometimes, so identity is not learned from skin tone or lighting.",
        lambda p: [("RandomGrayscale", dict(p=p["p"]))], {"p": _p(0.1)}),
    TransformInfo(
        "GaussianBlur", "colour", "Blur with a random sigma: out-of-focus and low-resolution photos.",
        lambda p: [("GaussianBlur", dict(kernel_size=p["kernel_size"], sigma=tuple(p["sigma"])))],
        {"kernel_size": Param("int", 5, 3, 31, "side of the blur kernel (odd)", step=2, odd=True),
         "sigma": Param("range", [0.1, 2.0], 0.1, 5.0, "blur strength range", step=0.1)}),
    TransformInfo(
        "RandomErasing", "occlusion", "Blank a random rectangle: glasses, hands, hair hiding part of the face.",
        lambda p: [("RandomErasing", dict(p=p["p"], scale=tuple(p["scale"]), ratio=tuple(p["ratio"]),
                                          value=p["value"]))],
        {"p": _p(0.25),
         "scale": Param("range", [0.02, 0.2], 0.01, 0.5, "share of the image area erased", step=0.01),
         "ratio": Param("range", [0.3, 3.3], 0.1, 10.0, "rectangle width / height", step=0.1),
         "value": Param("int", 0, 0, 255, "grey level of the blank", step=1)}),
    TransformInfo(
        "RandAugment", "policy", "Apply `num_ops` operations picked at random from a list, all at one strength.",
        lambda p: [("RandAugment", dict(num_ops=p["num_ops"], magnitude=p["magnitude"]))],
        {"num_ops": Param("int", 2, 1, 6, "operations per image", step=1),
         "magnitude": Param("int", 9, 0, 30, "strength of every operation (0..30)", step=1)}),
    TransformInfo(
        "TrivialAugmentWide", "policy", "One random operation at a random strength per image; nothing to tune.",
        lambda p: [("TrivialAugmentWide", dict(num_magnitude_bins=p["num_magnitude_bins"]))],
        {"num_magnitude_bins": Param("int", 31, 2, 62, "number of strength levels to draw from", step=1)}),
    TransformInfo(
        "AutoAugment", "policy", "A policy of operation pairs searched on another data set (ImageNet, CIFAR-10, SVHN).",
        lambda p: [("AutoAugment", dict(policy=_policy(p["policy"])))],
        {"policy": Param("choice", "imagenet", help="the data set the policy was searched on",
                         choices=("imagenet", "cifar10", "svhn"))}),
    TransformInfo(
        "AugMix", "policy", "Blend several random augmentation chains with the original: varied but recognisable.",
        lambda p: [("AugMix", dict(severity=p["severity"], mixture_width=p["mixture_width"],
                                   chain_depth=p["chain_depth"], alpha=p["alpha"]))],
        {"severity": Param("int", 3, 1, 10, "strength of each operation", step=1),
         "mixture_width": Param("int", 3, 1, 10, "chains blended together", step=1),
         "chain_depth": Param("int", -1, -1, 10, "operations per chain (-1: random 1-3)", step=1,
                             label="chain_depth (-1 = random 1-3)"),
         "alpha": Param("float", 1.0, 0.1, 10.0, "Dirichlet/Beta concentration of the blend weights", step=0.1)}),
    TransformInfo(
        "Normalize", "normalize",
        "Scale to [0, 1], subtract each channel's mean and divide by its std; always the last step.",
        _normalize,
        {"mean": Param("floats", None, 0.0, 1.0, "per-channel mean (empty: the training set's own)", step=0.001),
         "std": Param("floats", None, 0.001, 1.0, "per-channel std (empty: the training set's own)", step=0.001)}),
]

TRANSFORMS: dict[str, TransformInfo] = {entry.name: entry for entry in _ENTRIES}


@dataclass(frozen=True)
class MixInfo:
    name: str
    title: str
    help: str
    alpha: Param


BATCH_MIXES: dict[str, MixInfo] = {
    "none": MixInfo("none", "None", "Each image keeps its own one-hot label.",
                    Param("float", 1.0, 0.05, 10.0, "unused", step=0.05)),
    "mixup": MixInfo("mixup", "MixUp",
                     "Blend two images pixel by pixel with weight λ ~ Beta(α, α); the label is the same blend.",
                     Param("float", 0.2, 0.05, 10.0, "α of Beta(α, α): small α keeps λ near 0 or 1", step=0.05)),
    "cutmix": MixInfo("cutmix", "CutMix",
                      "Paste a box of another image; each label weighs the share of pixels it covers.",
                      Param("float", 1.0, 0.05, 10.0, "α of Beta(α, α) for the box area", step=0.05)),
}
