"""Text about a pipeline: warnings that teach what hurts face data, and exported Python code.

The thresholds below are rules of thumb for aligned face crops (LFW-64, the
course's 112x112 images), where the face fills the frame and is upright:
beyond them an augmented image often no longer shows the identity its label
names, or shows the face in a way no test pair ever will.
"""
from __future__ import annotations

from dataclasses import dataclass

from lib.data.augment import check_runs, validate_pipeline
from lib.data.transforms import TRANSFORMS


@dataclass(frozen=True)
class PipelineWarning:
    step: int | None  # index into the pipeline; None for the pipeline as a whole
    name: str
    message: str

    def __str__(self) -> str:
        where = f"step {self.step} ({self.name})" if self.step is not None else "pipeline"
        return f"{where}: {self.message}"


def _step_warnings(name: str, p: dict, side: int) -> list[str]:
    """Messages for one step (``side`` = the smaller image side in pixels)."""
    return _geometry_warnings(name, p, side) + _appearance_warnings(name, p, side)


def _geometry_warnings(name: str, p: dict, side: int) -> list[str]:
    notes = []
    if name == "RandomVerticalFlip" and p["p"] > 0:
        notes.append("upside-down faces never occur in the verification pairs; the network spends capacity on "
                     "them and learns less about upright faces. Use RandomHorizontalFlip instead.")
    if name == "RandomResizedCrop" and p["scale"][0] < 0.5:
        notes.append(f"boxes as small as {p['scale'][0]:.0%} of the area can cut away the eyes or the mouth, "
                     "leaving an image the label no longer describes. Faces usually want scale >= 0.5-0.8.")
    if name == "CenterCrop" and p["size"] < 0.75 * side:
        notes.append(f"a {p['size']}-pixel centre crop of a {side}-pixel face drops forehead, chin and cheeks.")
    if name == "RandomCrop" and p["padding"] > side // 8:
        notes.append(f"{p['padding']} pixels of padding shift the face by up to {p['padding'] / side:.0%} of the "
                     "image; aligned faces rarely move that much.")
    degrees = p.get("degrees", 0) if name in ("RandomRotation", "RandomAffine") else 0
    if degrees > 30:
        notes.append(f"rotations up to {degrees:g} degrees: the faces are aligned upright and the test pairs are "
                     "too; keep rotations within about 10-20 degrees.")
    if name == "RandomAffine" and (p["translate"] > 0.2 or p["scale"][0] < 0.7 or p["shear"] > 20):
        notes.append("strong shifts, zoom-outs or shears move parts of the face out of the frame or distort it.")
    if name == "RandomPerspective" and p["distortion_scale"] > 0.5 and p["p"] > 0:
        notes.append("distortion above 0.5 bends faces into shapes no camera produces.")
    return notes


def _appearance_warnings(name: str, p: dict, side: int) -> list[str]:
    notes = []
    if name == "ColorJitter":
        if p["hue"] > 0.1:
            notes.append(f"hue shifts up to {p['hue']:g} turn skin green or blue; real photos vary in "
                         "brightness and white balance, not in hue. Keep hue <= 0.05.")
        if max(p["brightness"], p["contrast"]) > 0.5 or p["saturation"] > 0.6:
            notes.append("heavy brightness/contrast/saturation changes wash out or black out faces.")
    if name == "RandomGrayscale" and p["p"] > 0.5:
        notes.append("most images lose their colour; the dev and verification images keep theirs.")
    if name == "GaussianBlur" and p["sigma"][1] > side / 32:
        notes.append(f"sigma up to {p['sigma'][1]:g} on {side}-pixel images blurs away the fine detail that "
                     "separates similar-looking people.")
    if name == "RandomErasing" and (p["scale"][1] > 0.33 or p["p"] > 0.5):
        notes.append("large or frequent blanks can hide both eyes at once; keep scale <= 0.33 and p <= 0.5.")
    if name == "RandAugment" and p["magnitude"] > 15:
        notes.append(f"magnitude {p['magnitude']} is strong for small face crops (its operations include shears "
                     "and large rotations); 5-10 is a gentler start.")
    if name == "AutoAugment" and p["policy"] != "imagenet":
        notes.append(f"the {p['policy']} policy was searched for tiny objects or digits (it inverts colours and "
                     "shears hard); the imagenet policy is closer to photos of faces.")
    return notes


def pipeline_warnings(steps, image_size=(64, 64)) -> list[PipelineWarning]:
    """Warnings for a pipeline applied to images of ``image_size`` (height, width): transforms
    that hurt face data, and output sizes that differ from the evaluation images'."""
    steps = validate_pipeline(steps)
    height, width = image_size
    found = [PipelineWarning(index, step["name"], note) for index, step in enumerate(steps)
             for note in _step_warnings(step["name"], step["params"], min(height, width))]
    if not [s for s in steps if s["name"] != "Normalize"]:
        found.append(PipelineWarning(None, "", "no augmentation: with a handful of images per identity the network "
                                     "soon memorises them (training accuracy near 100%, dev accuracy far lower)."))
    out_h, out_w = check_runs(steps, (height, width))
    if (out_h, out_w) != (height, width):
        found.append(PipelineWarning(None, "", f"training images come out {out_h}x{out_w} but dev and verification "
                                     f"images stay {height}x{width}: the network would see faces at another scale "
                                     "in evaluation. Use size 0 (input size) or resize back."))
    return found


def _call_code(class_name: str, kwargs: dict) -> str:
    return f"v2.{class_name}(" + ", ".join(f"{key}={value!r}" for key, value in kwargs.items()) + ")"


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4f}" for v in values) + ")"


def code_lines(steps: list[dict], image_size, mean, std) -> str:
    """Python source for a validated pipeline (see pipeline_code below)."""
    height, width = image_size
    ends_normalized = bool(steps) and steps[-1]["name"] == "Normalize"
    calls = [_call_code(name, kwargs)
             for step in steps for name, kwargs in TRANSFORMS[step["name"]].calls(step["params"])]
    if not ends_normalized:
        calls += ["v2.ToDtype(torch.float32, scale=True)", "v2.Normalize(mean=MEAN, std=STD)"]
    stats_note = "per-channel statistics of the training set, in [0, 1] units"
    if mean is None or std is None:
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        stats_note = "placeholders: put your training set's per-channel mean and std here"
    body = "\n".join(f"    {call}," for call in calls)
    return (
        "import torch\n"
        "from torchvision.transforms import v2\n\n"
        f"IMAGE_SIZE = ({height}, {width})  # (height, width) of the data set's images\n"
        f"MEAN = {_fmt(mean)}  # {stats_note}\n"
        f"STD = {_fmt(std)}\n\n"
        "# Training: one uint8 [3, H, W] image tensor in, a normalized float32 tensor out.\n"
        f"train_transform = v2.Compose([\n{body}\n])\n\n"
        "# Dev and verification images: no augmentation, the same normalization.\n"
        "eval_transform = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=MEAN, std=STD)])\n"
    )


def pipeline_code(steps, image_size=(64, 64), mean=None, std=None) -> str:
    """Standalone Python source of the training and evaluation transforms."""
    return code_lines(validate_pipeline(steps), image_size, mean, std)
