"""One job in two processes: DistributedDataParallel under a real torchrun, gloo on the CPU.

The two processes split each global batch of 8 into two shards of 4 and DDP averages their
gradients, so with the same seed they take exactly the steps one process takes on the whole
batch, up to float rounding (the gradient is summed in another order). That holds only for a
model without BatchNorm: BatchNorm normalises each shard with its own statistics unless it is
SyncBatchNorm, which PyTorch offers on GPUs only. So the equality test trains a model normalised
by LayerNorm, with an augmentation that draws nothing at random (the ranks' random draws differ
from one process's by design), and compares the first epoch's training loss (every rank's
images, gathered) within 1e-5 relative, and every weight within 1e-5 absolute (measured: about
1e-7 after 13 steps).
"""
from __future__ import annotations

import os
import subprocess

import pytest
import torch

from lib.base import config
from lib.jobs import launcher
from lib.store.checkpoint import load_checkpoint
from lib.store.run_folder import RunFolder
from lib.train import distributed
from lib.train.config import config_from_run
from lib.train.engine import train
from tests.train_cases import tiny_config, tiny_run

NO_BATCHNORM = {
    "name": "tiny_layernorm",
    "stem": {"kind": "patchify", "out_chs": 8, "kernel_size": 4, "stride": 4},
    "stages": [{"block": "convnext", "out_chs": 16, "depth": 1, "stride": 2, "kernel_size": 3, "expansion": 2}],
    "head": {"embedding_dim": 0},
    "input_size": 64,
}
NO_RANDOM_AUGMENTATION = [{"name": "RandomHorizontalFlip", "params": {"p": 0.0}}]


def test_two_gloo_processes_resume_a_run_and_train_it_like_one_process(tmp_path):
    # fp32: the comparison is of the arithmetic of two half batches with one whole batch, which bf16 blurs
    run = tiny_run("ddp", epochs=1, gpus_per_job=2, augment=NO_RANDOM_AUGMENTATION, channels_last=False,
                   precision="fp32", subset={"classes": 10, "pairs": 12})
    run["model"] = NO_BATCHNORM
    reference = train(config_from_run(run), tmp_path / "one")  # one process, start to end
    assert reference["status"] == "done"

    # The same run stopped after 5 steps by one process, then finished by two torchrun processes:
    # that covers a DDP run, its resume (every rank loads the state) and the epoch's tally, which
    # adds the 5 steps saved to what both ranks trained since.
    folder = RunFolder(tmp_path / "two")
    folder.create()
    folder.write_run(run)
    assert train(config_from_run(run), folder.folder, max_steps=5)["status"] == "stopped"
    command = launcher.run_command(folder.folder, resume=True)
    assert command[2:6] == ["torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    result = subprocess.run(command, cwd=config.PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("epoch 1:") == 1  # rank 0 alone reports

    progress = folder.read_progress()
    assert progress["status"] == "done" and progress["step"] == progress["total_steps"] == reference["step"]
    records, expected = folder.read_metrics(), RunFolder(tmp_path / "one").read_metrics()
    assert len(records) == 1  # rank 0 alone wrote metrics.jsonl
    assert records[0]["train_loss"] == pytest.approx(expected[0]["train_loss"], rel=1e-5)
    assert records[0]["train_acc"] == pytest.approx(expected[0]["train_acc"])
    trained, single = load_checkpoint(folder.last), load_checkpoint(tmp_path / "one" / "last")
    assert trained.meta.step == single.meta.step and trained.meta.epoch == 1
    for name, value in single.model.state_dict().items():
        assert torch.allclose(trained.model.state_dict()[name], value, atol=1e-5), name


def test_each_rank_trains_its_shard_of_every_batch(monkeypatch):
    """Random batches: the shards of batch b are the halves of the one-process batch b. P x K
    batches: each rank draws (P / 2) x K from its own identities, as many batches as one process."""
    from lib.train.batches import load_train_data, training_batches
    for loss, changes in (("ce", {}), ("triplet", {"batch_size": 16, "images_per_identity": 2})):
        cfg = tiny_config(loss=loss, gpus_per_job=2, augment=NO_RANDOM_AUGMENTATION, **changes)
        data = load_train_data(cfg.data_folder(), cfg.pairs_file, cfg.subset)
        whole = training_batches(cfg, data)
        whole.set_epoch(1)
        shards = []
        for rank in (0, 1):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", "2")
            shard = distributed.rank_batches(cfg, data)
            shard.set_epoch(1)
            assert shard.batches_per_epoch() == whole.batches_per_epoch()
            assert shard.images is data.train.images  # a rank's share is read in place, never copied
            shards.append(shard)
        for batch in range(whole.batches_per_epoch()):
            (_, labels0), (_, labels1) = shards[0][batch], shards[1][batch]
            assert len(labels0) == len(labels1) == cfg.batch_size // 2
            if loss == "ce":
                assert torch.equal(torch.cat([labels0, labels1]), whole[batch][1])
            else:  # 4 identities x 2 images on each rank, none shared between the ranks
                assert [labels0.tolist().count(i) for i in labels0.unique().tolist()] == [2] * 4
                assert not set(labels0.tolist()) & set(labels1.tolist())
