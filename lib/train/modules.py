"""The model and loss module a run trains: built from its spec and config, started from init_from's
checkpoint when the run fine-tunes one, on the run's device and memory layout."""
from __future__ import annotations

import torch
from torch import nn

from lib.losses.registry import LOSSES, build_loss
from lib.model.net import FaceNet
from lib.model.spec import ModelSpec, embedding_dim
from lib.store.checkpoint import load_checkpoint
from lib.train import distributed
from lib.train.config import TrainConfig
from lib.train.step import joint_loss


def build_modules(config: TrainConfig, spec: ModelSpec, device: str, classes: list[str]):
    """(model, loss module, a warning or ""). ValueError when init_from cannot start this run."""
    model = FaceNet(spec)
    init_weight, loss_state = None, {}
    if config.init_from:
        init_weight, loss_state = initial_weights(config, model, classes)
    loss_module = build_loss(config.loss, embedding_dim(spec), spec.num_classes, init_weight=init_weight,
                             **config.effective_loss_params())
    loss_module = joint_loss(loss_module, config.joint_metric, config.joint_weight, embedding_dim(spec),
                             spec.num_classes)  # the course's joint objective, when asked for
    if loss_state:
        loss_module.load_state_dict(loss_state)
    model.to(device)
    loss_module.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    problem = ""
    if config.sync_batchnorm and distributed.world_size() > 1:
        model, problem = distributed.sync_batchnorm(model, device)
    return model, loss_module, problem or ""


def initial_weights(config: TrainConfig, model: nn.Module, classes: list[str]):
    """Load init_from's weights into ``model``; returns (the classifier's class vectors for a margin
    head to start from, or None; the saved loss state when the loss is the same, else {})."""
    try:
        loaded = load_checkpoint(config.init_folder())
    except ValueError as err:  # e.g. NaN weights: say which setting named the checkpoint
        raise ValueError(f"init_from: {err}") from None
    trained_on = list(loaded.meta.classes)
    if trained_on and trained_on != list(classes):
        raise ValueError(f"init_from: {config.init_from} was trained on other identities "
                         f"({len(trained_on)} classes) than this data set ({len(classes)})")
    try:
        model.load_state_dict(loaded.model.state_dict())
    except RuntimeError:
        raise ValueError(f"init_from: {config.init_from} holds another architecture "
                         f"({loaded.spec.name}); use the same model spec") from None
    joint_before = (loaded.meta.config or {}).get("joint_metric", "none")  # a joint loss keeps more state
    same_loss = loaded.meta.loss == config.loss and joint_before == config.joint_metric and loaded.loss_state
    loss_state = dict(loaded.loss_state) if same_loss else {}
    init_weight = None
    if not same_loss and LOSSES[config.loss].has_class_weights:
        init_weight = loaded.model.classifier.weight.detach().clone()
    return init_weight, loss_state
