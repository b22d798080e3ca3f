"""FaceNet(spec): stem -> stages -> head conv -> pool -> embedding -> classifier.

One module serves training, UMAP and Captum: ``embed(x)`` gives the embedding
(what verification compares), ``forward(x)`` the logits of the plain
classifier, and ``embed_and_classify(x)`` both from one pass (a training
step). Margin losses (lib/losses/registry.py) own their own class weights and
use the embedding.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torchvision.ops import DropBlock2d

from lib.model.blocks import BLOCKS, LayerNorm2d, make_act
from lib.model.spec import ModelSpec, StageSpec, embedding_dim, feature_chs, stage_in_chs, stage_output_sizes


def build_stem(spec: ModelSpec) -> nn.Sequential:
    stem = spec.stem
    if stem.kind == "patchify":
        return nn.Sequential(nn.Conv2d(spec.in_chs, stem.out_chs, stem.kernel_size, stem.stride),
                             LayerNorm2d(stem.out_chs))
    layers = [nn.Conv2d(spec.in_chs, stem.out_chs, stem.kernel_size, stem.stride,
                        padding=stem.kernel_size // 2, bias=False),
              nn.BatchNorm2d(stem.out_chs), make_act(stem.act)]
    if stem.pool:
        layers.append(nn.MaxPool2d(3, 2, padding=1))
    return nn.Sequential(*layers)


def drop_path_rates(spec: ModelSpec) -> list[float]:
    """Stochastic depth grows linearly from 0 at the first block to drop_path_rate at the last
    (deeper blocks are dropped more often); a stage that sets its own ``drop_path`` uses that rate."""
    total = sum(stage.depth for stage in spec.stages)
    linear = [spec.drop_path_rate * i / (total - 1) for i in range(total)] if total > 1 else [0.0] * total
    rates, start = [], 0
    for stage in spec.stages:
        own = stage.drop_path
        rates += [own] * stage.depth if own is not None else linear[start:start + stage.depth]
        start += stage.depth
    return rates


def build_stage(stage: StageSpec, in_chs: int, rates: list[float]) -> nn.Sequential:
    """The stage's blocks, then DropBlock where asked: appended last, so the blocks keep their
    names (stages.i.j) and a checkpoint loads whatever the regularisation."""
    block_cls = BLOCKS[stage.block]
    options = stage.block_options()
    blocks = []
    for index in range(stage.depth):
        blocks.append(block_cls(in_chs if index == 0 else stage.out_chs, stage.out_chs,
                                stage.stride if index == 0 else 1, drop_path=rates[index], **options))
    if stage.drop_block > 0:
        blocks.append(DropBlock2d(stage.drop_block, stage.drop_block_size))
    return nn.Sequential(*blocks)


class FaceNet(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        spec.validate()
        self.spec = spec
        self.stem = build_stem(spec)
        rates = drop_path_rates(spec)
        stages, start = [], 0
        for stage, in_chs in zip(spec.stages, stage_in_chs(spec)):
            stages.append(build_stage(stage, in_chs, rates[start:start + stage.depth]))
            start += stage.depth
        self.stages = nn.Sequential(*stages)
        self.head_conv = self._build_head_conv(spec)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.pool_norm = nn.LayerNorm(feature_chs(spec), eps=1e-6) if spec.head.pool_norm == "layer" else nn.Identity()
        self.embedding = self._build_embedding(spec)
        self.dropout = nn.Dropout(spec.head.dropout)
        self.classifier = nn.Linear(embedding_dim(spec), spec.num_classes)

    @staticmethod
    def _build_head_conv(spec: ModelSpec) -> nn.Module:
        if not spec.head.conv_chs:
            return nn.Identity()
        in_chs = spec.stages[-1].out_chs if spec.stages else spec.stem.out_chs
        return nn.Sequential(nn.Conv2d(in_chs, spec.head.conv_chs, 1, bias=False),
                             nn.BatchNorm2d(spec.head.conv_chs), make_act(spec.head.conv_act))

    @staticmethod
    def _build_embedding(spec: ModelSpec) -> nn.Module:
        if not spec.head.embedding_dim:
            return nn.Identity()
        return nn.Sequential(nn.Linear(feature_chs(spec), spec.head.embedding_dim, bias=False),
                             nn.BatchNorm1d(spec.head.embedding_dim))

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def spatial_blocks(self, input_size: int) -> list[tuple[str, nn.Module, tuple[int, int, int]]]:
        """(name, module, output C x H x W) of each stage for ``input_size`` images: the layers GradCAM
        can look at. Models made elsewhere answer the same question (lib/model/foreign_net.py)."""
        sizes = stage_output_sizes(dataclasses.replace(self.spec, input_size=int(input_size)))[1:]
        return [(f"stage {index + 1}", module, (stage.out_chs, size, size))
                for index, (module, stage, size) in enumerate(zip(self.stages, self.spec.stages, sizes))]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling (what GradCAM looks at)."""
        return self.head_conv(self.stages(self.stem(x)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The (unnormalized) embedding of each image."""
        pooled = self.pool(self.features(x)).flatten(1)
        return self.embedding(self.pool_norm(pooled))

    def embed_and_classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings, logits of the plain classifier) from one pass: a training step needs both,
        since every loss gets the embedding and CE-based ones the logits too."""
        embeddings = self.embed(x)
        return embeddings, self.classifier(self.dropout(embeddings))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of the plain classifier."""
        return self.embed_and_classify(x)[1]


def count_params(spec: ModelSpec) -> int:
    """Parameter count of the real module, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = FaceNet(spec)
    return sum(p.numel() for p in model.parameters())
