"""One optimizer step, the per-epoch tally, and the checks that stop or flag a run."""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lib.data.augment import BatchMix, batch_mix
from lib.eval.metrics import is_collapsed
from lib.losses.margins import LossOutput, hard_targets
from lib.model.net import FaceNet
from lib.train.ema import ModelEma

MARGIN_LOSSES = ("arcface", "cosface", "sphereface")
STUCK_AFTER_EPOCHS = 2
STUCK_FACTOR = 3.0  # "near chance": train accuracy below 3x the accuracy of guessing
# Weights (parameters and buffers: BatchNorm's running variance is often the first to overflow,
# while the loss is still a finite 1e20) are checked for NaN/inf every this many steps, and
# before anything is saved. A check reads every weight once (about a third of the memory traffic
# of an SGD step, itself a small part of a training step) and syncs the device once, as the loss
# check does at every step anyway: every 20 steps it is lost in the noise, and a diverged run
# still stops within seconds.
WEIGHT_CHECK_EVERY = 20


class TrainingFailed(Exception):
    """The run cannot go on; the message says why and what to change."""


class NonFiniteLoss(Exception):
    """A step's loss was NaN or infinite; the Trainer, which knows where in the run it happened,
    turns it into a TrainingFailed with nan_message."""

    def __init__(self, value: float, learning_rate: float):
        super().__init__(f"the loss became {value}")
        self.value, self.learning_rate = value, learning_rate


class EpochTally:
    """Running loss/accuracy and training-only time (evaluation excluded) of one epoch."""

    def __init__(self):
        self.loss_sum, self.correct, self.images, self.seconds = 0.0, 0.0, 0, 0.0
        self._clock = None

    def resume_clock(self) -> None:
        self._clock = time.perf_counter()

    def pause_clock(self) -> None:
        if self._clock is not None:
            self.seconds += time.perf_counter() - self._clock
            self._clock = None

    def add(self, loss: float, correct: float, images: int) -> None:
        self.loss_sum += loss * images
        self.correct += correct
        self.images += images

    def images_per_s(self) -> float:
        seconds = self.seconds + (time.perf_counter() - self._clock if self._clock is not None else 0.0)
        return self.images / seconds if seconds > 0 and self.images else 0.0

    def summary(self) -> dict:
        images = max(1, self.images)
        return {"train_loss": self.loss_sum / images, "train_acc": self.correct / images,
                "images_per_s": round(self.images_per_s(), 2), "train_s": round(self.seconds, 2)}

    def state_dict(self) -> dict:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "images": self.images, "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.loss_sum, self.correct = float(state["loss_sum"]), float(state["correct"])
        self.images, self.seconds = int(state["images"]), float(state["seconds"])


@dataclass
class StepParts:
    """Everything one optimizer step works with, built once per run by the Trainer (which keeps
    the same objects for checkpoints and resume)."""

    model: FaceNet
    loss_module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: str
    scaler: torch.amp.GradScaler | None = None  # fp16 only: loss scaling
    ema: ModelEma | None = None
    mixer: BatchMix | None = None  # MixUp/CutMix; None trains on the images as they are
    autocast_dtype: torch.dtype | None = None  # None: fp32
    channels_last: bool = False
    grad_clip: float = 0.0  # max global gradient norm; 0: off
    forward: Callable | None = None  # images -> (embeddings, logits); None: model.embed_and_classify

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=torch.device(self.device).type, dtype=self.autocast_dtype)


@dataclass(frozen=True)
class StepResult:
    """What one step adds to the epoch's tally."""

    loss: float
    correct: float  # top-1 hits (weighted by the predicted class's share with mixed targets)
    images: int


