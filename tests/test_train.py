"""The training engine: config validation, schedule, EMA, batches, real tiny runs and exact resume."""
from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lib.base.config import RECIPES_DIR
from lib.base.device import resolve_device
from lib.eval.metrics import COLLAPSE_SPREAD
from lib.model.net import FaceNet
from lib.model.spec import ModelSpec
from lib.store.checkpoint import load_checkpoint
from lib.store.run_folder import RunFolder
from lib.train import evaluation, modules
from lib.train.batches import EpochBatches, load_train_data, make_loader, training_batches
from lib.train.config import TrainConfig, config_from_run, load_run_file
from lib.train.ema import ModelEma
from lib.train.engine import Trainer, train
from lib.train.schedule import WarmupCosine
from lib.train.step import WEIGHT_CHECK_EVERY, TrainingFailed, margin_stuck_warning
from lib.ui.runs import run_warnings
from tests.train_cases import TINY_MODEL, identity_counts, record_loss_labels, tiny_config, tiny_run

# ----------------------------------------------------------------------------- config

def test_config_round_trips_through_json():
    config = tiny_config(optimizer="adamw", ema=True, mix="cutmix", mix_alpha=1.0)
    again = TrainConfig.from_dict(json.loads(config.to_json())).validate()
    assert again == config
    assert config.model["name"] == "tiny_face"


@pytest.mark.parametrize("change, field", [
    ({"lr": -1}, "lr"),
    ({"loss": "softmax"}, "loss"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"epochs": 0}, "epochs"),
    ({"loss": "arcface", "mix": "mixup"}, "mix"),
    ({"loss": "arcface", "loss_params": {"margin_rad": 3.0}}, "loss_params"),
    ({"augment": [{"name": "Blur", "params": {}}]}, "augment"),
    ({"subset": {"people": 3}}, "subset"),
    ({"ema": "yes"}, "ema"),
    ({"init_from": "checkpoints/none-such"}, "init_from"),
    ({"loss": "triplet", "images_per_identity": 1}, "images_per_identity"),
    ({"loss": "center", "batch_size": 10}, "batch_size"),  # not P x 4
    ({"loss": "triplet", "identities_per_batch": 3}, "identities_per_batch"),  # 3 x 4 is not the batch of 8
    ({"loss": "triplet", "batch_size": 4}, "identities_per_batch"),  # P = 1: no other identity to compare with
    ({"device": "tpu"}, "device"),
])
def test_bad_config_names_the_field(change, field):
    with pytest.raises(ValueError, match=rf"^{field}"):
        tiny_config(**change)


def test_run_file_unknowns_are_rejected():
    with pytest.raises(ValueError, match="unknown field 'learning_rate'"):
        config_from_run(tiny_run(learning_rate=0.1))
    with pytest.raises(ValueError, match="unknown preset 'resnet9'"):
        config_from_run({"model": "resnet9", "config": {}})
    assert config_from_run({"model": "face_resnet", "config": {}}).model["name"] == "face_resnet"


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_every_recipe_is_a_valid_run(path):
    config = load_run_file(path)
    assert config.name == path.stem
    assert json.loads(path.read_text())["description"]  # the Train page shows what a recipe is for


def test_p_and_k_follow_the_batch_size_and_matter_only_to_p_x_k_losses():
    assert TrainConfig().pk_batch() == (16, 4)  # the default batch of 64: 16 identities x 4 images
    assert tiny_config(loss="triplet", batch_size=12, images_per_identity=3).pk_batch() == (4, 3)
    assert tiny_config(loss="center", batch_size=12, identities_per_batch=6, images_per_identity=2).pk_batch() == (6, 2)
    assert tiny_config(batch_size=10, images_per_identity=1).batch_size == 10  # CE batches are not P x K


