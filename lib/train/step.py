"""One optimizer step, the per-epoch tally, and the checks that stop or flag a run."""
from __future__ import annotations

import math
import time

import torch

from lib.data.augment import batch_mix

MARGIN_LOSSES = ("arcface", "cosface", "sphereface")
STUCK_AFTER_EPOCHS = 2
STUCK_FACTOR = 3.0  # "near chance": train accuracy below 3x the accuracy of guessing


class TrainingFailed(Exception):
    """The run cannot go on; the message says why and what to change."""


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


def _mixer(trainer):
    if trainer.config.mix == "none":
        return None
    if not hasattr(trainer, "_batch_mix"):
        trainer._batch_mix = batch_mix(trainer.config.mix, trainer.config.mix_alpha, trainer.data.num_classes)
    return trainer._batch_mix


def _correct(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 hits; with soft (mixed) targets a hit counts by the weight of the predicted class."""
    predicted = logits.argmax(dim=1)
    if targets.dim() == 2:
        return float(targets.gather(1, predicted[:, None]).sum())
    return float((predicted == labels).sum())


def nan_message(trainer, loss: torch.Tensor) -> str:
    lr = trainer.optimizer.param_groups[0]["lr"]
    hint = ("lower the learning rate, turn on gradient clipping (grad_clip), or train in fp32/bf16"
            if trainer.config.precision == "fp16" else "lower the learning rate or turn on gradient clipping (grad_clip)")
    return (f"the loss became {float(loss.detach())} at epoch {trainer.epoch + 1}, step {trainer.step + 1} "
            f"(learning rate {lr:.3g}); training stopped. To fix it: {hint}")


def train_step(trainer, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Forward, loss, backward, (clip,) optimizer and scheduler step, EMA update, tally."""
    device, config = trainer.device, trainer.config
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    targets = labels
    mixer = _mixer(trainer)
    if mixer is not None:
        images, targets = mixer(images, labels)
    if config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with trainer.autocast():
        embeddings = trainer.model.embed(images)
        logits = trainer.model.classifier(trainer.model.dropout(embeddings))
        output = trainer.loss_module(embeddings.float(), logits.float(), targets)
    if not math.isfinite(float(output.loss.detach())):
        raise TrainingFailed(nan_message(trainer, output.loss))
    _backward_and_step(trainer, output.loss)
    if trainer.ema is not None:
        trainer.ema.update(trainer.model)
    trainer.tally.add(float(output.loss.detach()), _correct(output.logits, labels, targets), len(labels))


def _backward_and_step(trainer, loss: torch.Tensor) -> None:
    optimizer, scaler = trainer.optimizer, trainer.scaler
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if trainer.config.grad_clip:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, trainer.config.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    trainer.scheduler.step()


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
