"""Training speed of the engine against a plain course-notebook loop, same model, same batch.

Baseline (the HW2P2 starter notebook's loop, done well): torchvision ImageFolder
reading JPEGs with PIL, torchvision.transforms (v1) on PIL images, ToTensor +
Normalize, a DataLoader with worker processes, the model in channels_last when the
engine uses it, SGD, cross-entropy with label smoothing. It runs twice: in fp32
(the notebook's ``torch.cuda.amp.autocast`` does nothing on a CPU) and, when the
engine trains in bf16 here, with the same bf16 autocast (the best the notebook's
way can do on this machine).

Engine: lib.train.engine's own step on the uint8 tensors of lib.data (in memory or
memory-mapped), its augmentation, channels_last, and the precision the run asks
for ("auto": bf16 on hardware with bf16 units). Same model spec, batch size,
optimizer, loss and augmentation.

The loops run in alternating rounds in this one process, so a change in the
machine's load hits all alike; images/s counts training steps only (model
building and data decoding excluded). Prints the speeds, the ratios, and each
loop's MFU: model FLOPs (6 x forward MACs per image) per second over the measured
speed of a large matmul in the loop's precision.
Usage: python bench/train_speed.py [--recipe recipes/demo-ce.json] [--rounds 3] [--steps 30] [--data DIR]
       [--precision auto|fp32|bf16]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# As `python -m lib train` does (lib/commands/train.py): idle OpenMP threads sleep rather than spin.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402

from lib.model.net import FaceNet  # noqa: E402
from lib.model.profile import profile  # noqa: E402
from lib.train.batches import make_loader  # noqa: E402
from lib.train.config import load_run_file
from lib.train.engine import Trainer  # noqa: E402
from lib.train.step import train_step  # noqa: E402


def notebook_loader(root: Path, mean, std, batch_size: int, workers: int, size: int):
    transform = transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1)),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    dataset = datasets.ImageFolder(str(root / "cls_data" / "train"), transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       drop_last=True, persistent_workers=workers > 0)


class NotebookLoop:
    def __init__(self, trainer: Trainer, workers: int, autocast_dtype: torch.dtype | None = None):
        config = trainer.config
        torch.manual_seed(config.seed)
        self.model = FaceNet(trainer.spec).train()
        # Done well: the same memory format as the engine (channels_last is worth ~12% per CPU-second).
        self.channels_last = config.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                                         nesterov=config.nesterov, weight_decay=config.weight_decay)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.autocast_dtype = autocast_dtype
        size = int(trainer.data.train.images.shape[-1])
        self.loader = notebook_loader(trainer.data.root, trainer.data.mean, trainer.data.std,
                                      config.batch_size, workers, size)
        self.batches = iter(self.loader)

    def next_batch(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def step(self) -> int:
        images, labels = self.next_batch()
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            loss = self.criterion(self.model(images).float(), labels)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return len(labels)


class EngineLoop:
    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.epoch = 0
        self._new_epoch()

    def _new_epoch(self):
        self.trainer.batches.set_epoch(self.epoch)
        self.batches = iter(make_loader(self.trainer.batches, self.trainer.config.workers))
        self.epoch += 1

    def step(self) -> int:
        try:
            images, labels = next(self.batches)
        except StopIteration:
            self._new_epoch()
            images, labels = next(self.batches)
        train_step(self.trainer.step_parts, images, labels)
        return len(labels)


def _children_cpu_seconds() -> float:
    """CPU time of live child processes (DataLoader workers), from /proc on Linux; 0 elsewhere."""
    total, me = 0.0, str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # fields[1] is the parent pid; utime and stime follow at 11 and 12
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + _children_cpu_seconds()


def timed(loop, steps: int) -> tuple[int, float, float]:
    """(images, wall seconds, CPU seconds of this process and its workers)."""
    start, cpu_start, images = time.perf_counter(), cpu_seconds(), 0
    for _ in range(steps):
        images += loop.step()
    return images, time.perf_counter() - start, cpu_seconds() - cpu_start


def matmul_flops(dtype: torch.dtype, size: int = 2048, reps: int = 5) -> float:
    """Measured FLOP/s of a large square matmul in ``dtype`` on this CPU: the ceiling for MFU."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up: library choice
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - started)


