"""MMTM (Joze, Shaban, Iuzzolino, Koishida, "MMTM: Multimodal Transfer Module for CNN Fusion", CVPR 2020),
generalised to M >= 2 modalities.

At one placement each modality m has a map h_m with C_m channels. Squeeze: S_m is the global
average of h_m over every axis but the batch and the channels (for a vector, S_m = h_m). Joint
representation: Z = ReLU(W [S_1, ..., S_M] + b), one Linear over the concatenation to a bottleneck
of C_Z = max(1, int(2 (C_1 + ... + C_M) / ratio)) units. Excitation: E_m = W_m Z + b_m, one Linear
per modality back to C_m, and h_m <- 2 sigmoid(E_m) * h_m, the gate broadcast over the non-channel
axes (the paper's Eq. for A~ and B~; a gate of 1 leaves h_m unchanged).

Generalisation, mmbal's own: the paper and its release fuse two streams; here the joint layer
takes the squeezed vectors of all M modalities and there is one excitation layer per modality,
so every modality's gates depend on every modality. For M = 2 this is the paper's module.
C_Z follows the release's ``int(2 * dim / ratio)`` (dim = the sum of the channels, ratio 4),
kept as is for any M. Maps with the channels on the last axis (a transformer's tokens [T, C]) are
squeezed over the tokens.

Placement: by default after the last two stages of every encoder (``stages = [-2, -1]``), the
paper's "last few blocks" adapted to encoders of any depth, and one that every registry encoder
has with its default options (the default MLP and conv1d have two stages). The paper's ResNet
placement, also Greedy's (after layer2, layer3, layer4), is ``stages = [-3, -2, -1]`` on resnet18.

For Greedy (Wu et al., ICML 2022, "Characterizing and Overcoming the Greedy Nature of Learning in
Multi-modal Deep Neural Networks", release nyukat/greedy_multimodal_learning), which re-balances
by cutting a modality's cross-modal input: ``running_gate`` holds, per modality and channel, the
mean of the batch-mean gates over every training-mode forward so far (the release's
``running_avg_weight_*``), and ``freeze_gates(ms)`` makes the gates of the modalities ``ms`` that
constant (detached, the same for every sample: the release's ``curation_mode`` for its "caring
modality") until ``freeze_gates(())``. ``bypass_parameters(m)`` are the parameters through
which the other modalities reach m (the joint layer and m's excitation layer: what the release
counts as m's "bypass" in its balance of learning speeds). Deviations from the Greedy release,
stated: the gate is 2 sigmoid as in the MMTM paper (the Greedy release uses sigmoid); the running
mean is updated in training mode only (the release also updates it while evaluating), and each
modality's from its own gates (the release updates its second modality's from the first's).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ...registry import did_you_mean
from ...schema import opt
from ..encoders.stages import StageShape
from . import MID_FUSIONS, check_stages


@dataclass(frozen=True)
class MMTMConfig:
    stages: list[int] = opt([-2, -1], help="stages after which an MMTM sits (0 = first; -1 = after the last stage "
                                           "of every encoder); Greedy on ResNet-18: [-3, -2, -1]")
    ratio: int = opt(4, ge=1, help="bottleneck reduction: the joint layer has int(2 * sum of channels / ratio) units")

    def __post_init__(self) -> None:
        check_stages(self.stages)


class MMTM(nn.Module):
    """Squeeze every modality, a joint bottleneck, one excitation per modality, 2 sigmoid channel gates."""

    def __init__(self, cfg: MMTMConfig, shapes: dict[str, StageShape]):
        super().__init__()
        if len(shapes) < 2:
            raise ValueError(f"mid_fusion: mmtm exchanges information between modalities and needs at least two, "
                             f"got {len(shapes)}")
        self.modalities = list(shapes)
        self.channel_dims = {m: s.channel_axis + 1 for m, s in shapes.items()}   # in the batched tensor
        self.channels = {m: s.channels for m, s in shapes.items()}
        total = sum(self.channels.values())
        self.bottleneck = max(1, int(2 * total / cfg.ratio))
        self.joint = nn.Linear(total, self.bottleneck)
        self.excite = nn.ModuleDict({m: nn.Linear(self.bottleneck, c) for m, c in self.channels.items()})
        self.register_buffer("running_gate", torch.ones(total))
        self.register_buffer("gate_steps", torch.zeros((), dtype=torch.long))
        self.frozen: frozenset[str] = frozenset()

    # -- the module -------------------------------------------------------------------------------
    def squeeze(self, h: torch.Tensor, m: str) -> torch.Tensor:
        """(B, C_m): the mean of h over every axis but the batch and the channels."""
        axes = tuple(d for d in range(1, h.dim()) if d != self.channel_dims[m])
        return h.mean(dim=axes) if axes else h

    def gates(self, h: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{m: (B, C_m)} = 2 sigmoid(E_m), computed from every modality's squeezed map."""
        z = torch.relu(self.joint(torch.cat([self.squeeze(h[m], m) for m in self.modalities], dim=1)))
        return {m: 2 * torch.sigmoid(self.excite[m](z)) for m in self.modalities}

    def broadcastable(self, gate: torch.Tensor, like: torch.Tensor, m: str) -> torch.Tensor:
        """(B, C) -> the shape that multiplies ``like`` channel-wise, in ``like``'s dtype."""
        shape = [1] * like.dim()
        shape[0], shape[self.channel_dims[m]] = gate.shape[0], gate.shape[1]
        return gate.to(like.dtype).view(shape)

    def forward(self, h: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        gates = self.gates(h)
        if self.training:
            self.track(gates)
        if self.frozen:
            means = self.running_gates()
            gates = {m: means[m].expand_as(g) if m in self.frozen else g for m, g in gates.items()}
        out = dict(h)
        for m in self.modalities:
            out[m] = h[m] * self.broadcastable(gates[m], h[m], m)
        return out

    # -- what Greedy needs ------------------------------------------------------------------------
    @torch.no_grad()
    def track(self, gates: dict[str, torch.Tensor]) -> None:
        """running_gate <- the mean over training steps of each step's batch-mean gates (on the device)."""
        batch_mean = torch.cat([gates[m].detach().float().mean(0) for m in self.modalities])
        self.gate_steps += 1
        self.running_gate.lerp_(batch_mean, 1.0 / self.gate_steps.to(batch_mean.dtype))

    def running_gates(self) -> dict[str, torch.Tensor]:
        """{m: (C_m,)} views of ``running_gate`` (all ones before the first training step)."""
        return dict(zip(self.modalities, self.running_gate.split(list(self.channels.values()))))

    def freeze_gates(self, modalities: Iterable[str]) -> None:
        """Gates of ``modalities`` = their running means from now on (no cross-modal input); () unfreezes."""
        chosen = frozenset(modalities)
        unknown = sorted(chosen - set(self.modalities))
        if unknown:
            raise KeyError(f"mmtm: no modality '{unknown[0]}'{did_you_mean(unknown[0], self.modalities)}; "
                           f"modalities: {', '.join(self.modalities)}")
        self.frozen = chosen

    def bypass_parameters(self, m: str) -> list[nn.Parameter]:
        """The joint layer's and m's excitation layer's parameters: the path of the other modalities into m."""
        return [*self.joint.parameters(), *self.excite[m].parameters()]


@MID_FUSIONS.register("mmtm", config=MMTMConfig,
                      help="MMTM (Joze et al. 2020): squeeze-and-excitation gates from every modality, per stage")
def build_mmtm(cfg: MMTMConfig, shapes: dict[str, StageShape]) -> nn.Module:
    return MMTM(cfg, shapes)
