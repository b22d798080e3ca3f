"""Decoding the data cache's JPEGs in batches, on the GPU where one works (nvjpeg, through torchvision).

Building the data cache of HW2P2's 140,000 faces decodes them one file at a time on one CPU
core (lib/data/images.py). On a GPU host ``torchvision.io.decode_jpeg(list, device="cuda")``
decodes a whole batch with nvjpeg instead. The files are still read on the CPU by the same
checked reader (inside the data set, no links followed, size caps, header size): only the
decode moves. What the batch decoder cannot vouch for goes through the one-file path, so it
is decoded, resized, refused or recorded as corrupt exactly as before: a file that is not a
JPEG, a JPEG whose declared size is not the set's common size, a CMYK JPEG (torchvision's own
test of its GPU decoder leaves CMYK out), a JPEG cut short (no end marker), and a JPEG the batch
decoder refuses (a corrupt one in a batch fails the whole call, so that batch is decoded again
one image at a time on the same device, and only the images that still fail leave it).

``BatchedJpegs`` takes the device as an argument: on "cpu" it runs torchvision's own
libjpeg-turbo, the same decoder as the one-file path (the tests build a cache both ways and
compare them). ``batch_device()`` says which device, if any, the data cache uses: the
setting FACELAB_DECODE_DEVICE (auto, cpu, cuda), and a decode of a small JPEG on the GPU,
probed once per process, compared with the CPU's: any error, or a picture that differs,
keeps the one-file CPU path.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Iterable, Iterator

import torch
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from lib.base import config

BATCH_IMAGES = 256  # images per decode_jpeg call: 9.6 MB of 112-px faces, one call and one copy back per batch
BATCH_BYTES = 64 * 2**20  # compressed bytes held for one batch at most (a JPEG may carry megabytes of metadata)
BROKEN_AFTER = 16  # JPEGs of one batch that all fail: the decoder is broken, not the files
BATCHABLE_MODES = ("L", "RGB")  # JPEG colour modes nvjpeg decodes to RGB as libjpeg-turbo does
# nvjpeg and libjpeg-turbo differ by rounding in the inverse DCT and the chroma upsampling: torchvision's
# own test of its GPU decoder (test_decode_jpegs_cuda) allows a mean absolute difference below 2 levels.
MEAN_DIFFERENCE_BOUND = 2.0

_probed: dict[str, str | None] = {}  # device -> why its batch decoder is not used (None: it works)
_warned: set[str] = set()
# A forked child (a DataLoader worker) probes anew: CUDA set up in its parent does not work in it.
os.register_at_fork(after_in_child=_probed.clear)

Content = torch.Tensor  # uint8 [bytes] of a JPEG file, on the CPU
Fallback = Callable[[str], "torch.Tensor | None"]  # the one-file path: image, or None once noted


def decode_jpegs(contents: list[Content], device: str) -> list[torch.Tensor | None]:
    """Each JPEG decoded to uint8 RGB [3, H, W] on the CPU, or None where ``device``'s decoder refuses it.
    The batch is one call; when that fails (one corrupt file fails them all) each image is tried alone."""
    if not contents:
        return []
    try:
        return _to_cpu(decode_jpeg(contents, mode=ImageReadMode.RGB, device=device))
    except (RuntimeError, ValueError):
        pass
    images: list[torch.Tensor | None] = []
    for content in contents:
        try:
            images.append(decode_jpeg([content], mode=ImageReadMode.RGB, device=device)[0].cpu())
        except (RuntimeError, ValueError):
            images.append(None)
    return images


def _to_cpu(images: list[torch.Tensor]) -> list[torch.Tensor | None]:
    """The images on the CPU: a batch of one size in one copy (one wait for the GPU, not one per image)."""
    if images and images[0].device.type != "cpu" and len({tuple(image.shape) for image in images}) == 1:
        return list(torch.stack(images).cpu())
    return [image.cpu() for image in images]


def looks_batchable(content: bytes | bytearray) -> bool:
    """A JPEG that ends where a JPEG ends (EOI marker). A file cut short, which libjpeg-turbo refuses and
    nvjpeg might not, is left to the one-file path, which records it as corrupt."""
    return content[:2] == b"\xff\xd8" and content[-2:] == b"\xff\xd9"


class BatchedJpegs:
    """Decodes a run of files in batches on ``device``, yielding one image (or None) per file, in order.

    ``read(rel)`` gives the bytes of a file the batch may decode (a JPEG of the set's size that passed
    every check) or None; ``fallback(rel)`` is the one-file path, which decodes, refuses or records the
    file itself. Decoded images are counted in ``decoded``. A batch of at least BROKEN_AFTER JPEGs none
    of which decodes means the decoder itself has failed (a GPU error stays until the process ends):
    the rest of the run goes through the one-file path without trying it again."""

    def __init__(self, device: str, read: Callable[[str], Content | None], fallback: Fallback):
        self.device, self.read, self.fallback = device, read, fallback
        self.decoded = 0
        self.broken = False

    def __call__(self, rel_paths: Iterable[str]) -> Iterator[torch.Tensor | None]:
        pending: list[tuple[str, Content | None]] = []
        batched, held = 0, 0
        for rel in rel_paths:
            content = None if self.broken else self.read(rel)
            pending.append((rel, content))
            if content is not None:
                batched, held = batched + 1, held + len(content)
            if batched >= BATCH_IMAGES or held >= BATCH_BYTES:
                yield from self._flush(pending)
                pending, batched, held = [], 0, 0
        yield from self._flush(pending)

    def _flush(self, pending: list[tuple[str, Content | None]]) -> Iterator[torch.Tensor | None]:
        decoded = decode_jpegs([content for _, content in pending if content is not None], self.device)
        if len(decoded) >= BROKEN_AFTER and all(image is None for image in decoded):
            self.broken = True
        images = iter(decoded)
        for rel, content in pending:
            image = next(images) if content is not None else None
            if image is not None:
                self.decoded += 1
                yield image
            else:  # not batchable, or refused by the batch decoder: the one-file path decides
                yield self.fallback(rel)


# ----------------------------------------------------------------------------- which device

def batch_device() -> str | None:
    """The device the data cache's JPEGs are decoded on in batches, or None for the one-file CPU path:
    "cuda" when FACELAB_DECODE_DEVICE is auto (the default) or cuda and the GPU decoder passes its probe.
    ValueError for a setting that is none of auto, cpu, cuda."""
    setting = config.decode_device()
    if setting == "cpu":
        return None
    if "cuda" not in _probed:
        _probed["cuda"] = probe("cuda")
    why = _probed["cuda"]
    if why is None:
        return "cuda"
    if setting == "cuda" and "cuda" not in _warned:  # asked for by name: say why it is not used
        _warned.add("cuda")
        print(f"{config.DECODE_DEVICE_ENV}=cuda, but the GPU JPEG decoder is not usable ({why}); "
              "decoding on the CPU", file=sys.stderr, flush=True)
    return None


def probe(device: str) -> str | None:
    """Why ``device``'s batch decoder must not be used, or None when two small JPEGs decode there as on the CPU."""
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device"
    try:
        line = torch.arange(48, dtype=torch.uint8) * 5  # a smooth colour ramp, 48x48
        ramp = torch.stack([line.expand(48, 48), line[:, None].expand(48, 48), 255 - line.expand(48, 48)]).contiguous()
        contents = [encode_jpeg(ramp, quality=90), encode_jpeg(ramp[:1], quality=90)]  # RGB and gray
        expected = [decode_jpeg(c, mode=ImageReadMode.RGB) for c in contents]
        found = decode_jpeg(contents, mode=ImageReadMode.RGB, device=device)
        for image, reference in zip(found, expected):
            image = image.cpu()
            if image.shape != reference.shape:
                return f"decoded a {tuple(reference.shape)} probe image as {tuple(image.shape)}"
            difference = (image.float() - reference.float()).abs().mean().item()
            if difference >= MEAN_DIFFERENCE_BOUND:
                return f"its probe image differs from the CPU's by {difference:.1f} levels on average"
    except Exception as error:  # noqa: BLE001 - any failure of an optional accelerator means: use the CPU
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None