def report(trainer, args, totals: dict, rounds: dict, labels: dict) -> None:
    config = trainer.config
    speed = {name: images / seconds for name, (images, seconds, _) in totals.items()}
    per_cpu = {name: images / cpu for name, (images, _, cpu) in totals.items()}
    size = int(trainer.data.train.images.shape[-1])  # the images trained on, whatever the recipe's input_size
    flops_per_image = 6 * profile(replace(trainer.spec, input_size=size)).macs
    peaks = {dtype: matmul_flops(dtype) for dtype in (torch.float32, torch.bfloat16)}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"model {trainer.spec.name} at {trainer.data.train.images.shape[-1]} px, batch {config.batch_size}, "
          f"threads {torch.get_num_threads()}, {args.rounds} alternating rounds x {args.steps} steps each, "
          f"load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"matmul ceiling: fp32 {peaks[torch.float32] / 1e9:.0f} GFLOP/s, bf16 {peaks[torch.bfloat16] / 1e9:.0f} "
          f"GFLOP/s; training {flops_per_image / 1e9:.2f} GFLOP per image")
    for name, (text, dtype) in labels.items():
        mfu = speed[name] * flops_per_image / peaks[dtype or torch.float32]
        print(f"{text}: {speed[name]:.1f} images/s, {per_cpu[name]:.1f} images per CPU-second, MFU {mfu:.1%}")
    for name in labels:
        if name == "engine":
            continue
        ratios = rounds[name]
        print(f"engine / {name}: {speed['engine'] / speed[name]:.2f}x images/s overall, "
              f"{statistics.median(ratios):.2f}x median of the rounds (min {min(ratios):.2f}, max {max(ratios):.2f}); "
              f"{per_cpu['engine'] / per_cpu[name]:.2f}x images per CPU-second")


def contenders(trainer: Trainer, workers: int) -> dict:
    """name -> (loop, label, autocast dtype): the engine, the notebook in fp32 and, when the engine
    trains in bf16, the notebook with the same autocast."""
    config = trainer.config
    engine_dtype = trainer.autocast_dtype
    loops = {"engine": (EngineLoop(trainer), f"engine ({trainer.precision}, channels_last={config.channels_last}, "
                                             f"{config.workers} augmentation workers)", engine_dtype)}
    for dtype in dict.fromkeys([None, engine_dtype]):
        name = "notebook" if dtype is None else "notebook-bf16"
        loops[name] = (NotebookLoop(trainer, workers, dtype),
                       f"{name} (ImageFolder + PIL transforms + DataLoader, {workers} workers, "
                       f"channels_last={config.channels_last})", dtype)
    return loops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="recipes/demo-ce.json")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="training steps per loop per round")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds of rest after each loop's turn, so that its DataLoader workers finish "
                             "prefetching before the next loop is timed (their head start favours the notebook)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the notebook loop")
    parser.add_argument("--engine-workers", type=int, help="augmentation workers of the engine (default: the recipe's)")
    parser.add_argument("--data", help="another data set (e.g. 112 px from bench/make_large_set.py)")
    parser.add_argument("--precision", help="the engine's precision (default: the recipe's, else auto)")
    args = parser.parse_args()
    config = load_run_file(args.recipe)
    if args.data:
        config.data_root = args.data
    if args.engine_workers is not None:
        config.workers = args.engine_workers
    if args.precision:
        config.precision = args.precision
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, out)
        loops = contenders(trainer, args.workers)
        for loop, _, _ in loops.values():  # warm-up: first batches, worker start, allocator
            timed(loop, 3)
            time.sleep(args.settle)
        totals = {name: [0, 0.0, 0.0] for name in loops}
        rounds = {name: [] for name in loops}
        for _ in range(args.rounds):
            speeds = {}
            for name, (loop, _, _) in loops.items():
                images, seconds, cpu = timed(loop, args.steps)
                time.sleep(args.settle)
                totals[name] = [totals[name][0] + images, totals[name][1] + seconds, totals[name][2] + cpu]
                speeds[name] = images / seconds
            for name in loops:
                rounds[name].append(speeds["engine"] / speeds[name])
    report(trainer, args, totals, rounds, {name: (text, dtype) for name, (_, text, dtype) in loops.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
