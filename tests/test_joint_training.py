"""The course's joint training in the engine: CE and a weighted center term trained together from
the first step, the centers learned and checkpointed, and a resume that continues it exactly."""
from __future__ import annotations

import torch

from lib.store.checkpoint import load_checkpoint
from lib.train.engine import Trainer, train
from lib.train.step import JointLoss
from tests.train_cases import tiny_config


def test_a_joint_run_trains_ce_and_the_center_term_together(tmp_path):
    config = tiny_config(joint_metric="center", joint_weight=0.3, epochs=1)
    trainer = Trainer(config, tmp_path / "joint")
    assert isinstance(trainer.loss_module, JointLoss) and trainer.loss_module.weight == 0.3
    start = trainer.loss_module.centers.detach().clone()
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert id(trainer.loss_module.centers) in optimized  # the optimizer trains the centers
    summary = train(config, tmp_path / "joint")
    assert summary["status"] == "done"
    saved = load_checkpoint(tmp_path / "joint" / "best")
    centers = saved.loss_state["centers"]
    assert centers.shape == start.shape and not torch.equal(centers, start)  # learned, and kept with the run


def test_a_plain_run_keeps_the_plain_loss_and_init_from_does_not_mix_them(tmp_path):
    plain = tiny_config(epochs=1)
    assert not isinstance(Trainer(plain, tmp_path / "plain").loss_module, JointLoss)
    train(plain, tmp_path / "plain")
    joint = tiny_config(joint_metric="center", epochs=1, init_from=str(tmp_path / "plain" / "best"))
    trainer = Trainer(joint, tmp_path / "joint")  # CE state without centers: the model's weights only
    assert isinstance(trainer.loss_module, JointLoss)
