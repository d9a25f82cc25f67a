"""The one builder: ``Arch`` -> ``nn.Module`` made of stem, one module per block slot, head."""

from __future__ import annotations

import torch
from torch import nn

from blocks.ir import Arch, BlockSpec, HeadSpec
from blocks.layers import BlockStage, ConvBNAct


class Head(nn.Module):
    """Optional 1x1 conv -> global average pool -> dropout -> linear classifier."""

    def __init__(self, spec: HeadSpec, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNAct(in_channels, spec.channels, 1, act=spec.act) if spec.channels else nn.Identity()
        width = spec.channels or in_channels
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).mean((2, 3))
        return self.classifier(self.dropout(x))


class ArchNet(nn.Module):
    """A network built from an ``Arch``; ``blocks[i]`` is block slot ``i`` and can be swapped."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module, arch: Arch | None = None):
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.arch = arch

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the stem and of every block slot, in order."""
        outs = [self.stem(x)]
        for block in self.blocks:
            outs.append(block(outs[-1]))
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def build_block(spec: BlockSpec, in_channels: int) -> BlockStage:
    """The module of one block slot (``spec.depth`` layers)."""
    return BlockStage(spec, in_channels)


def build_stem(arch: Arch) -> nn.Sequential:
    """The fixed stem layers of ``arch``."""
    layers, channels = [], arch.in_channels
    for spec in arch.stem:
        layers.append(BlockStage(spec, channels))
        channels = spec.out_channels
    return nn.Sequential(*layers)


def stem_channels(arch: Arch) -> int:
    """Channels leaving the stem of ``arch``."""
    return arch.stem[-1].out_channels if arch.stem else arch.in_channels


def build_head(arch: Arch, in_channels: int | None = None) -> Head:
    """The classifier head of ``arch`` (input channels default to the last block's)."""
    return Head(arch.head, in_channels or arch.blocks[-1].out_channels, arch.num_classes)


def init_weights(module: nn.Module) -> None:
    """Kaiming (fan-out) convs, unit BatchNorm, small-normal linear layers, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def build_model(arch: Arch) -> ArchNet:
    """Builds ``arch`` into an ``ArchNet`` with freshly initialised weights."""
    channels = stem_channels(arch)
    blocks = []
    for spec in arch.blocks:
        blocks.append(build_block(spec, channels))
        channels = spec.out_channels
    model = ArchNet(build_stem(arch), blocks, build_head(arch, channels), arch)
    init_weights(model)
    return model.to(memory_format=torch.channels_last)  # see blocks.layers.to_channels_last
