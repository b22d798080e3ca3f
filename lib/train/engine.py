"""The training engine: ``train(config, out_dir)`` runs one job on CPU or GPU.

Every epoch it trains on augmented batches (a line in steps.jsonl every few steps: step_log.py),
then evaluates dev identification (top-1/top-5) and open-set verification (ROC AUC, EER) on the
pairs, embeds the probe faces (probes.py), appends a line to metrics.jsonl and writes the checkpoints
``last`` and ``best`` (by AUC) plus the resume state. Progress goes out through progress.json and
the optional ``on_event`` callback; nothing here prints or knows about a UI.

A job stops early in three ways: ``should_stop()`` turns true (a graceful
cancel: the current step finishes, ``last`` and the resume state are saved),
the loss, the weights or the embeddings turn NaN/inf (status "failed" with the
reason; the weights are checked every WEIGHT_CHECK_EVERY steps and before each
save, so no checkpoint or resume state ever holds them), or an exception. An
epoch whose embeddings collapsed (all pair cosines alike) is flagged with a warning.
The run folder layout is described in lib/store/run_folder.py. Started by torchrun, one job
trains in several processes (lib/train/distributed.py); ``max_steps`` ends a smoke test early.
"""
from __future__ import annotations

import gc
import time
import traceback
from dataclasses import replace
from typing import Callable

import torch
from torch import nn

from lib.base.device import resolve_device
from lib.data.datasets import release_pages
from lib.store.checkpoint import non_finite_tensor, save_checkpoint
from lib.store.meta import CheckpointMeta, Normalization, recordable_metrics
from lib.train import distributed, hardware
from lib.train.batches import load_train_data, make_loader
from lib.train.config import TrainConfig
from lib.train.ema import ModelEma
from lib.train.evaluation import NonFiniteEmbeddings, evaluate_model
from lib.train.failure import disk_problem, fail
from lib.train.modules import build_modules
from lib.train.optimizer import make_optimizer, seed_everything
from lib.train.probes import save_probe_embeddings
from lib.train.rng import rng_state, set_rng_state
from lib.train.schedule import make_scheduler
from lib.train.step import (
    WEIGHT_CHECK_EVERY,
    EpochTally,
    NonFiniteLoss,
    StepParts,
    TrainingFailed,
    collapse_warning,
    make_mixer,
    margin_stuck_warning,
    nan_message,
    non_finite_message,
    train_step,
)
from lib.train.step_log import StepLog


