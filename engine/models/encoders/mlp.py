"""Multi-layer perceptron for feature vectors (any per-sample shape is flattened first).

Blocks are Linear -> norm -> activation -> dropout, followed by a Linear to ``dim`` (the feature
size handed to the fusion head), as in the MLP encoders of the MCR synthetic benchmark
(``SyntheticGaussianNet_Enc``). With ``hidden = []`` the encoder is a single Linear.

Stages (:mod:`.stages`): one per hidden block (Linear -> norm -> activation -> dropout, output
[hidden_i]) and the final Linear (output [dim]), so every MLP has at least one stage and a
mid-fusion module after the last stage acts on the features themselves; ``exit`` is the identity.

BatchNorm (``norm = "batchnorm"``) needs more than one sample per batch in train mode; use
``layernorm`` or ``none`` when training with batches of one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ...schema import opt
from . import ENCODERS, check_rank
from .stages import StagedEncoder, StageShape


@dataclass(frozen=True)
class MLPConfig:
    hidden: list[int] = opt([256], ge=1, help="widths of the hidden layers ([] = a single linear layer)")
    dim: int = opt(128, ge=1, help="output feature size")
    dropout: float = opt(0.0, ge=0.0, lt=1.0, help="dropout after each hidden activation")
    activation: Literal["relu", "gelu"] = opt("relu", help="hidden activation")
    norm: Literal["none", "layernorm", "batchnorm"] = opt("none", help="normalisation after each hidden linear")


def make_activation(name: str) -> nn.Module:
    return nn.GELU() if name == "gelu" else nn.ReLU()


def make_vector_norm(name: str, width: int) -> nn.Module:
    if name == "layernorm":
        return nn.LayerNorm(width)
    if name == "batchnorm":
        return nn.BatchNorm1d(width)
    return nn.Identity()


class MLPEncoder(StagedEncoder):
    """Flatten -> [Linear -> norm -> act -> dropout] * len(hidden) -> Linear(dim)."""

    LAYERS_PER_BLOCK = 4

    def __init__(self, cfg: MLPConfig, in_features: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), make_vector_norm(cfg.norm, h), make_activation(cfg.activation),
                       nn.Dropout(cfg.dropout)]
            width = h
        layers.append(nn.Linear(width, cfg.dim))
        self.net = nn.Sequential(*layers)
        self.in_features = in_features
        self.out_dim = cfg.dim
        self.stage_shapes = tuple(StageShape((w,), 0) for w in [*cfg.hidden, cfg.dim])
        # stage i is net[bounds[i]:bounds[i + 1]]: the layers stay in one flat Sequential (unchanged keys)
        self.bounds = [self.LAYERS_PER_BLOCK * i for i in range(len(cfg.hidden) + 1)] + [len(layers)]

    @property
    def stages(self) -> list[nn.Module]:
        return [self.net[a:b] for a, b in zip(self.bounds[:-1], self.bounds[1:])]

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.in_features)

    def run_stage(self, i: int, h: torch.Tensor) -> torch.Tensor:
        for j in range(self.bounds[i], self.bounds[i + 1]):
            h = self.net[j](h)
        return h

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return self.run(x, start, stop)  # this class's own code object (see StagedEncoder.run)


@ENCODERS.register("mlp", config=MLPConfig, help="multi-layer perceptron for vectors (flattens any shape)")
def build_mlp(cfg: MLPConfig, input_shape: tuple[int, ...]) -> nn.Module:
    shape = check_rank("mlp", input_shape, tuple(range(1, 9)), "any shape of 1 to 8 dimensions")
    return MLPEncoder(cfg, math.prod(shape))
