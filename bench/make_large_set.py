"""Build a data set the size of the course's own from the embedded faces, for the benchmarks.

HW2P2's data has about 7,000 identities, 140,000 training images at 112x112 and
thousands of verification pairs. FaceLab ships only LFW-64 (5,042 images), so this
script makes a set of the course's shape out of it: every image is one of the
embedded faces, resized to --size and varied a little (a shifted crop, a flip, a
brightness change, all fixed by the image's number), then written as a JPEG. The
faces repeat, so the set is for measuring speed and memory, never accuracy.

With --link and the embedded size (64), files are hard links to the embedded
faces instead (seconds instead of minutes; every identity then holds the same
few pictures).

Usage: python bench/make_large_set.py OUT [--identities 7000] [--per-identity 20]
       [--dev-per-identity 2] [--ver-images 30000] [--pairs 6000] [--size 112] [--link]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.base import config  # noqa: E402

_SOURCES: list[Path] = []


def source_faces() -> list[Path]:
    return sorted(config.EMBEDDED_DATA.rglob("*.jpg"))


def varied_face(source: Path, number: int, size: int) -> Image.Image:
    """The source face at ``size`` px, varied by ``number`` (deterministic, so a rebuild is identical)."""
    chooser = random.Random(number)
    with Image.open(source) as opened:
        face = opened.convert("RGB")
    width, height = face.size
    shift = max(1, width // 16)
    left, top = chooser.randint(0, shift), chooser.randint(0, shift)
    face = face.crop((left, top, width - shift + left, height - shift + top)).resize((size, size), Image.BILINEAR)
    if chooser.random() < 0.5:
        face = face.transpose(Image.FLIP_LEFT_RIGHT)
    return ImageEnhance.Brightness(face).enhance(chooser.uniform(0.85, 1.15))


def _write(job: tuple[str, int, int, int, bool]) -> None:
    target, source_index, number, size, link = job
    source = _SOURCES[source_index]
    if link:
        os.link(source, target)
    else:
        varied_face(source, number, size).save(target, quality=90)


def _init_worker(sources: list[Path]) -> None:
    _SOURCES[:] = sources


def plan(out: Path, args, count_sources: int) -> tuple[list[tuple[str, int, int, int, bool]], list[str], list[str]]:
    """(files to write, val pair lines, test pair lines): a fixed plan from --seed."""
    chooser = random.Random(args.seed)
    jobs: list[tuple[str, int, int, int, bool]] = []
    number = 0

    def add(path: Path) -> None:
        nonlocal number
        jobs.append((str(path), chooser.randrange(count_sources), number, args.size, args.link))
        number += 1

    for identity in range(args.identities):
        for split, count in (("train", args.per_identity), ("dev", args.dev_per_identity)):
            folder = out / "cls_data" / split / f"id{identity:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                add(folder / f"{index:04d}.jpg")
    ver_names = []
    ver_identities = max(1, args.ver_images // 5)  # five images per verification identity
    (out / "ver_data").mkdir(parents=True, exist_ok=True)
    for index in range(args.ver_images):
        name = f"ver_data/person{index % ver_identities:05d}_{index // ver_identities + 1:04d}.jpg"
        ver_names.append(name)
        add(out / name)
    val_lines = pair_lines(ver_names, ver_identities, args.pairs, chooser)
    test_lines = [line.rsplit(" ", 1)[0] for line in pair_lines(ver_names, ver_identities, args.pairs, chooser)]
    return jobs, val_lines, test_lines  # test pairs carry no label, as in the course's test_pairs.txt


def pair_lines(names: list[str], identities: int, count: int, chooser: random.Random) -> list[str]:
    """Half same-identity pairs, half different, as 'a b label' lines."""
    by_identity: dict[int, list[str]] = {}
    for index, name in enumerate(names):
        by_identity.setdefault(index % identities, []).append(name)
    keys = [key for key, group in by_identity.items() if len(group) >= 2]
    lines = []
    for index in range(count):
        if index % 2 == 0 and keys:
            first, second = chooser.sample(by_identity[chooser.choice(keys)], 2)
            lines.append(f"{first} {second} 1")
        else:
            one, other = chooser.sample(range(identities), 2)
            lines.append(f"{chooser.choice(by_identity[one])} {chooser.choice(by_identity[other])} 0")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--identities", type=int, default=7000)
    parser.add_argument("--per-identity", type=int, default=20)
    parser.add_argument("--dev-per-identity", type=int, default=2)
    parser.add_argument("--ver-images", type=int, default=30000)
    parser.add_argument("--pairs", type=int, default=6000)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--link", action="store_true", help="hard links to the embedded faces (64 px only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if args.link and args.size != 64:
        parser.error("--link keeps the embedded 64 px faces: use it with --size 64")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty: choose a new folder")
    sources = source_faces()
    jobs, val_lines, test_lines = plan(args.out, args, len(sources))
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers, initializer=_init_worker, initargs=(sources,)) as pool:
        for done, _ in enumerate(pool.map(_write, jobs, chunksize=256), start=1):
            if done % 10000 == 0 or done == len(jobs):
                print(f"{done:,}/{len(jobs):,} images ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    (args.out / "val_pairs.txt").write_text("\n".join(val_lines) + "\n")
    (args.out / "test_pairs.txt").write_text("\n".join(test_lines) + "\n")
    print(f"{args.out}: {args.identities:,} identities, {len(jobs):,} images at {args.size} px, "
          f"{len(val_lines):,} val pairs, {len(test_lines):,} test pairs in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
