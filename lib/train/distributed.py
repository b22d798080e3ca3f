"""One training job across several processes: DistributedDataParallel started by torchrun.

`torchrun --standalone --nproc_per_node N -m lib train RUN.json --out DIR` starts N copies of
the training command; torchrun gives each its RANK, LOCAL_RANK and WORLD_SIZE. Every rank builds
the same model from the same seed, trains on its own shard of each batch, and DDP averages the
gradients, so all ranks hold the same weights after every step. Rank 0 alone writes the run
folder (progress, metrics, checkpoints, resume state) and evaluates; the others wait at a barrier.

The run's batch_size stays the global batch: each of N ranks trains on batch_size / N images
of it per step. Random batches are cut from the one shuffled order all ranks draw alike, so
the N shards of step s together are exactly the batch a single process would train on at step s.
A P x K loss (triplet, center) needs whole identities in each batch, so there every rank draws
its own (P / N) x K batch from its shard of the identities.

Without torchrun (WORLD_SIZE unset or 1) every function here is a no-op and the run is the
ordinary single-process one.
"""
from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lib.losses.registry import LOSSES
from lib.store.run_folder import RunFolder
from lib.train.batches import EpochBatches, TrainData, training_batches
from lib.train.config import TrainConfig
from lib.train.sampler import PKSampler
from lib.train.step import EpochTally

# Ranks other than 0 wait at a barrier while rank 0 evaluates an epoch: long enough for the
# evaluation of a full HW2P2 dev split on a slow GPU.
BARRIER_TIMEOUT = timedelta(minutes=60)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0 (or a single-process run): the one process that writes and evaluates."""
    return rank() == 0


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def setup(device: str) -> str:
    """Join the process group when started by torchrun (NCCL on GPUs, gloo on the CPU); returns
    this rank's device: "cuda:<local rank>" (torchrun's processes share one machine's GPUs)."""
    if world_size() <= 1 or active():
        return device
    if device.startswith("cuda"):
        device = f"cuda:{local_rank()}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=BARRIER_TIMEOUT)
    return device


