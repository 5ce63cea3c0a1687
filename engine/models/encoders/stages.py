"""Encoders seen as stages, so that a mid-fusion module can act between them.

Every encoder is ``exit(stage_{n-1}(... stage_0(enter(x))))``:

- ``enter(x)``: the input layout (a channel axis added, time moved behind the features, the
  channels-last format, a transformer's token embedding, [CLS] token and positions);
- ``stages``: the ordered sub-modules (the convolution blocks, the ResNet stem and layer1..layer4,
  the transformer layers, the MLP's hidden blocks and its final Linear);
- ``exit(h)``: what turns the last stage's output into the feature (pooling, final norm,
  projection; the identity for the MLP).

``forward(x, start=0, stop=None)`` runs that chain: ``encoder(x)`` is the feature, exactly as
before stages existed (the same modules in the same order); ``encoder(h, start=i, stop=j)`` runs
stages ``i .. j-1`` only, for 0 <= i < j <= n: ``enter`` only when ``start == 0`` (``h`` is then the
input, else the output of stage i-1), ``exit`` only when ``stop`` is None.
Going through the module's call keeps ``train.compile`` in effect (one graph per segment).

The stages are views of modules the encoder already owns: no module is added or renamed, so the
state-dict keys are those of the encoder without stages and old checkpoints load.
``stage_shapes`` (set at build time from the per-sample input shape) gives each stage's output
shape per sample and the axis of its channels, so a mid-fusion module can be sized before any
data is seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class StageShape:
    """A stage's output for one sample: its shape and which axis holds the channels.

    ``channel_axis`` indexes ``shape`` (no batch axis): 0 for the maps of a CNN ([C, L] or
    [C, H, W]) and for vectors ([C]), 1 for transformer tokens ([T, C]).
    """

    shape: tuple[int, ...]
    channel_axis: int

    @property
    def channels(self) -> int:
        return self.shape[self.channel_axis]


class StagedEncoder(nn.Module):
    """Base of the registry's encoders: ``forward`` is ``enter``, the stages, then ``exit``.

    Subclasses define ``enter``, ``exit``, ``stages`` (a list of sub-modules it already owns),
    ``forward(x, start=0, stop=None)`` as ``return self.run(x, start, stop)``, and set
    ``stage_shapes`` in ``__init__``; ``run_stage`` applies stage ``i`` (override it when a stage
    is not one module, as in the MLP).
    """

    stage_shapes: tuple[StageShape, ...]
    stages: list[nn.Module]   # a property of each subclass, over modules registered under their own names

    @property
    def n_stages(self) -> int:
        return len(self.stage_shapes)

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def exit(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def run_stage(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return self.stages[i](h)

    def run(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """The features of ``x`` (B, out_dim); with ``start``/``stop``, only stages ``start .. stop-1``.

        Each subclass's ``forward`` calls this: ``torch.compile`` keeps its compiled variants per
        code object (at most ``recompile_limit`` each), so one ``forward`` shared by every encoder
        class would pool the variants of all of them; a ``forward`` per class keeps them apart.
        """
        h = self.enter(x) if start == 0 else x
        for i in range(start, self.n_stages if stop is None else stop):
            h = self.run_stage(i, h)
        return self.exit(h) if stop is None else h


def halved(n: int) -> int:
    """Output size of a stride-2 layer with "same"-style padding (3x3/2 pad 1, 7x7/2 pad 3, 1x1/2): ceil(n / 2)."""
    return (n - 1) // 2 + 1


__all__ = ["StageShape", "StagedEncoder", "halved"]
