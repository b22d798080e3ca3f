"""Tiny data sets in the HW2P2 layout, written as lossless PNG files with known pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def pixels(seed: int, size: int = 16, mode: str = "RGB") -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_dataset(root: Path, train: dict[str, int], dev: dict[str, int], ver: int = 4, size: int = 16,
                 pairs: str | None = None) -> dict[str, np.ndarray]:
    """Write the files; return {relative path: HxWx3 pixels} of every image written."""
    written, seed = {}, 0
    for split, counts in (("train", train), ("dev", dev)):
        for identity, count in counts.items():
            for k in range(count):
                rel = f"cls_data/{split}/{identity}/{identity}_{k:04d}.png"
                written[rel] = pixels(seed, size)
                write(root / rel, written[rel])
                seed += 1
    for k in range(ver):
        rel = f"ver_data/v{k}.png"
        written[rel] = pixels(seed, size)
        write(root / rel, written[rel])
        seed += 1
    if pairs is None:
        pairs = "ver_data/v0.png ver_data/v1.png 1\nver_data/v2.png ver_data/v3.png 0\n"
    (root / "val_pairs.txt").write_text(pairs)
    return written


def write_flat_png(path: Path, width: int, height: int) -> None:
    """A valid one-colour PNG of any size, streamed row by row: a 20000x20000 one weighs well under
    1 MB on disk and costs no memory to write, yet a decoder must allocate width*height*3 bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor, row = zlib.compressobj(9), b"\x00" * (1 + (width + 7) // 8)  # filter byte, 1-bit gray
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
