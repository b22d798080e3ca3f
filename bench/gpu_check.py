"""GPU check: FaceLab's training engine against a plain timm-style loop on one GPU.

Builds a 112x112 face set in the HW2P2 layout from data/lfw64 (each face upscaled
once, then hard-linked into its identity folder enough times for the planned
steps), measures the GPU's bf16 matmul speed as the ceiling for MFU, then trains
two models (the course ConvNeXt, a ResNet-18) for a fixed number of steps in two
ways, one after the other for each model:

  engine     lib.train.engine.train(): in-memory uint8 images, the uint8 batches
             moved to the GPU and augmented there a whole batch at a time
             (augment_on auto), bf16 autocast, channels_last, torch.compile as
             --compile says (off by default: its minute of compiling would eat
             the timed window; --compile on measures it), evaluation and
             checkpoints at the end of every epoch.
  reference  torchvision ImageFolder (PIL decoding of the JPEGs), DataLoader with
             worker processes, pinned memory and persistent workers, the same
             FaceNet, optimizer, loss, batch size, augmentation and precision.

Prints images/s, the ratio engine/reference, peak GPU memory, the loss at the
start and end of each run, and the training MFU. Before the runs it also builds
the data cache of the set's distinct faces twice, one file at a time on the CPU
and in batches with the GPU's JPEG decoder (nvjpeg; libjpeg-turbo in a CPU smoke
run), and prints both images/s and how far the pixels differ. Exit code 0 when
every run finished and its loss fell and the decodes matched (mean difference
below 2 levels); 1 otherwise; 2 when there is no GPU (use --smoke).

Usage (from the repository root): bash bench/gpu_check.sh [--smoke] [--steps N] ...
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

STARTED = time.perf_counter()  # before torch loads: the time budget covers the imports too
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# As `python -m lib train` does: idle OpenMP threads sleep rather than spin. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402

from bench.decode_speed import compare_decoders, comparison_text, image_paths  # noqa: E402
from lib.base import config as paths  # noqa: E402
from lib.model.net import FaceNet  # noqa: E402
from lib.model.profile import profile  # noqa: E402
from lib.store.run_folder import RunFolder  # noqa: E402
from lib.train import engine  # noqa: E402
from lib.train.config import TrainConfig, config_from_run, resolve_model  # noqa: E402
from lib.train.step import EpochTally  # noqa: E402

SOURCE = ROOT / "data" / "lfw64"
CROP_PADDING = 8  # pixels of reflected border before the random crop (4 at 64 px scales to ~8 at 112)
# The engine's form of "random crop + horizontal flip"; the reference builds the same from torchvision.
FLIP_AND_CROP = [{"name": "RandomCrop", "params": {"size": 0, "padding": CROP_PADDING, "padding_mode": "reflect"}},
                 {"name": "RandomHorizontalFlip", "params": {"p": 0.5}}]


# ----------------------------------------------------------------------------- plan

@dataclass
class Plan:
    """Everything both ways share; --smoke makes it small enough for a 2-core CPU."""

    smoke: bool
    device: str
    precision: str  # "bf16" on a GPU, "fp32" on the CPU
    channels_last: bool
    image_size: int
    batch_size: int
    epochs: int
    target_steps: int  # the data set is sized so that epochs x steps-per-epoch comes close to this
    workers: int
    compile_model: str  # the engine's compile_model: "off" unless --compile says otherwise
    skip_steps: int  # first steps left out of the wall-clock figures (cuDNN set-up, allocator, worker start)
    run_cap_s: float  # a run stops after this many seconds of training, whatever its step count
    budget_s: float  # the whole check must end within this; a run that would not fit is skipped
    identities: int = 0  # 0: all 298
    images_per_identity: int = 0  # 0: all
    pairs: int = 0  # verification pairs kept (half same, half different); 0: all 1,000
    started: float = STARTED

    def seconds_left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)


def make_plan(args) -> Plan:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if args.smoke:
        return Plan(smoke=True, device=device, precision="bf16" if cuda else "fp32", channels_last=cuda,
                    image_size=args.size, batch_size=8, epochs=2, target_steps=6, workers=2, skip_steps=1,
                    compile_model=args.compile,
                    run_cap_s=120.0, budget_s=1800.0, identities=6, images_per_identity=4, pairs=20)
    return Plan(smoke=False, device=device, precision="bf16", channels_last=True, image_size=args.size,
                batch_size=args.batch, epochs=args.epochs, target_steps=args.steps, workers=args.workers,
                compile_model=args.compile, skip_steps=10, run_cap_s=args.run_cap, budget_s=args.budget)


# ----------------------------------------------------------------------------- device facts

def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def print_device_facts(plan: Plan) -> None:
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs")
    if plan.device != "cuda":
        print("device: CPU (no GPU found); smoke run in fp32")
        return
    props = torch.cuda.get_device_properties(0)
    print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor}, "
          f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    print(f"bf16 supported: {torch.cuda.is_bf16_supported()}; cudnn.benchmark: {torch.backends.cudnn.benchmark} "
          f"(left as is for both ways)")


def matmul_flops(plan: Plan) -> float:
    """Measured FLOP/s of one large square matmul (bf16 on the GPU): the ceiling MFU is measured against."""
    size, reps, dtype = (8192, 50, torch.bfloat16) if plan.device == "cuda" else (1024, 5, torch.float32)
    a = torch.randn(size, size, device=plan.device, dtype=dtype)
    b = torch.randn(size, size, device=plan.device, dtype=dtype)
    for _ in range(3):  # warm-up: library choice and clocks
        a @ b
    sync(plan.device)
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(plan.device)
    seconds = time.perf_counter() - started
    flops = 2 * size**3 * reps / seconds
    print(f"matmul {size}^3 {str(dtype).replace('torch.', '')}: {flops / 1e12:.1f} TFLOP/s "
          f"({reps} reps, {seconds * 1e3 / reps:.2f} ms each)")
    del a, b
    free_memory(plan.device)
    return flops


def free_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None


# ----------------------------------------------------------------------------- data set

@dataclass
class FaceSet:
    root: Path
    classes: int
    distinct_train: int
    train_images: int
    dev_images: int
    ver_images: int
    pairs: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    seconds: float


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def upscale(source: Path, target: Path, size: int) -> np.ndarray:
    """Bicubic upscale, re-saved as JPEG; returns the pixels (for the channel statistics)."""
    with Image.open(source) as image:
        big = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    big.save(target, quality=90)
    return np.asarray(big)


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # same bytes, no extra disk; each name is still its own image to the loaders
    except OSError:
        shutil.copyfile(source, target)


def chosen_identities(count: int, per_identity: int) -> list[str]:
    """All train identities, or the ``count`` with the most images that also have dev images."""
    train, dev = SOURCE / "cls_data" / "train", SOURCE / "cls_data" / "dev"
    names = sorted(p.name for p in train.iterdir() if p.is_dir())
    if not count:
        return names
    usable = [n for n in names if (dev / n).is_dir() and len(image_files(train / n)) >= max(1, per_identity)]
    usable.sort(key=lambda n: (-len(image_files(train / n)), n))
    return sorted(usable[:count])


def chosen_pairs(count: int) -> list[str]:
    """Lines of val_pairs.txt: all, or the first count/2 same-person and count/2 different-person pairs."""
    lines = [line for line in (SOURCE / "val_pairs.txt").read_text().splitlines() if line.strip()]
    if not count:
        return lines
    same = [line for line in lines if line.split()[2] == "1"][:count // 2]
    different = [line for line in lines if line.split()[2] == "0"][:count // 2]
    return same + different


def copies_needed(distinct: int, plan: Plan) -> int:
    """How many names each train face gets so that one epoch holds about target_steps / epochs batches.
    Faces are repeated inside their own identity (not as new identities): identical faces under two
    labels could never be told apart, so the loss could not fall below log(copies)."""
    wanted = math.ceil(plan.target_steps / plan.epochs) * plan.batch_size
    return max(1, math.ceil(wanted / distinct))


def build_face_set(out: Path, plan: Plan) -> FaceSet:
    started = time.perf_counter()
    size, per_identity = plan.image_size, plan.images_per_identity or None
    identities = chosen_identities(plan.identities, plan.images_per_identity)
    pixel_sum, pixel_squares, pixel_count = np.zeros(3), np.zeros(3), 0
    distinct = []
    for name in identities:
        folder = out / "cls_data" / "train" / name
        folder.mkdir(parents=True)
        for source in image_files(SOURCE / "cls_data" / "train" / name)[:per_identity]:
            target = folder / f"{source.stem}.jpg"
            pixels = upscale(source, target, size).reshape(-1, 3) / 255.0
            pixel_sum += pixels.sum(0)
            pixel_squares += (pixels * pixels).sum(0)
            pixel_count += len(pixels)
            distinct.append(target)
    copies = copies_needed(len(distinct), plan)
    for target in distinct:
        for copy in range(1, copies):
            link_or_copy(target, target.with_name(f"{target.stem}_copy{copy:02d}.jpg"))
    dev_images = 0
    for name in identities:
        source_folder = SOURCE / "cls_data" / "dev" / name
        if not source_folder.is_dir():
            continue
        folder = out / "cls_data" / "dev" / name
        folder.mkdir(parents=True)
        for source in image_files(source_folder)[:per_identity]:
            upscale(source, folder / f"{source.stem}.jpg", size)
            dev_images += 1
    lines = chosen_pairs(plan.pairs)
    (out / "ver_data").mkdir()
    ver_files = sorted({name for line in lines for name in line.split()[:2]})
    for name in ver_files:
        upscale(SOURCE / name, out / name, size)
    (out / "val_pairs.txt").write_text("\n".join(lines) + "\n")
    # Every face is repeated the same number of times, so these are also the statistics of the
    # whole train split, the ones the engine computes for itself.
    mean = pixel_sum / pixel_count
    std = np.sqrt(np.maximum(pixel_squares / pixel_count - mean * mean, 0))
    return FaceSet(root=out, classes=len(identities), distinct_train=len(distinct),
                   train_images=len(distinct) * copies, dev_images=dev_images, ver_images=len(ver_files),
                   pairs=len(lines), mean=tuple(mean.tolist()), std=tuple(std.tolist()),
                   seconds=time.perf_counter() - started)


# ----------------------------------------------------------------------------- the two models

def common_settings(plan: Plan, face_set: FaceSet) -> dict:
    """TrainConfig fields both models share. Left out of the course recipe on purpose: CutMix and EMA
    (the reference loop has neither) and the warm-up/cosine schedule (constant learning rate in both)."""
    return {"data_root": str(face_set.root), "augment": FLIP_AND_CROP, "mix": "none", "ema": False,
            "schedule": "constant", "warmup_epochs": 0, "epochs": plan.epochs, "batch_size": plan.batch_size,
            "precision": plan.precision, "channels_last": plan.channels_last, "workers": plan.workers,
            "compile_model": plan.compile_model, "device": plan.device, "eval_flip": False, "seed": 0}


def model_at_size(model, size: int) -> dict:
    spec = resolve_model(model)
    spec["input_size"] = size
    return spec


def model_configs(plan: Plan, face_set: FaceSet) -> list[TrainConfig]:
    """The course ConvNeXt recipe (its AdamW settings) and ResNet-18 with the CE demo's SGD settings."""
    common = common_settings(plan, face_set)
    convnext = json.loads((paths.RECIPES_DIR / "convnext-course.json").read_text(encoding="utf-8"))
    demo = json.loads((paths.RECIPES_DIR / "demo-ce.json").read_text(encoding="utf-8"))
    return [
        config_from_run({"name": "convnext-course", "model": model_at_size(convnext["model"], plan.image_size),
                         "config": {**convnext["config"], **common}}),
        # lr 0.1 per 256 images, the ImageNet rule for ResNets (the demo's 0.1 is for batch 64 with warm-up).
        config_from_run({"name": "resnet18", "model": model_at_size("resnet18", plan.image_size),
                         "config": {**demo["config"], **common, "lr": 0.1 * plan.batch_size / 256}}),
    ]


