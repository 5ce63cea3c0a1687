"""ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016), written out
because torchvision is not a dependency; it follows ``torchvision.models.resnet18`` layer for
layer (BasicBlock, layers [2, 2, 2, 2], widths w-2w-4w-8w with w = ``width`` = 64, option-B
projection shortcuts, Kaiming-normal fan-out init of the convolutions, BN gamma 1 / beta 0 and
optional zero-init of each block's last BN gamma, Goyal et al. 2017), minus the classifier ``fc``.

Differences from torchvision, all opt-in: any number of input channels ([H, W] is one channel,
as for the log-spectrograms of the CREMA-D/AVE audio encoders); ``stem = "small"`` swaps the
7x7/2 convolution and 3x3/2 max-pool for a 3x3/1 convolution and no pooling (the CIFAR variant,
for 28x28-ish inputs); ``dim > 0`` appends a Linear projection to ``dim``.

Stages (:mod:`.stages`): the stem, layer1, layer2, layer3, layer4 (5 stages, widths w, w, 2w, 4w,
8w); ``exit`` is the global average pool and the projection. Greedy (Wu et al. 2022) places its
MMTM modules after layer2, layer3 and layer4: stages 2, 3, 4, i.e. -3, -2, -1.

Every BatchNorm needs more than one value per channel in train mode: a batch of one sample whose
map has shrunk to 1x1 (small inputs, late stages) raises in PyTorch's BatchNorm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ...schema import opt
from . import ENCODERS, check_rank
from .stages import StagedEncoder, StageShape, halved


@dataclass(frozen=True)
class ResNet18Config:
    width: int = opt(64, ge=1, help="base width; the four stages have width, 2x, 4x and 8x channels")
    stem: Literal["imagenet", "small"] = opt(
        "imagenet", help="imagenet: 7x7/2 conv + 3x3/2 max-pool; small: 3x3/1 conv, no pool (28x28-ish inputs)")
    dim: int = opt(0, ge=0, help="0: features are the 8*width pooled channels; > 0: add a linear projection to dim")
    zero_init_residual: bool = opt(False, help="start each residual branch at zero (last BN gamma = 0)")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (projection shortcut when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_planes, planes, stride)] + [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def make_stem(kind: str, in_channels: int, width: int) -> nn.Sequential:
    if kind == "small":
        return nn.Sequential(conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
    return nn.Sequential(
        nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


def stage_sizes(stem: str, spatial: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Spatial size after the stem and after each of layer1..layer4 (layer2..4 start with stride 2)."""
    size = tuple(spatial) if stem == "small" else tuple(halved(halved(s)) for s in spatial)  # 7x7/2, max-pool 3x3/2
    sizes = [size, size]
    for _ in range(3):
        size = tuple(halved(s) for s in size)
        sizes.append(size)
    return sizes


class ResNet18(StagedEncoder):
    """stem -> layer1..layer4 -> global average pool [-> Linear(dim)]: (B, C, H, W) or (B, H, W) -> (B, out_dim)."""

    def __init__(self, cfg: ResNet18Config, in_channels: int, one_channel_input: bool, spatial: tuple[int, ...]):
        super().__init__()
        w = cfg.width
        self.one_channel_input = one_channel_input
        self.stem = make_stem(cfg.stem, in_channels, w)
        self.layer1 = make_stage(w, w, 2, 1)
        self.layer2 = make_stage(w, 2 * w, 2, 2)
        self.layer3 = make_stage(2 * w, 4 * w, 2, 2)
        self.layer4 = make_stage(4 * w, 8 * w, 2, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.proj: nn.Module = nn.Linear(8 * w, cfg.dim) if cfg.dim > 0 else nn.Identity()
        self.out_dim = cfg.dim if cfg.dim > 0 else 8 * w
        self.supports_channels_last = True
        self.channels_last = False  # set by MultimodalModel.to_channels_last
        self.stage_shapes = tuple(StageShape((c, *size), 0)
                                  for c, size in zip([w, w, 2 * w, 4 * w, 8 * w], stage_sizes(cfg.stem, spatial)))
        self.reset_parameters(cfg.zero_init_residual)

    def reset_parameters(self, zero_init_residual: bool) -> None:
        """torchvision's init: Kaiming-normal (fan_out, ReLU) convolutions, BN gamma 1 and beta 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    @property
    def stages(self) -> list[nn.Module]:
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        if self.one_channel_input:
            x = x.unsqueeze(1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def exit(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.flatten(self.avgpool(h), 1))

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return self.run(x, start, stop)  # this class's own code object (see StagedEncoder.run)


@ENCODERS.register("resnet18", config=ResNet18Config,
                   help="ResNet-18 (He et al. 2016) for images/spectrograms [C, H, W] or [H, W]")
def build_resnet18(cfg: ResNet18Config, input_shape: tuple[int, ...]) -> nn.Module:
    shape = check_rank("resnet18", input_shape, (2, 3), "images or spectrograms [H, W] or [C, H, W]")
    if len(shape) == 2:
        return ResNet18(cfg, 1, one_channel_input=True, spatial=shape)
    return ResNet18(cfg, shape[0], one_channel_input=False, spatial=shape[1:])