class Trainer:
    """Holds one run's model, optimizer and counters; ``run()`` trains to the end or to a stop."""

    def __init__(self, config: TrainConfig, out_dir, on_event=None, should_stop=None, max_steps: int | None = None):
        self.config = config.validate()
        self.main = distributed.is_main()  # rank 0 (or the only process) writes, evaluates and reports
        self.run_folder = distributed.run_folder(out_dir)
        self.on_event = on_event if on_event and self.main else (lambda event: None)
        self.warnings: list[str] = []
        self.should_stop, self.max_steps = should_stop or (lambda: False), max_steps
        self.device = distributed.setup(resolve_device(config.device))
        if config.threads:
            torch.set_num_threads(config.threads)
        seed_everything(config.seed)
        self.data = load_train_data(config.data_folder(), config.pairs_file, config.subset)
        self.spec = replace(config.spec(), num_classes=self.data.num_classes)
        channels_last, problem = hardware.channels_last_choice(config.channels_last, self.spec, self.device)
        self.config = replace(self.config, channels_last=channels_last)
        self.warn_if(problem)
        self.model, self.loss_module, problem = build_modules(self.config, self.spec, self.device, self.data.classes)
        self.warn_if(problem)
        self.optimizer = make_optimizer(config, [self.model, self.loss_module])
        self.batches = distributed.rank_batches(config, self.data)  # P x K batches when the loss needs them
        batched = self.batches.batched is not None
        on_device, problem = hardware.augment_on_device(config.augment_on, self.device, batched)
        self.batches.augment_in_loader = not on_device
        self.warn_if(problem)
        self.steps_per_epoch = self.batches.batches_per_epoch()
        self.total_steps = config.epochs * self.steps_per_epoch
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        self.scheduler = make_scheduler(self.optimizer, self.total_steps, warmup, config.min_lr_ratio,
                                        cosine=config.schedule == "cosine")
        self.precision, self.autocast_dtype, self.scaler, problem = hardware.precision_parts(config.precision,
                                                                                             self.device)
        self.warn_if(problem)
        self.ema = ModelEma(self.model, config.ema_decay) if config.ema else None
        self.step_parts = self._step_parts()
        self.epoch, self.batch, self.step = 0, 0, 0  # epoch in progress, its next batch, steps done
        self.best_auc, self.elapsed_before = -1.0, 0.0
        self.tally, self.records = EpochTally(), []  # this epoch's tally, the finished epochs' records
        self.step_log = StepLog(self.run_folder, self.optimizer, self.total_steps, distributed.world_size(), self.main)

    # -- construction -------------------------------------------------------------------------
    def _step_parts(self) -> StepParts:
        config, model, loss_module = self.config, self.model, self.loss_module
        if distributed.active():  # the same modules, their gradients averaged over the processes
            model = distributed.DistributedNet(model, self.device, config.loss)
            loss_module = distributed.AgreedLoss(loss_module, self.device)
        return StepParts(model=model, loss_module=loss_module, optimizer=self.optimizer,
                         scheduler=self.scheduler, device=self.device, scaler=self.scaler, ema=self.ema,
                         mixer=make_mixer(config.mix, config.mix_alpha, self.data.num_classes),
                         autocast_dtype=self.autocast_dtype, channels_last=config.channels_last,
                         grad_clip=config.grad_clip,
                         forward=hardware.compiled_forward(model, config.compile_model, self.device))

    # -- events and files ---------------------------------------------------------------------
    def emit(self, kind: str, **fields) -> None:
        self.on_event({"kind": kind, **fields})

    def warn_if(self, message: str) -> None:
        if message:
            self.warn(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.emit("warning", message=message)

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def progress(self, status: str = "running", message: str = "", force: bool = False) -> None:
        speed = self.tally.images_per_s() * distributed.world_size()  # every rank trains as fast as rank 0
        speed = speed or (self.records[-1]["images_per_s"] if self.records else 0.0)
        eta = 0.0
        if status == "running" and self.step > self.session_start_step:
            # Wall time per step so far in this session, evaluation included.
            per_step = (time.perf_counter() - self.started) / (self.step - self.session_start_step)
            eta = (self.total_steps - self.step) * per_step
        fields = dict(status=status, epoch=self.epoch, epochs=self.config.epochs, step=self.step,
                      total_steps=self.total_steps, images_per_s=round(speed, 2), eta_s=round(eta, 1),
                      message=message or (self.warnings[-1] if self.warnings else ""),
                      elapsed_s=round(self.elapsed(), 1))
        if self.run_folder.write_progress(force=force, **fields):
            self.emit("progress", **fields)

    def meta(self, metrics: dict) -> CheckpointMeta:
        """What a checkpoint saved now records; a metric without a value (NaN) is recorded as None."""
        return CheckpointMeta(spec=self.spec, config=self.config.to_dict(), classes=tuple(self.data.classes),
                              metrics=recordable_metrics(metrics),
                              normalize=Normalization(tuple(self.data.mean), tuple(self.data.std)),
                              epoch=self.epoch, step=self.step, loss=self.config.loss, name=self.config.name,
                              wall_s=round(self.elapsed(), 1))

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    # -- resume -------------------------------------------------------------------------------
    def resume_state(self) -> dict:
        tally = distributed.global_tally(self.tally)  # every rank takes part; rank 0 writes
        return {"model": self.model.state_dict(), "loss": self.loss_module.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else {},
                "ema": self.ema.state_dict() if self.ema else {}, "rng": rng_state(),
                "epoch": self.epoch, "batch": self.batch, "step": self.step, "best_auc": self.best_auc,
                "elapsed_s": self.elapsed(), "tally": tally.state_dict(), "records": list(self.records),
                "warnings": list(self.warnings), "config": self.config.to_dict()}

    def save_resume(self) -> None:
        self.check_weights()  # a resume state holding NaN would only resume into the same failure
        self.run_folder.save_resume(self.resume_state())
        self.last_resume_save = time.perf_counter()

    def restore(self, state: dict) -> None:
        if TrainConfig.from_dict(state["config"]).to_dict() != self.config.to_dict():  # newer fields: defaults
            raise ValueError("resume: the run's config.json differs from the one the resume state was saved "
                             "with; start a new run to train with other settings")
        self.model.load_state_dict(state["model"])
        self.loss_module.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        self.best_auc, self.elapsed_before = state["best_auc"], state["elapsed_s"]
        if self.main:  # the saved tally is every rank's: the others start from zero, so the sum stays right
            self.tally.load_state_dict(state["tally"])
        self.records, self.warnings = list(state["records"]), list(state["warnings"])
        self.run_folder.align_metrics(self.records)
        set_rng_state(state["rng"])

    # -- the loop -----------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict:
        self.run_folder.create()
        if resume:
            self.restore(self.run_folder.load_resume())
        else:
            self.run_folder.write_config(self.config.to_dict())
            self.run_folder.align_metrics([])
        self.run_folder.align_probes(self.epoch)  # a resume re-does what came after its state
        self.step_log.begin(self.step)
        self.started = self.last_resume_save = time.perf_counter()
        self.session_start_step = self.step
        self.emit("start", epoch=self.epoch, step=self.step, total_steps=self.total_steps,
                  device=self.device, resumed=resume, precision=self.precision, threads=torch.get_num_threads())
        self.progress(force=True, message="resumed" if resume else "started")
        while self.epoch < self.config.epochs:
            if self.step_limit_reached() or not self.train_epoch():
                break
            self.end_epoch()
        if self.epoch >= self.config.epochs:
            return self.finish("done", "finished")
        if self.step_limit_reached():
            return self.finish("stopped", f"stopped at the step limit ({self.max_steps} steps, --max-steps) before "
                                          f"the end of its schedule: last checkpoint and resume state saved")
        return self.finish("cancelled", "cancelled: last checkpoint and resume state saved")

    def step_limit_reached(self) -> bool:
        return self.max_steps is not None and self.step - self.session_start_step >= self.max_steps

    def train_epoch(self) -> bool:
        """Train the rest of the current epoch; False when it stopped early (a stop asked for, or
        the step limit), with the last checkpoint and the resume state saved."""
        self.model.train()
        self.loss_module.train()
        self.batches.set_epoch(self.epoch, self.batch)
        loader = make_loader(self.batches, self.config.workers, pin_memory=self.device.startswith("cuda"))
        self.tally.resume_clock()
        self.step_log.start_clock()
        for item in loader:
            self.train_one_step(*self.device_batch(item))
            self.batch += 1
            self.step += 1
            if self.step % WEIGHT_CHECK_EVERY == 0:
                self.check_weights()
            self.progress()
            # Every rank decides alike (a flag true on one is true on all), so they stop at the same step.
            limit = self.step_limit_reached() and self.batch < self.steps_per_epoch  # else the epoch ends first
            stop, save_due = distributed.agree(self.should_stop() or limit,
                                               time.perf_counter() - self.last_resume_save > self.config.resume_every_s)
            if save_due and not stop:
                self.save_resume()
            if stop:
                self.tally.pause_clock()
                self.cancel_save()
                return False
        self.tally.pause_clock()
        return True

    def device_batch(self, item) -> tuple[torch.Tensor, torch.Tensor]:
        """(augmented images, labels) of a loader item: as it comes, or a RawBatch (uint8) augmented
        here on the training device with the batch's own seed."""
        if self.batches.augment_in_loader:
            return item
        images = item.images.to(self.device, non_blocking=True)
        return self.batches.augment_batch(images, item.seed), item.labels

    def train_one_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        try:
            result = train_step(self.step_parts, images, labels)
        except NonFiniteLoss as bad:
            raise TrainingFailed(nan_message(bad.value, bad.learning_rate, self.precision,
                                             self.epoch, self.step)) from None
        self.tally.add(result.loss, result.correct, result.images)
        self.step_log.add(result.loss, result.correct, result.images, self.step + 1, self.epoch)

    def weight_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor a checkpoint or the resume state saves of the weights: parameters and buffers
        of the model, the loss module ("loss." names) and the EMA copy ("ema." names)."""
        tensors = dict(self.model.state_dict())
        tensors.update({f"loss.{name}": value for name, value in self.loss_module.state_dict().items()})
        if self.ema is not None:
            tensors.update({f"ema.{name}": value for name, value in self.ema.module.state_dict().items()})
        return tensors

    def check_weights(self) -> None:
        """TrainingFailed when a weight turned NaN or infinite (run every WEIGHT_CHECK_EVERY steps and
        before anything is saved, so the checkpoints and resume state saved before stay the last ones)."""
        bad = non_finite_tensor(self.weight_tensors())
        if bad is not None:
            raise self.diverged("the weights", bad)

    def diverged(self, what: str, detail: str = "") -> TrainingFailed:
        """The failure of a run in which ``what`` turned NaN or infinite, with where and what to change."""
        momentum = self.config.momentum if self.config.optimizer == "sgd" else 0.0  # AdamW's beta1 adds no speed
        learning_rate = self.optimizer.param_groups[0]["lr"]
        return TrainingFailed(non_finite_message(what, detail, learning_rate, self.precision, self.epoch,
                                                 self.step, sgd_momentum=momentum))

    def save(self, folder, record: dict) -> None:
        if self.main:
            save_checkpoint(folder, self.eval_model(), self.meta(record), self.loss_module)

    def cancel_save(self) -> None:
        self.step_log.flush(self.step, self.epoch)  # the steps not yet recorded: one record
        self.check_weights()
        self.save(self.run_folder.last, self.records[-1] if self.records else {})
        self.save_resume()

    def end_epoch(self) -> None:
        self.check_weights()  # before evaluating, which NaN weights would fail with a vaguer reason
        self.step_log.flush(self.step, self.epoch)  # the epoch's last steps: no record spans two epochs
        tally, self.tally = distributed.global_tally(self.tally), EpochTally()
        record = self.evaluate_epoch(tally) if self.main else {}  # the other ranks wait at the barrier
        self.epoch, self.batch = self.epoch + 1, 0
        if self.main:
            self.record_warnings(record)
            self.records.append(record)
            self.save_epoch(record)
        self.save_resume()
        distributed.barrier()
        if self.main:
            self.emit("epoch", **record)

    def save_epoch(self, record: dict) -> None:
        self.save(self.run_folder.last, record)
        if record["auc"] > self.best_auc:
            self.best_auc = record["auc"]
            self.save(self.run_folder.best, record)
        save_probe_embeddings(self.run_folder, self.eval_model(), self.data, self.device, record["epoch"])
        # The line first: a job killed between the two still shows this epoch on the Runs page,
        # and a resume realigns metrics.jsonl with the records in its saved state anyway.
        self.run_folder.append_metrics(record)

    def evaluate_epoch(self, tally: EpochTally) -> dict:
        """The epoch's record: training tally (of every rank), learning rate, evaluation metrics."""
        self.progress(force=True, message=f"evaluating epoch {self.epoch + 1}")
        try:
            metrics = evaluate_model(self.eval_model(), self.loss_module, self.data, self.device,
                                     flip=self.config.eval_flip, channels_last=self.config.channels_last)
        except NonFiniteEmbeddings as bad:  # finite weights can still overflow in the forward pass
            raise self.diverged(f"the embeddings of {bad.bad} of {bad.total} verification images") from None
        finally:  # the evaluation read every dev and verification image: a mapped set's pages go back
            release_pages(self.data.dev.images)
            release_pages(self.data.pairs.images)
        return {"epoch": self.epoch + 1, "step": self.step, **tally.summary(),
                "lr": self.optimizer.param_groups[0]["lr"], **metrics, "elapsed_s": round(self.elapsed(), 2),
                "precision": self.precision}  # what ran: "auto" is bf16 on one machine and fp32 on another

    def record_warnings(self, record: dict) -> None:
        """New warnings about this epoch go into its record (the Runs page lists them) and out as events."""
        found = [warning for warning in (margin_stuck_warning(self.config.loss, record, self.data.num_classes),
                                         collapse_warning(record))
                 if warning and warning not in self.warnings]
        if found:
            record["warning"] = "\n\n".join(found)  # one key, as older runs recorded; a paragraph each
        for warning in found:
            self.warn(warning)

    def finish(self, status: str, message: str) -> dict:
        self.progress(status=status, message=message, force=True)
        summary = {"status": status, "epoch": self.epoch, "step": self.step, "total_steps": self.total_steps,
                   "best_auc": self.best_auc, "elapsed_s": self.elapsed(), "metrics": self.records[-1:]}
        self.emit(status, **summary)
        return summary


def train(config: TrainConfig, out_dir, on_event: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None, resume: bool = False, max_steps: int | None = None) -> dict:
    """Run one training job into ``out_dir``; returns a summary with "status" done/cancelled/failed, or
    "stopped" when ``max_steps`` optimizer steps (of this call) ended it before its schedule did.

    Bad configuration raises ValueError before anything is written; a failure while training
    (NaN loss, weights or embeddings, a crash) is recorded in progress.json and returned as "failed".
    Under torchrun every process calls this; they share the process group until it returns."""
    try:
        return _train(config, out_dir, on_event, should_stop, resume, max_steps)
    finally:
        distributed.teardown()


def _train(config, out_dir, on_event, should_stop, resume, max_steps) -> dict:
    trainer = Trainer(config, out_dir, on_event, should_stop, max_steps)
    try:
        return trainer.run(resume=resume)
    except TrainingFailed as failure:
        return fail(out_dir, str(failure), on_event)
    except ValueError:
        raise
    except Exception as err:  # recorded for the Runs page, then re-raised for the log
        message = disk_problem(err, out_dir)
        if message is None:
            fail(out_dir, f"{type(err).__name__}: {err}", on_event)
            raise
        traceback.print_exc()
    # Outside the handler: the failed write's frames, and the half-written file they hold
    # open, are gone, so the space is free again for progress.json.
    gc.collect()
    return fail(out_dir, message, on_event)
