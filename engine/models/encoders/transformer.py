"""Transformer encoder for sequences (Vaswani et al. 2017), pre-LayerNorm (Xiong et al. 2020).

Each of the T frames ([T, F]; a vector [L] is read as L tokens of one feature) is embedded by a
Linear to ``d_model``, a learned positional embedding sized from T is added (plus a learned
[CLS] token when ``pooling = "cls"``, as in BERT/ViT), and ``n_layers`` of
``nn.TransformerEncoderLayer(batch_first=True, norm_first=True, activation="gelu")`` follow,
with a final LayerNorm (needed by pre-norm stacks). The feature is the [CLS] output or the mean
over tokens; ``out_dim = d_model``. Positional and [CLS] embeddings start from a truncated normal
with std 0.02 (ViT, Dosovitskiy et al. 2021).

Stages (:mod:`.stages`): the ``n_layers`` encoder layers, each giving tokens [T (+1 with [CLS]),
d_model] with the channels on the last axis; ``enter`` is the embedding ([CLS], positions,
dropout) and ``exit`` the final LayerNorm and pooling. Running the layers one by one is what
``nn.TransformerEncoder`` does without a mask (same calls, same results).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ...schema import opt
from . import ENCODERS, check_rank
from .stages import StagedEncoder, StageShape


@dataclass(frozen=True)
class TransformerConfig:
    d_model: int = opt(128, ge=1, help="token width (and output feature size)")
    n_layers: int = opt(2, ge=1, help="number of encoder layers")
    n_heads: int = opt(4, ge=1, help="attention heads (must divide d_model)")
    ff_mult: int = opt(4, ge=1, help="feed-forward width = ff_mult * d_model")
    dropout: float = opt(0.1, ge=0.0, lt=1.0, help="dropout in attention, feed-forward and on the embeddings")
    pooling: Literal["cls", "mean"] = opt("cls", help="feature: the [CLS] token's output, or the mean over tokens")

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")


class TransformerEncoder(StagedEncoder):
    """Linear token embedding + learned positions [+ CLS] -> pre-LN transformer -> pooled (B, d_model)."""

    def __init__(self, cfg: TransformerConfig, tokens: int, features: int, vector_input: bool):
        super().__init__()
        self.vector_input = vector_input
        self.pooling = cfg.pooling
        self.embed = nn.Linear(features, cfg.d_model)
        n_pos = tokens + (1 if cfg.pooling == "cls" else 0)
        self.pos = nn.Parameter(torch.empty(1, n_pos, cfg.d_model))
        self.cls = nn.Parameter(torch.empty(1, 1, cfg.d_model)) if cfg.pooling == "cls" else None
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.n_heads, dim_feedforward=cfg.ff_mult * cfg.d_model, dropout=cfg.dropout,
            activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.out_dim = cfg.d_model
        self.stage_shapes = tuple(StageShape((n_pos, cfg.d_model), 1) for _ in range(cfg.n_layers))
        nn.init.trunc_normal_(self.pos, std=0.02)
        if self.cls is not None:
            nn.init.trunc_normal_(self.cls, std=0.02)

    @property
    def stages(self) -> list[nn.Module]:
        return list(self.blocks.layers)

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        if self.vector_input:
            x = x.unsqueeze(-1)
        h = self.embed(x)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1)
        return self.drop(h + self.pos)

    def exit(self, h: torch.Tensor) -> torch.Tensor:
        h = self.norm(h)
        return h[:, 0] if self.cls is not None else h.mean(dim=1)

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return self.run(x, start, stop)  # this class's own code object (see StagedEncoder.run)


@ENCODERS.register("transformer", config=TransformerConfig,
                   help="pre-LN transformer for sequences [T, F] (a vector [L] is L tokens)")
def build_transformer(cfg: TransformerConfig, input_shape: tuple[int, ...]) -> nn.Module:
    shape = check_rank("transformer", input_shape, (1, 2), "sequences [T, F] or vectors [L] (L tokens of 1 feature)")
    if len(shape) == 1:
        return TransformerEncoder(cfg, shape[0], 1, vector_input=True)
    return TransformerEncoder(cfg, shape[0], shape[1], vector_input=False)