def test_a_p_x_k_batch_needs_as_many_identities_as_p(tmp_path):
    # 10 identities in the tiny data: P = 48 / 4 = 12 is too many.
    with pytest.raises(ValueError, match=r"^identities_per_batch: .* only 10; use a batch_size of at most 40"):
        Trainer(tiny_config(loss="triplet", batch_size=48), tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_one_function_resolves_the_device_a_run_asks_for(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="^device: 'cuda' was asked for but no GPU is available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match="^device: 'cuda:2' was asked for but this machine has 2 GPU"):
        resolve_device("cuda:2")
    with pytest.raises(ValueError, match="^device: 'gpu' is not one of auto, cpu, cuda, cuda:N"):
        resolve_device("gpu")


def test_the_training_pass_gives_the_embedding_and_the_plain_classifiers_logits():
    model = FaceNet(replace(ModelSpec.from_dict(TINY_MODEL), num_classes=5)).eval()
    images = torch.randn(2, 3, 64, 64)
    embeddings, logits = model.embed_and_classify(images)
    assert torch.equal(embeddings, model.embed(images)) and torch.equal(logits, model(images))


def test_label_smoothing_reaches_the_loss_unless_loss_params_set_it():
    assert tiny_config(label_smoothing=0.2).effective_loss_params() == {"label_smoothing": 0.2}
    config = tiny_config(label_smoothing=0.2, loss="cosface", loss_params={"label_smoothing": 0.0})
    assert config.effective_loss_params()["label_smoothing"] == 0.0


# ----------------------------------------------------------------------------- schedule and EMA

def test_warmup_then_cosine_matches_hand_values():
    f = WarmupCosine(total_steps=11, warmup_steps=2, min_ratio=0.1)
    assert f(0) == pytest.approx(0.01)
    assert f(1) == pytest.approx(0.01 + 0.99 * 0.5)
    assert f(2) == pytest.approx(1.0)  # cosine starts at the top
    # 8 steps of cosine after warm-up: step 6 is half way -> 0.1 + 0.9 * 0.5
    assert f(6) == pytest.approx(0.55)
    assert f(10) == pytest.approx(0.1)
    assert WarmupCosine(10, 0, cosine=False)(7) == 1.0


def test_ema_follows_the_formula():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEma(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # decay min(0.5, 1/10 = 0.1) = 0.1 -> 0.1 * 0 + 0.9 * 1
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.9))
    ema.update(model)  # decay min(0.5, 2/11) -> 0.9 + (1 - 2/11) * 0.1
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.9 + (1 - 2 / 11) * 0.1))


# ----------------------------------------------------------------------------- batches

def test_batches_are_reproducible_and_the_same_in_worker_processes():
    data = load_train_data(tiny_config().data_folder(), subset={"classes": 10})
    config = tiny_config()
    batches = EpochBatches(data.train, config.augment, data.mean, data.std, batch_size=8, seed=5)
    batches.set_epoch(1)
    in_process = list(make_loader(batches, workers=0))
    in_worker = list(make_loader(batches, workers=1))
    assert len(in_process) == len(data.train) // 8
    for (a, la), (b, lb) in zip(in_process, in_worker):
        assert torch.equal(a, b) and torch.equal(la, lb)
    batches.set_epoch(1, start=3)  # a resumed epoch starts at its fourth batch
    assert torch.equal(next(iter(make_loader(batches, 0)))[0], in_process[3][0])
    # The first batch holds the augmented, normalized versions of the images it names.
    assert in_process[0][0].dtype == torch.float32 and abs(float(in_process[0][0].mean())) < 1.5