class JointLoss(nn.Module):
    """The course's joint objective: (1 - w) x the run's loss + w x the center term, trained together
    from the first step (the course's example: 0.7 x CE + 0.3 x center). The center term is
    (1/2B) sum_i ||x_i - c_{y_i}||^2 over the batch; the centers c are parameters of this module, so
    the optimizer trains them and checkpoints and resume keep them with the run's loss."""

    def __init__(self, main: nn.Module, weight: float, embedding_dim: int, num_classes: int):
        super().__init__()
        self.main, self.weight = main, float(weight)
        self.centers = nn.Parameter(torch.randn(num_classes, embedding_dim))

    def metric_term(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return 0.5 * (embeddings.float() - self.centers[labels]).pow(2).sum(dim=1).mean()

    def forward(self, embeddings, logits, targets) -> LossOutput:
        output = self.main(embeddings, logits, targets)
        labels = hard_targets(targets, "The joint center term")
        loss = (1 - self.weight) * output.loss + self.weight * self.metric_term(embeddings, labels)
        return LossOutput(loss=loss, logits=output.logits)


def joint_loss(main: nn.Module, metric: str, weight: float, embedding_dim: int, num_classes: int) -> nn.Module:
    """The module a run trains with: ``main`` (built from TrainConfig.loss) alone when ``metric`` is
    "none", else the course's joint objective with ``metric`` weighted by ``weight``
    (TrainConfig.joint_metric and joint_weight)."""
    if metric == "none":
        return main
    if metric == "center":
        return JointLoss(main, weight, embedding_dim, num_classes)
    raise ValueError(f"joint_metric: {metric!r} is not one of none, center")


def make_mixer(mix: str, alpha: float, num_classes: int) -> BatchMix | None:
    return None if mix == "none" else batch_mix(mix, alpha, num_classes)


def _correct(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 hits; with soft (mixed) targets a hit counts by the weight of the predicted class."""
    predicted = logits.argmax(dim=1)
    if targets.dim() == 2:
        return float(targets.gather(1, predicted[:, None]).sum())
    return float((predicted == labels).sum())


def _divergence_hint(precision: str) -> str:
    return ("lower the learning rate, turn on gradient clipping (grad_clip), or train in fp32/bf16"
            if precision == "fp16" else "lower the learning rate or turn on gradient clipping (grad_clip)")


def nan_message(value: float, learning_rate: float, precision: str, epoch: int, step: int) -> str:
    """Why the run stopped at a non-finite loss (``epoch`` and ``step`` counted from 0), and what to change."""
    return (f"the loss became {value} at epoch {epoch + 1}, step {step + 1} "
            f"(learning rate {learning_rate:.3g}); training stopped. To fix it: {_divergence_hint(precision)}")


def non_finite_message(what: str, detail: str, learning_rate: float, precision: str, epoch: int, step: int,
                       sgd_momentum: float = 0.0) -> str:
    """Why the run stopped when ``what`` (e.g. "the weights") turned NaN or infinite by ``step`` steps
    done in ``epoch`` (counted from 0), ``detail`` saying where if not empty, and what to change."""
    hint = _divergence_hint(precision)
    if sgd_momentum >= 0.95:
        # Steady gradients add up over about 1 / (1 - momentum) steps: 0.99 moves 100x the learning rate.
        hint += (f", or lower the momentum ({sgd_momentum:g} lets steady gradients move the weights up to "
                 f"{1 / (1 - sgd_momentum):.0f}x as far per step as the learning rate alone)")
    where = f": {detail}" if detail else ""
    return (f"{what} became NaN or infinite by epoch {epoch + 1}, step {step} (learning rate "
            f"{learning_rate:.3g}){where}. Training stopped; the checkpoints saved before are kept. "
            f"To fix it: {hint}")


def train_step(parts: StepParts, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
    """Forward, loss, backward, (clip,) optimizer and scheduler step, EMA update.

    A loss that is NaN or infinite raises NonFiniteLoss before any weight changes."""
    images = images.to(parts.device, non_blocking=True)
    labels = labels.to(parts.device, non_blocking=True)
    targets = labels
    if parts.mixer is not None:
        images, targets = parts.mixer(images, labels)
    if parts.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with parts.autocast():
        embeddings, logits = (parts.forward or parts.model.embed_and_classify)(images)
        output = parts.loss_module(embeddings.float(), logits.float(), targets)
    loss = float(output.loss.detach())
    if not math.isfinite(loss):
        raise NonFiniteLoss(loss, parts.optimizer.param_groups[0]["lr"])
    _backward_and_step(parts, output.loss)
    if parts.ema is not None:
        parts.ema.update(parts.model)
    return StepResult(loss, _correct(output.logits, labels, targets), len(labels))


def _backward_and_step(parts: StepParts, loss: torch.Tensor) -> None:
    optimizer, scaler = parts.optimizer, parts.scaler
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if parts.grad_clip:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, parts.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    parts.scheduler.step()


def margin_stuck_warning(loss: str, record: dict, num_classes: int) -> str:
    """A warning when a margin loss has not left chance level after a few epochs ('' otherwise)."""
    if loss not in MARGIN_LOSSES or record["epoch"] < STUCK_AFTER_EPOCHS:
        return ""
    chance = 1.0 / num_classes
    if record["train_acc"] >= STUCK_FACTOR * chance:
        return ""
    return (f"{loss}: training accuracy {record['train_acc']:.3f} is still near chance ({chance:.3f}) after "
            f"{record['epoch']} epochs, so the margin is too hard to learn from scratch. Known remedies: start "
            f"from a CE checkpoint (init_from), lower the margin or the scale s at first and raise it later, "
            f"or for SphereFace keep lambda large for longer (smaller lambda_gamma).")


def collapse_warning(record: dict) -> str:
    """A warning when the epoch's embeddings collapsed: every verification pair scores nearly the same
    cosine (``cosine_spread`` below lib.eval.metrics.COLLAPSE_SPREAD); '' otherwise."""
    spread = record.get("cosine_spread")
    if not isinstance(spread, float) or not is_collapsed(spread):
        return ""
    return (f"epoch {record['epoch']}: the embeddings collapsed: the cosine similarities of the verification "
            f"pairs spread by only {spread:.2g} (standard deviation; trained models about 0.3, even an untrained "
            f"network 0.02), so every face looks alike to the model and verification is guesswork. Usual "
            f"causes: a learning rate so high the network died (every activation zero), a triplet margin or a "
            f"center_weight that pulls all faces to one point. Known remedies: a lower learning rate with "
            f"warm-up, a smaller triplet margin or center_weight, or starting from a CE checkpoint (init_from).")