# ----------------------------------------------------------------------------- measuring a run

@dataclass
class RunResult:
    model: str
    way: str
    batch_size: int
    macs: int = 0  # per image, forward
    steps: int = 0
    startup_s: float = 0.0  # from the call to the end of the first step
    timed_steps: int = 0
    timed_s: float = 0.0
    own_images_per_s: float | None = None  # the engine's own figure (training time only)
    epoch_pauses_s: list[float] = field(default_factory=list)  # inside the timed window (engine only)
    peak_mib: float | None = None
    losses: list[float] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # the engine's metrics.jsonl
    warnings: list[str] = field(default_factory=list)  # the engine's warning events
    capped: bool = False
    error: str = ""

    @property
    def wall_images_per_s(self) -> float:
        """Over the timed window, the engine's epoch-end pauses included."""
        return self.timed_steps * self.batch_size / self.timed_s if self.timed_s > 0 else 0.0

    @property
    def images_per_s(self) -> float:
        """Training throughput: the timed window less the engine's epoch-end pauses (evaluation,
        checkpoints, a new DataLoader), which are reported on their own."""
        seconds = self.timed_s - sum(self.epoch_pauses_s)
        return self.timed_steps * self.batch_size / seconds if seconds > 0 else 0.0

    def loss_window(self) -> int:
        return max(1, min(10, len(self.losses) // 3))

    def first_loss(self) -> float:
        return statistics.fmean(self.losses[:self.loss_window()])

    def last_loss(self) -> float:
        return statistics.fmean(self.losses[-self.loss_window():])

    def loss_fell(self) -> bool:
        return len(self.losses) >= 2 and all(map(math.isfinite, self.losses)) and self.last_loss() < self.first_loss()


class StepClock:
    """Called once after every optimizer step: notes the time, and says stop once the run has trained
    for ``cap_s`` seconds (a guard so one slow run cannot push the check past its time budget)."""

    def __init__(self, cap_s: float):
        self.cap_s = cap_s
        self.called = time.perf_counter()
        self.step_ends: list[float] = []
        self.capped = False

    def __call__(self) -> bool:
        now = time.perf_counter()
        self.step_ends.append(now)
        self.capped = now - self.step_ends[0] > self.cap_s
        return self.capped


def fill_timing(result: RunResult, clock: StepClock, skip: int) -> None:
    """Wall clock from the end of step ``skip`` to the end of the last step."""
    ends = clock.step_ends
    result.steps, result.capped = len(ends), clock.capped
    if ends:
        result.startup_s = ends[0] - clock.called
    skip = min(skip, len(ends) - 1)
    if skip >= 1:
        result.timed_steps = len(ends) - skip
        result.timed_s = ends[-1] - ends[skip - 1]


class LossRecordingTally(EpochTally):
    """The engine's EpochTally, also keeping every step's loss: the engine's events and metrics.jsonl
    carry only epoch means, and the check wants the loss of the first and the last steps."""

    losses: list[float] = []

    def add(self, loss: float, correct: float, images: int) -> None:
        super().add(loss, correct, images)
        LossRecordingTally.losses.append(loss)


def engine_own_speed(records: list[dict], events: list[dict], batch_size: int) -> float | None:
    """The engine's images/s: from its epoch records (training time only: evaluation excluded, each
    epoch's DataLoader start included), else from its last progress event (a run stopped mid-epoch)."""
    if records:
        images = records[-1]["step"] * batch_size
        seconds = sum(record["train_s"] for record in records)
        return images / seconds if seconds else None
    progress = [event for event in events if event["kind"] == "progress" and event.get("images_per_s")]
    return progress[-1]["images_per_s"] if progress else None


def epoch_pauses(step_ends: list[float], steps_per_epoch: int, skip: int) -> list[float]:
    """Extra seconds between the last step of an epoch and the first of the next (evaluation,
    checkpoints, a new DataLoader) beyond a typical step, for the epoch ends after step ``skip``."""
    gaps = [b - a for a, b in zip(step_ends, step_ends[1:])]  # gaps[k - 1]: from step k to step k + 1
    if not gaps:
        return []
    typical = statistics.median(gaps)
    ends = range(steps_per_epoch, len(step_ends), steps_per_epoch)
    return [max(0.0, gaps[k - 1] - typical) for k in ends if k >= skip]


def run_engine(config: TrainConfig, out_dir: Path, plan: Plan, result: RunResult, cap_s: float) -> None:
    events: list[dict] = []
    clock = StepClock(cap_s)
    LossRecordingTally.losses = []
    original_tally = engine.EpochTally
    engine.EpochTally = LossRecordingTally
    reset_peak(plan.device)
    try:
        summary = engine.train(config, out_dir, on_event=events.append, should_stop=clock)
    finally:
        engine.EpochTally = original_tally
        result.peak_mib = peak_mib(plan.device)
        result.losses = list(LossRecordingTally.losses)
        fill_timing(result, clock, plan.skip_steps)
    result.records = RunFolder(out_dir).read_metrics()
    result.warnings = [event["message"] for event in events if event["kind"] == "warning"]
    result.own_images_per_s = engine_own_speed(result.records, events, plan.batch_size)
    start = next((event for event in events if event["kind"] == "start"), {})
    steps_per_epoch = start.get("total_steps", 0) // plan.epochs
    if steps_per_epoch:
        result.epoch_pauses_s = epoch_pauses(clock.step_ends, steps_per_epoch, min(plan.skip_steps, result.steps - 1))
    if summary["status"] == "failed":
        raise RuntimeError(f"the engine reported a failed run: {summary.get('message', '')}")


class Batches:
    """Endless batches: a new epoch of the loader when one ends (its workers persist)."""

    def __init__(self, loader):
        self.loader, self.iterator = loader, iter(loader)

    def next(self):
        try:
            return next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            return next(self.iterator)


def reference_loader(face_set: FaceSet, plan: Plan) -> torch.utils.data.DataLoader:
    augment = transforms.Compose([
        transforms.RandomCrop(plan.image_size, padding=CROP_PADDING, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(face_set.mean, face_set.std),
    ])
    dataset = datasets.ImageFolder(str(face_set.root / "cls_data" / "train"), transform=augment)
    return torch.utils.data.DataLoader(dataset, batch_size=plan.batch_size, shuffle=True, drop_last=True,
                                       num_workers=plan.workers, pin_memory=plan.device == "cuda",
                                       persistent_workers=plan.workers > 0)


def reference_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimizer; like timm, no weight decay on biases and norm scales (as the engine)."""
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.999))
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)


def run_reference(config: TrainConfig, face_set: FaceSet, steps: int, plan: Plan, result: RunResult,
                  cap_s: float) -> None:
    device = plan.device
    clock = StepClock(cap_s)
    reset_peak(device)
    torch.manual_seed(config.seed)
    model = FaceNet(replace(config.spec(), num_classes=face_set.classes)).to(device).train()
    memory_format = torch.channels_last if plan.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = reference_optimizer(config, model)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    batches = Batches(reference_loader(face_set, plan))
    losses = []  # kept on the device: reading a loss each step would wait for the GPU every step
    for step in range(1, steps + 1):
        images, labels = batches.next()
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=plan.precision == "bf16"):
            loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        if step in (1, plan.skip_steps):
            sync(device)  # the timed window starts at a finished step
        if clock() or step == steps:
            sync(device)  # ... and ends at one
            clock.step_ends[-1] = time.perf_counter()
            break
    fill_timing(result, clock, plan.skip_steps)
    result.losses = torch.stack(losses).float().cpu().tolist()
    result.peak_mib = peak_mib(device)
    del batches, model, optimizer  # shuts the persistent workers down before the next run


def measure(way: str, config: TrainConfig, face_set: FaceSet, plan: Plan, steps: int, work_dir: Path) -> RunResult:
    """One run; a failure is printed with its traceback and recorded, so the other runs still report."""
    spec = replace(config.spec(), num_classes=face_set.classes)
    result = RunResult(model=spec.name, way=way, batch_size=plan.batch_size)
    cap_s = min(plan.run_cap_s, plan.seconds_left() - 30)  # 30 s for start-up, evaluation and saving
    print(f"\n--- {spec.name}, {way}: {steps} steps of {plan.batch_size} at {plan.image_size} px", flush=True)
    if cap_s < 10:
        result.error = f"skipped: only {plan.seconds_left():.0f} s of the {plan.budget_s:.0f} s budget left"
        print(result.error)
        return result
    print(f"(stops early after {cap_s:.0f} s of training)", flush=True)
    try:
        result.macs = profile(spec).macs
        if way == "engine":
            run_engine(config, work_dir / f"{config.name}-engine", plan, result, cap_s)
        else:
            run_reference(config, face_set, steps, plan, result, cap_s)
    except Exception as err:  # noqa: BLE001  (any failure: report it and go on with the other runs)
        traceback.print_exc()
        result.error = f"{type(err).__name__}: {err}"
    finally:
        free_memory(plan.device)
    print_run(result)
    return result


# ----------------------------------------------------------------------------- reporting

def print_run(result: RunResult) -> None:
    if result.error:
        print(f"FAILED: {result.error}")
    if not result.steps:
        return
    line = (f"{result.steps} steps; start-up {result.startup_s:.1f} s (to the end of step 1); "
            f"{result.wall_images_per_s:,.0f} img/s wall over steps {result.steps - result.timed_steps + 1}-"
            f"{result.steps} ({result.timed_s:.1f} s)")
    if result.capped:
        line += "; stopped at the time cap"
    print(line)
    for warning in result.warnings:
        print(f"engine warning: {warning}")
    if result.own_images_per_s is not None:
        print(f"engine's own figure: {result.own_images_per_s:,.0f} img/s (training time only)")
    if result.epoch_pauses_s:
        pauses = ", ".join(f"{p:.2f}" for p in result.epoch_pauses_s)
        print(f"pause at the epoch end(s) in that window (evaluation, checkpoints, new loader): {pauses} s; "
              f"{result.images_per_s:,.0f} img/s without")
    for record in result.records:
        print(f"  metrics.jsonl epoch {record['epoch']}: train loss {record['train_loss']:.3f}, "
              f"train acc {record['train_acc']:.3f}, dev top-1 {record['dev_top1']:.3f}, AUC {record['auc']:.3f}, "
              f"{record['images_per_s']:,.0f} img/s over {record['train_s']:.1f} s, eval {record['eval_s']:.2f} s")
    if result.losses:
        print(f"loss: first {result.losses[0]:.3f}, last {result.losses[-1]:.3f}; mean of the first/last "
              f"{result.loss_window()} steps {result.first_loss():.3f} -> {result.last_loss():.3f}")


def mfu_text(result: RunResult, peak_flops: float) -> str:
    """Model FLOPs per second over the measured matmul ceiling: forward MACs x 2 FLOPs, x 3 for
    forward + backward (activations and weight gradients)."""
    if not result.images_per_s or not peak_flops:
        return "-"
    return f"{6 * result.macs * result.images_per_s / peak_flops:.1%}"


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def print_table(results: list[RunResult], peak_flops: float) -> None:
    reference = {r.model: r for r in results if r.way == "reference" and r.images_per_s}
    header = (f"{'model':<14} {'way':<10} {'steps':>5} {'img/s':>9} {'eng/ref':>7} {'wall img/s':>10} "
              f"{'pause s':>7} {'peak MiB':>9} {'loss first -> last':>19} {'MFU':>6} {'GFLOP/img':>9}  note")
    print("\n" + header)
    print("-" * len(header))
    for r in results:
        ratio = "-"
        if r.way == "engine" and r.images_per_s and r.model in reference:
            ratio = f"{r.images_per_s / reference[r.model].images_per_s:.2f}x"
        peak = f"{r.peak_mib:,.0f}" if r.peak_mib is not None else "-"
        loss = f"{r.first_loss():.3f} -> {r.last_loss():.3f}" if r.losses else "-"
        notes = [text for text, applies in (("stopped at the time cap", r.capped),
                                            ("LOSS DID NOT FALL", not r.loss_fell())) if applies]
        note = shorten(r.error, 60) if r.error else ", ".join(notes) or "ok"
        pause = f"{sum(r.epoch_pauses_s):.2f}" if r.way == "engine" and r.steps else "-"
        print(f"{r.model:<14} {r.way:<10} {r.steps:>5} {r.images_per_s:>9,.0f} {ratio:>7} {r.wall_images_per_s:>10,.0f} "
              f"{pause:>7} {peak:>9} {loss:>19} {mfu_text(r, peak_flops):>6} {6 * r.macs / 1e9:>9.2f}  {note}")


def check_decode(face_set: FaceSet, plan: Plan) -> str | None:
    """The data cache built by the batch JPEG decoder (nvjpeg on a GPU; libjpeg-turbo in a CPU smoke run)
    against the one-file CPU path, over the set's distinct files (its copies are hard links to them);
    what went wrong, or None."""
    device = "cuda" if plan.device == "cuda" else "cpu"
    rel_paths = [rel for rel in image_paths(face_set.root) if "_copy" not in Path(rel).stem]
    try:
        result = compare_decoders(face_set.root, rel_paths, device)
    except Exception as error:  # noqa: BLE001 - reported with the runs' problems, the training runs still go
        traceback.print_exc()
        return f"data cache decode on {device}: {type(error).__name__}: {error}"
    print("\n" + comparison_text(result))
    return result.problem()


def verdict(results: list[RunResult], other_problems: tuple[str, ...] = ()) -> int:
    problems = [f"{r.model} {r.way}: {r.error}" for r in results if r.error] + list(other_problems)
    problems += [f"{r.model} {r.way}: the loss did not fall ({r.first_loss():.3f} -> {r.last_loss():.3f})"
                 for r in results if not r.error and not r.loss_fell()]
    if problems:
        print("\nCHECK FAILED:\n  " + "\n  ".join(problems))
        return 1
    print("\nCHECK PASSED: every run finished and its loss fell; the batch JPEG decode matched the CPU's")
    return 0


# ----------------------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny data, 6 steps, batch 8, CPU allowed (fp32 there): checks that the script works")
    parser.add_argument("--steps", type=int, default=600, help="steps per run, about (default 600)")
    parser.add_argument("--epochs", type=int, default=2, help="engine epochs the steps are split into (default 2)")
    parser.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader worker processes, both ways (default 8)")
    parser.add_argument("--compile", choices=("off", "on", "auto"), default="off",
                        help="the engine's torch.compile (default off; 'on' adds its compile time to the first steps)")
    parser.add_argument("--size", type=int, default=112, help="image size in pixels (default 112)")
    parser.add_argument("--run-cap", type=float, default=45.0,
                        help="seconds of training after which a run stops (default 45)")
    parser.add_argument("--budget", type=float, default=330.0,
                        help="seconds the whole check may take; runs that would not fit are skipped (default 330)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data set and run folders")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    if plan.device != "cuda" and not plan.smoke:
        print("no GPU found (torch.cuda.is_available() is False): this check needs one; "
              "--smoke runs a small version on the CPU")
        return 2
    print(f"== FaceLab GPU check{' (smoke)' if plan.smoke else ''}")
    print_device_facts(plan)
    peak_flops = matmul_flops(plan)
    work_dir = Path(tempfile.mkdtemp(prefix="facelab-gpu-check-"))
    # The engine only reads data sets inside a configured data root.
    os.environ[paths.DATA_ROOTS_ENV] = os.pathsep.join(
        part for part in (os.environ.get(paths.DATA_ROOTS_ENV, ""), str(work_dir)) if part)
    try:
        face_set = build_face_set(work_dir / "faces", plan)
        steps_per_epoch = face_set.train_images // plan.batch_size
        steps = plan.epochs * steps_per_epoch
        print(f"\ndata set {face_set.root}: {face_set.classes} identities, {face_set.train_images:,} train images "
              f"({face_set.distinct_train:,} distinct faces, each repeated {face_set.train_images // face_set.distinct_train}x "
              f"by hard links), {face_set.dev_images} dev, {face_set.ver_images} verification images, "
              f"{face_set.pairs} pairs, {plan.image_size}x{plan.image_size} JPEG; built in {face_set.seconds:.1f} s")
        print(f"each run: {steps} steps = {plan.epochs} epochs x {steps_per_epoch} steps of {plan.batch_size}; "
              f"{plan.precision}, channels_last {plan.channels_last}, {plan.workers} workers, engine compile "
              f"{plan.compile_model}, engine augmentation on the {'GPU' if plan.device == 'cuda' else 'CPU'}; augmentation: "
              f"random crop (pad {CROP_PADDING}, reflect) + horizontal flip; no CutMix, no EMA, constant lr")
        print(f"the engine evaluates dev + pairs ({face_set.dev_images + face_set.ver_images} images) and saves "
              f"checkpoints at each of its {plan.epochs} epoch ends: {plan.epochs - 1} such pause(s) fall inside "
              f"the timed window and are measured and shown apart; the first {plan.skip_steps} steps are "
              f"outside it, and so is start-up (for the first engine run it includes decoding the whole data set "
              f"into memory; later engine runs find it cached)")
        decode_problem = check_decode(face_set, plan)
        results = []
        for config in model_configs(plan, face_set):
            for way in ("engine", "reference"):
                results.append(measure(way, config, face_set, plan, steps, work_dir))
        print_table(results, peak_flops)
        print(f"wall img/s: wall clock from the end of step {plan.skip_steps} to the end of the last step "
              f"(start-up excluded); img/s: the same less the engine's epoch-end pauses (pause s); eng/ref compares "
              f"img/s; peak MiB: torch.cuda.max_memory_allocated over the run (the engine's includes its "
              f"evaluation); loss: mean of the first and of the last steps; GFLOP/img: training, 6 x forward MACs; "
              f"MFU: GFLOP/img x img/s / {peak_flops / 1e12:.1f} TFLOP/s (the measured matmul)")
        status = verdict(results, (decode_problem,) if decode_problem else ())
    finally:
        if args.keep:
            print(f"kept {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    print(f"total {time.perf_counter() - plan.started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