def test_p_x_k_batches_are_the_same_per_seed_and_epoch_in_workers_and_after_a_resume():
    config = tiny_config(loss="triplet", batch_size=12, images_per_identity=3)
    data = load_train_data(config.data_folder(), subset={"classes": 10})
    batches = training_batches(config, data)
    assert batches.batches_per_epoch() == len(data.train) // 12
    batches.set_epoch(1)
    in_process = list(make_loader(batches, workers=0))
    in_worker = list(make_loader(batches, workers=1))
    for (a, la), (b, lb) in zip(in_process, in_worker, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
        assert identity_counts(la.tolist()) == {identity: 3 for identity in set(la.tolist())} and len(set(la.tolist())) == 4
    batches.set_epoch(1, start=2)  # a resumed epoch continues with its third batch
    assert torch.equal(next(iter(make_loader(batches, 0)))[1], in_process[2][1])
    again = training_batches(config, data)  # another run with the same seed
    again.set_epoch(1)
    labels = [y.tolist() for _, y in in_process]
    assert [y.tolist() for _, y in make_loader(again, 0)] == labels
    again.set_epoch(0)
    assert [y.tolist() for _, y in make_loader(again, 0)] != labels  # another epoch, other batches


# ----------------------------------------------------------------------------- real runs

@pytest.mark.parametrize("loss", ["triplet", "center"])
def test_metric_losses_get_batches_of_p_identities_times_k_images(tmp_path, loss):
    # batch_size 8 with the default K = 4 images per identity: P = 2 identities in every batch.
    trainer = Trainer(tiny_config(loss=loss, epochs=2), tmp_path)
    seen = record_loss_labels(trainer)
    assert trainer.run()["status"] == "done"
    assert len(seen) == trainer.total_steps == 2 * (len(trainer.data.train) // 8)
    for labels in seen:
        assert identity_counts(labels) == {identity: 4 for identity in set(labels)} and len(set(labels)) == 2
    assert seen[:trainer.steps_per_epoch] != seen[trainer.steps_per_epoch:]  # each epoch draws anew


def test_p_and_k_can_be_set_and_ce_batches_are_not_p_x_k(tmp_path):
    trainer = Trainer(tiny_config(loss="triplet", epochs=1, batch_size=12, identities_per_batch=6,
                                  images_per_identity=2), tmp_path / "triplet")
    seen = record_loss_labels(trainer)
    trainer.run()
    assert seen and all(identity_counts(labels) == dict.fromkeys(set(labels), 2) and len(set(labels)) == 6
                        for labels in seen)
    ce = Trainer(tiny_config(epochs=1), tmp_path / "ce")
    seen = record_loss_labels(ce)
    ce.run()
    assert len(seen) == ce.steps_per_epoch and all(len(labels) == 8 for labels in seen)
    assert any(set(identity_counts(labels).values()) != {4} for labels in seen)  # shuffled images, as before


def test_a_p_x_k_run_resumed_mid_epoch_sees_the_batches_of_an_uninterrupted_run(tmp_path):
    config = tiny_config(loss="center", epochs=2)
    straight = Trainer(config, tmp_path / "straight")
    uninterrupted = record_loss_labels(straight)
    straight.run()
    steps = []
    first = Trainer(config, tmp_path / "split", should_stop=lambda: steps.append(1) or len(steps) == 5)
    before = record_loss_labels(first)
    assert first.run()["status"] == "cancelled"
    second = Trainer(config, tmp_path / "split")
    after = record_loss_labels(second)
    assert second.run(resume=True)["status"] == "done"
    assert before + after == uninterrupted



def test_two_epochs_learn_and_write_the_run_folder(tmp_path):
    events = []
    summary = train(tiny_config(), tmp_path, on_event=events.append)
    assert summary["status"] == "done"
    records = RunFolder(tmp_path).read_metrics()
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["train_loss"] < records[0]["train_loss"]  # it learns
    for key in ("step", "train_acc", "lr", "dev_top1", "dev_top5", "auc", "eer", "images_per_s", "elapsed_s"):
        assert key in records[0]
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["status"] == "done" and progress["step"] == progress["total_steps"] == records[1]["step"]
    best = load_checkpoint(tmp_path / "best")
    assert best.meta.metrics["auc"] == max(r["auc"] for r in records)
    assert best.spec.num_classes == 10 and len(best.meta.classes) == 10
    assert json.loads((tmp_path / "config.json").read_text())["model"] == config_from_run(tiny_run()).model
    assert [e["kind"] for e in events if e["kind"] in ("start", "epoch", "done")] == ["start", "epoch", "epoch", "done"]


def test_cancel_then_resume_gives_the_same_weights_as_one_run(tmp_path):
    config = tiny_config(ema=True)
    train(config, tmp_path / "straight")
    steps = []

    def stop_after_five():
        steps.append(1)
        return len(steps) == 5  # mid-epoch 1 (11 steps per epoch)

    first = train(config, tmp_path / "split", should_stop=stop_after_five)
    assert first["status"] == "cancelled" and first["step"] == 5
    assert json.loads((tmp_path / "split" / "progress.json").read_text())["status"] == "cancelled"
    second = train(config, tmp_path / "split", resume=True)
    assert second["status"] == "done" and second["step"] == second["total_steps"]
    straight = load_file(str(tmp_path / "straight" / "last" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "split" / "last" / "model.safetensors"))
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert len(RunFolder(tmp_path / "split").read_metrics()) == 2


def test_options_run_mixing_ema_clipping_adamw_and_a_worker(tmp_path):
    config = tiny_config(epochs=1, optimizer="adamw", lr=2e-3, weight_decay=0.05, mix="cutmix", mix_alpha=1.0,
                         ema=True, ema_decay=0.9, grad_clip=1.0, workers=1, drop_path_rate=0.1, eval_flip=True,
                         precision="bf16")
    assert train(config, tmp_path)["status"] == "done"
    record = RunFolder(tmp_path).read_metrics()[0]
    assert 0.0 <= record["train_acc"] <= 1.0 and math.isfinite(record["train_loss"])
    resume = RunFolder(tmp_path).load_resume()  # on the CPU, also after a run on a GPU
    saved = load_file(str(RunFolder(tmp_path).last / "model.safetensors"))
    # With EMA on, the checkpoint holds the averaged weights, not the raw ones.
    assert torch.equal(saved["classifier.weight"], resume["ema"]["module"]["classifier.weight"])
    assert not torch.equal(saved["classifier.weight"], resume["model"]["classifier.weight"])
    assert load_checkpoint(tmp_path / "last").meta.config["drop_path_rate"] == 0.1


def test_fp16_without_a_gpu_falls_back_to_fp32_with_a_warning(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, where fp16 is used")
    events = []
    trainer = Trainer(tiny_config(precision="fp16"), tmp_path, on_event=events.append)
    assert trainer.autocast_dtype is None and trainer.scaler is None
    fp16 = [e for e in events if e["kind"] == "warning" and "fp16 needs a GPU" in e["message"]]
    assert len(fp16) == 1 and any("fp16 needs a GPU" in w for w in trainer.warnings)


class _DamagedNet(FaceNet):
    """A FaceNet born with a NaN in its classifier: its very first loss is NaN."""

    def __init__(self, spec):
        super().__init__(spec)
        with torch.no_grad():
            self.classifier.bias[0] = float("nan")


def test_nan_loss_stops_with_a_clear_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(modules, "FaceNet", _DamagedNet)  # where the engine builds its model
    summary = train(tiny_config(), tmp_path / "bad")
    assert summary["status"] == "failed"
    progress = json.loads((tmp_path / "bad" / "progress.json").read_text())
    assert progress["status"] == "failed"
    assert "loss became nan at epoch 1, step 1" in progress["message"] and "learning rate" in progress["message"]


def test_a_damaged_checkpoint_to_start_from_is_refused_naming_its_tensor(tmp_path):
    train(tiny_config(epochs=1), tmp_path / "ce")
    weights = load_file(str(tmp_path / "ce" / "best" / "model.safetensors"))
    weights["classifier.bias"][0] = float("nan")
    save_file(weights, str(tmp_path / "ce" / "best" / "model.safetensors"))
    with pytest.raises(ValueError, match=r"^init_from: .*model.safetensors .*not finite.*'classifier.bias' holds 1 "):
        train(tiny_config(init_from=str(tmp_path / "ce" / "best")), tmp_path / "bad")
    assert not (tmp_path / "bad" / "config.json").exists()


def _non_finite_files(run: Path) -> list[str]:
    """The weight files of a run folder holding a NaN or inf, read without the loader's check."""
    bad = []
    for file in sorted(run.rglob("*.safetensors")):
        tensors = load_file(str(file)).values()
        if any(value.is_floating_point() and not torch.isfinite(value).all() for value in tensors):
            bad.append(str(file.relative_to(run)))
    return bad


def test_weights_that_diverge_stop_the_run_as_failed_with_the_reason(tmp_path):
    # lr 10 with momentum 0.99: the loss stays a finite 1e21 while BatchNorm's running variance
    # overflows to inf; the run used to end with NaN embeddings (or "done" with NaN weights).
    summary = train(tiny_config(lr=10, momentum=0.99), tmp_path / "run")
    assert summary["status"] == "failed"
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())
    message = progress["message"]
    assert progress["status"] == "failed" and message == summary["message"]
    assert re.search(r"^the weights became NaN or infinite by epoch 1, step \d+ \(learning rate [\d.]+\): "
                     r"'[\w.]+' holds \d+ (NaN|inf)", message)
    assert "lower the learning rate" in message and "lower the momentum (0.99" in message
    assert _non_finite_files(tmp_path / "run") == []
    assert not (tmp_path / "run" / "best").exists()  # nothing finite was ever evaluated


def test_a_divergence_after_good_epochs_keeps_their_checkpoints(tmp_path):
    def poison_after_the_first_epoch(event):
        if event["kind"] == "epoch" and event["epoch"] == 1:
            with torch.no_grad():  # BatchNorm's running variance overflowing, as at a too high learning rate
                trainer.model.stages[0][0].bn1.running_var.fill_(float("inf"))

    trainer = Trainer(tiny_config(epochs=3), tmp_path / "run", on_event=poison_after_the_first_epoch)
    with pytest.raises(TrainingFailed, match=r"^the weights became NaN or infinite by epoch 2, step 20 .*"
                                             r"'stages.0.0.bn1.running_var' holds 16 inf of its 16 values"):
        trainer.run()
    assert WEIGHT_CHECK_EVERY == 20 and trainer.steps_per_epoch < 20 < 2 * trainer.steps_per_epoch
    assert _non_finite_files(tmp_path / "run") == []
    for name in ("best", "last"):
        assert load_checkpoint(tmp_path / "run" / name).meta.epoch == 1
    assert len(RunFolder(tmp_path / "run").read_metrics()) == 1


def test_an_epoch_whose_embeddings_collapsed_is_flagged_and_listed_on_the_runs_page(tmp_path):
    train(tiny_config(epochs=1), tmp_path / "ce")
    weights_file = str(tmp_path / "ce" / "best" / "model.safetensors")
    weights = load_file(weights_file)
    # The embedding's BatchNorm scale at 0: every face is embedded as the norm's shift, one vector;
    # the smallest learning rate allowed keeps it there for the two epochs.
    weights["embedding.1.weight"].zero_()
    weights["embedding.1.bias"].fill_(1.0)
    save_file(weights, weights_file)
    events = []
    summary = train(tiny_config(init_from=str(tmp_path / "ce" / "best"), lr=1e-7), tmp_path / "flat",
                    on_event=events.append)
    assert summary["status"] == "done"
    rows = RunFolder(tmp_path / "flat").read_metrics()
    assert len(rows) == 2 and all(row["cosine_spread"] < COLLAPSE_SPREAD for row in rows)
    assert all(row["warning"].startswith(f"epoch {row['epoch']}: the embeddings collapsed") for row in rows)
    listed = run_warnings(rows)  # one warning on the page, not one per epoch
    assert len(listed) == 1 and listed[0].startswith("epochs 1-2 (numbers of epoch 2): the embeddings collapsed")
    assert "spread by only" in listed[0] and "learning rate" in listed[0]
    raised = [e["message"] for e in events if e["kind"] == "warning" and "collapsed" in e["message"]]
    assert len(raised) == 2 and listed[0].endswith(raised[1].split(": ", 1)[1])
    healthy = RunFolder(tmp_path / "ce").read_metrics()
    assert healthy[0]["cosine_spread"] > 0.1 and not run_warnings(healthy)


def test_non_finite_embeddings_stop_the_run_as_failed(tmp_path, monkeypatch):
    real_embed = evaluation.embed

    def overflowing_embed(*args, **kwargs):  # finite weights can still overflow in the forward pass
        embeddings = real_embed(*args, **kwargs)
        embeddings[3] = float("nan")
        return embeddings

    monkeypatch.setattr(evaluation, "embed", overflowing_embed)
    summary = train(tiny_config(epochs=1), tmp_path / "run")
    assert summary["status"] == "failed"
    assert summary["message"].startswith("the embeddings of 1 of ")
    assert "verification images became NaN or infinite by epoch 1" in summary["message"]
    assert not (tmp_path / "run" / "best").exists() and not (tmp_path / "run" / "last").exists()


def test_margin_head_fine_tunes_from_the_ce_classifier(tmp_path):
    train(tiny_config(epochs=1), tmp_path / "ce")
    ce = load_checkpoint(tmp_path / "ce" / "best")
    trainer = Trainer(tiny_config(loss="arcface", init_from=str(tmp_path / "ce" / "best")), tmp_path / "arc")
    assert torch.equal(trainer.loss_module.weight.detach(), ce.model.classifier.weight)
    assert torch.equal(trainer.model.stem[0].weight.detach().contiguous(), ce.model.stem[0].weight)
    other = dict(TINY_MODEL, stages=[dict(TINY_MODEL["stages"][0], out_chs=24), TINY_MODEL["stages"][1]])
    with pytest.raises(ValueError, match="another architecture"):
        Trainer(config_from_run({**tiny_run(init_from=str(tmp_path / "ce" / "best")), "model": other}), tmp_path / "x")


def test_stuck_margin_loss_is_flagged_with_the_remedy():
    stuck = {"epoch": 3, "train_acc": 0.004}
    message = margin_stuck_warning("arcface", stuck, num_classes=298)
    assert "near chance" in message and "init_from" in message
    assert margin_stuck_warning("ce", stuck, 298) == ""  # only margin losses are flagged
    assert margin_stuck_warning("arcface", {"epoch": 1, "train_acc": 0.004}, 298) == ""  # too early to tell
    assert margin_stuck_warning("sphereface", {"epoch": 3, "train_acc": 0.2}, 298) == ""  # learning


def test_channels_last_is_turned_off_for_layers_that_crash_pytorch_on_cpu(tmp_path):
    # TINY_MODEL's first stride-2 stage has a 1x1 stride-2 shortcut on the stem's 8 channels.
    trainer = Trainer(tiny_config(channels_last=True), tmp_path / "run")
    assert trainer.config.channels_last is False
    assert any("channels_last turned off" in w and "stages.0.0.shortcut" in w for w in trainer.warnings)
    wide = dict(TINY_MODEL, stem=dict(TINY_MODEL["stem"], out_chs=16))
    safe = Trainer(config_from_run({"name": "wide", "model": wide, "config": tiny_run(channels_last=True)["config"]}),
                   tmp_path / "wide")
    assert safe.config.channels_last is True and not safe.warnings
