"""Small convolutional encoders: ``conv1d`` for sequences and ``conv2d`` for images/spectrograms.

Both stack blocks of convolution ("same" padding, stride 1) -> norm -> ReLU -> max-pool(2), then
global average pooling, dropout and a Linear to ``dim``: a plain VGG-style CNN (Simonyan &
Zisserman 2015) with BatchNorm (Ioffe & Szegedy 2015), the usual from-scratch encoder for small
images and spectrograms. Deviation: a block skips its pooling along any axis already smaller
than 2, so small inputs (28x28, 40x32, short sequences) never shrink below 1.

Stages (:mod:`.stages`): the conv blocks, each giving a map [channels_i, *size_i]; ``exit`` is
the pooling, dropout and Linear.

``norm = "batchnorm"`` needs more than one value per channel in train mode (batch x spatial > 1);
``groupnorm`` (one group: LayerNorm over channels and positions) works with batches of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ...schema import opt
from . import ENCODERS, check_rank
from .stages import StagedEncoder, StageShape

Norm = Literal["batchnorm", "groupnorm", "none"]


def _check_blocks(cfg: Conv1dConfig | Conv2dConfig) -> None:
    if not cfg.channels:
        raise ValueError("channels must list at least one convolution width, got []")
    if cfg.kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (\"same\" padding keeps the size), got {cfg.kernel_size}")


@dataclass(frozen=True)
class Conv1dConfig:
    channels: list[int] = opt([64, 128], ge=1, help="output channels of each conv block (time is pooled x2 per block)")
    kernel_size: int = opt(5, ge=1, help="temporal kernel size (odd)")
    dim: int = opt(128, ge=1, help="output feature size")
    dropout: float = opt(0.0, ge=0.0, lt=1.0, help="dropout before the final linear layer")
    norm: Norm = opt("batchnorm", help="normalisation after each convolution")

    def __post_init__(self) -> None:
        _check_blocks(self)


@dataclass(frozen=True)
class Conv2dConfig:
    channels: list[int] = opt([32, 64, 128], ge=1, help="output channels of each conv block (H, W pooled x2 per block)")
    kernel_size: int = opt(3, ge=1, help="square kernel size (odd)")
    dim: int = opt(128, ge=1, help="output feature size")
    dropout: float = opt(0.0, ge=0.0, lt=1.0, help="dropout before the final linear layer")
    norm: Norm = opt("batchnorm", help="normalisation after each convolution")

    def __post_init__(self) -> None:
        _check_blocks(self)


def make_channel_norm(name: str, channels: int, dims: int) -> nn.Module:
    if name == "batchnorm":
        return nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)
    if name == "groupnorm":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def block_pools(spatial: tuple[int, ...], n_blocks: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(pool, output size) of each block: max-pool(2) on the axes still >= 2, no pooling on the others."""
    out, size = [], tuple(spatial)
    for _ in range(n_blocks):
        pool = tuple(2 if s >= 2 else 1 for s in size)
        size = tuple(s // p for s, p in zip(size, pool))
        out.append((pool, size))
    return out


def conv_blocks(cfg: Conv1dConfig | Conv2dConfig, in_channels: int, spatial: tuple[int, ...]) -> nn.Sequential:
    """conv -> norm -> ReLU [-> max-pool(2) on the axes still >= 2] for each width in ``cfg.channels``."""
    dims = len(spatial)
    conv_cls = nn.Conv1d if dims == 1 else nn.Conv2d
    blocks: list[nn.Module] = []
    for width, (pool, _) in zip(cfg.channels, block_pools(spatial, len(cfg.channels))):
        block: list[nn.Module] = [
            conv_cls(in_channels, width, cfg.kernel_size, padding="same", bias=cfg.norm == "none"),
            make_channel_norm(cfg.norm, width, dims),
            nn.ReLU(inplace=True),
        ]
        if any(p > 1 for p in pool):
            block.append(nn.MaxPool1d(pool[0]) if dims == 1 else nn.MaxPool2d(pool))
        blocks.append(nn.Sequential(*block))
        in_channels = width
    return nn.Sequential(*blocks)


class ConvEncoder(StagedEncoder):
    """Conv blocks -> global average pool -> dropout -> Linear(dim), for 1-D or 2-D maps.

    ``layout`` tells how a sample arrives: "time_first" ([T, F] -> channels F over time T),
    "one_channel" ([L] or [H, W] gets a channel axis) or "channels" ([C, H, W] as is).
    """

    def __init__(self, cfg: Conv1dConfig | Conv2dConfig, in_channels: int, spatial: tuple[int, ...], layout: str):
        super().__init__()
        self.layout = layout
        self.features = conv_blocks(cfg, in_channels, spatial)
        self.pool = nn.AdaptiveAvgPool1d(1) if len(spatial) == 1 else nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(cfg.channels[-1], cfg.dim)
        self.out_dim = cfg.dim
        self.supports_channels_last = len(spatial) == 2
        self.channels_last = False  # set by MultimodalModel.to_channels_last (2-D maps only)
        self.stage_shapes = tuple(StageShape((width, *size), 0)
                                  for width, (_, size) in zip(cfg.channels, block_pools(spatial, len(cfg.channels))))

    @property
    def stages(self) -> list[nn.Module]:
        return list(self.features)

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "time_first":
            x = x.transpose(1, 2)
        elif self.layout == "one_channel":
            x = x.unsqueeze(1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def exit(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(torch.flatten(self.pool(h), 1)))

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return self.run(x, start, stop)  # this class's own code object (see StagedEncoder.run)


@ENCODERS.register("conv1d", config=Conv1dConfig, help="1-D CNN for sequences [T, F] (time first) or signals [L]")
def build_conv1d(cfg: Conv1dConfig, input_shape: tuple[int, ...]) -> nn.Module:
    shape = check_rank("conv1d", input_shape, (1, 2), "sequences [T, F] (time first) or signals [L]")
    if len(shape) == 1:
        return ConvEncoder(cfg, 1, shape, "one_channel")
    return ConvEncoder(cfg, shape[1], shape[:1], "time_first")


@ENCODERS.register("conv2d", config=Conv2dConfig,
                   help="2-D CNN (conv-BN-ReLU-maxpool blocks) for images [C, H, W] or [H, W]")
def build_conv2d(cfg: Conv2dConfig, input_shape: tuple[int, ...]) -> nn.Module:
    shape = check_rank("conv2d", input_shape, (2, 3), "images or spectrograms [H, W] or [C, H, W]")
    if len(shape) == 2:
        return ConvEncoder(cfg, 1, shape, "one_channel")
    return ConvEncoder(cfg, shape[0], shape[1:], "channels")