def teardown() -> None:
    if active():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def _reduce_device() -> torch.device:
    """Where a tensor to all-reduce must live: NCCL reduces GPU tensors only, gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agree(*flags: bool) -> list[bool]:
    """Each flag true if it is true on any rank (a stop asked of one rank stops all at the same
    step: a rank that stopped alone would leave the others waiting in the next all-reduce)."""
    if not active():
        return [bool(flag) for flag in flags]
    values = torch.tensor([float(bool(flag)) for flag in flags], device=_reduce_device())
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(value) for value in values.tolist()]


def global_tally(tally: EpochTally) -> EpochTally:
    """The epoch's tally over every rank: loss and hits summed over all images seen; time is
    the slowest rank's (they step together). Every rank must call it."""
    if not active():
        return tally
    sums = torch.tensor([tally.loss_sum, tally.correct, float(tally.images)], dtype=torch.float64,
                        device=_reduce_device())
    dist.all_reduce(sums)
    seconds = torch.tensor([tally.seconds], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    total = EpochTally()
    total.load_state_dict({"loss_sum": sums[0].item(), "correct": sums[1].item(), "images": int(sums[2].item()),
                           "seconds": seconds.item()})
    return total


class QuietFolder(RunFolder):
    """The run folder as ranks other than 0 see it: read (the resume state), never written."""

    def create(self) -> None:
        pass

    def write_config(self, config: dict) -> None:
        pass

    def write_progress(self, force: bool = False, **fields) -> bool:
        return False

    def append_metrics(self, record: dict) -> None:
        pass

    def align_metrics(self, records: list[dict]) -> None:
        pass

    def save_resume(self, state: dict) -> None:
        pass

    def append_steps(self, records: list[dict]) -> None:
        pass

    def align_steps(self, step: int) -> int:
        return 0

    def align_probes(self, epoch: int) -> None:
        pass

    def write_probe_index(self, paths: list[str], identities: list[str]) -> None:
        pass

    def save_probe_embeddings(self, epoch: int, embeddings) -> None:
        pass


def run_folder(out_dir) -> RunFolder:
    return RunFolder(out_dir) if is_main() else QuietFolder(out_dir)


# -- each rank's batches ----------------------------------------------------------------------
class ShardBatches(EpochBatches):
    """This rank's part of every batch of shuffled images: images [r·B/N, (r+1)·B/N) of global
    batch b. The shuffled order comes from the shared seed (the same on every rank); the random
    augmentation from a seed of the rank's own, so two ranks do not crop alike."""

    def __init__(self, *args, shard: int, shards: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.shard, self.shards, self.shared_seed = shard, shards, self.seed

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.seed = self.shared_seed  # the order: alike on every rank
        super().set_epoch(epoch, start)
        self.seed = self.shared_seed + 7919 * self.shard  # the augmentation: the rank's own

    def _image_indices(self, batch: int) -> torch.Tensor:
        index = super()._image_indices(batch)
        size = len(index) // self.shards
        return index[self.shard * size:(self.shard + 1) * size]


def rank_batches(config: TrainConfig, data: TrainData) -> EpochBatches:
    """The batches this rank trains on (all of them in a single-process run)."""
    shards = world_size()
    if shards <= 1:
        return training_batches(config, data)
    if LOSSES[config.loss].needs_pk_batches:
        return _pk_shard(config, data, shards)
    return ShardBatches(data.train, config.augment, data.mean, data.std, config.batch_size, config.seed,
                        shard=rank(), shards=shards)


class RankPKBatches(EpochBatches):
    """P x K batches drawn from this rank's identities only. The images stay where they are (a
    memory-mapped data cache is never copied per rank): the sampler draws positions among this
    rank's images, and ``mine`` maps them back to the split."""

    def __init__(self, split, mine: torch.Tensor, *args, **kwargs):
        super().__init__(split, *args, **kwargs)
        self.mine = mine

    def _image_indices(self, batch: int) -> torch.Tensor:
        return self.mine[super()._image_indices(batch)]


def _pk_shard(config: TrainConfig, data: TrainData, shards: int) -> EpochBatches:
    """(P / N) x K batches from the identities of this rank (every N-th one), as many per epoch
    as a single process would train (every rank must take the same number of steps)."""
    identities, k = config.pk_batch()
    labels = data.train.labels
    mine = torch.isin(labels, labels.unique()[rank()::shards]).nonzero().flatten()
    per_rank = identities // shards
    held = len(labels[mine].unique())
    if held < per_rank:
        raise ValueError(f"gpus_per_job: each of the {shards} processes draws P / {shards} = {per_rank} identities "
                         f"per batch from its share of the data, but a share holds only "
                         f"{held}; use fewer processes or a smaller batch")
    sampler = PKSampler(labels[mine], per_rank, k, seed=config.seed + rank())
    sampler.num_batches = max(1, len(labels) // (identities * k))
    return RankPKBatches(data.train, mine, config.augment, data.mean, data.std, per_rank * k, config.seed + rank(),
                         sampler)


# -- the modules DDP trains --------------------------------------------------------------------
class _EmbedAndClassify(nn.Module):
    """DDP synchronises gradients of what runs through its forward: the step calls
    embed_and_classify, so that is this module's forward."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images):
        return self.net.embed_and_classify(images)


class DistributedNet:
    """What the training step calls in place of the FaceNet: the same embed_and_classify, run
    through DDP; its parameters and buffers are the FaceNet's (for the EMA)."""

    def __init__(self, net: nn.Module, device: str, loss: str):
        ids = [torch.device(device).index] if device.startswith("cuda") else None
        # Only plain CE trains the FaceNet's classifier: the other losses own their class weights or
        # have none, leaving it without gradients, which DDP must then look for at every step.
        self.ddp = DistributedDataParallel(_EmbedAndClassify(net), device_ids=ids,
                                           find_unused_parameters=loss != "ce")
        self.net = net

    def embed_and_classify(self, images):
        return self.ddp(images)

    def parameters(self):
        return self.net.parameters()

    def buffers(self):
        return self.net.buffers()


class AgreedLoss(nn.Module):
    """The loss module, its class weights (if any) synchronised by DDP, and a loss that is NaN on
    every rank when it is not finite on one: each rank then stops before its backward pass,
    where the others would wait for it forever."""

    def __init__(self, loss_module: nn.Module, device: str):
        super().__init__()
        trainable = any(p.requires_grad for p in loss_module.parameters())
        ids = [torch.device(device).index] if device.startswith("cuda") else None
        self.inner = DistributedDataParallel(loss_module, device_ids=ids) if trainable else loss_module

    def forward(self, embeddings, logits, targets):
        output = self.inner(embeddings, logits, targets)
        finite = torch.isfinite(output.loss.detach()).float().reshape(1)
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() < 1:
            output = replace(output, loss=output.loss + float("nan"))
        return output


def sync_batchnorm(model: nn.Module, device: str) -> tuple[nn.Module, str]:
    """(model, warning): BatchNorm layers made SyncBatchNorm on GPUs; PyTorch has no CPU version,
    so on the CPU each process keeps normalising with its own part of the batch, and says so."""
    if not device.startswith("cuda"):
        return model, ("sync_batchnorm: SyncBatchNorm needs GPUs; on the CPU each process normalises "
                       "with the statistics of its own part of the batch")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model), ""
