"""Encoder registry: one entry per encoder family, each mapping (B, *input_shape) -> (B, out_dim).

Every builder has the signature ``build_x(cfg: XConfig, input_shape: tuple[int, ...]) -> nn.Module``
and the module it returns carries an int attribute ``out_dim``. A builder given a shape it cannot
encode raises :class:`UnsupportedShape` (a ``ValueError``) whose message names the encoder and the
shapes it accepts; :func:`engine.models.build_model` turns it into a preset problem.

Importing this package imports every encoder module, so all of them are registered.
"""

from __future__ import annotations

from ...registry import Registry

ENCODERS = Registry("encoder")


class UnsupportedShape(ValueError):
    """An encoder was asked to encode a per-sample shape it does not handle."""


def check_rank(encoder: str, input_shape: tuple[int, ...], ranks: tuple[int, ...], accepts: str) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints, or :class:`UnsupportedShape` if its rank is not in ``ranks``."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in ranks or any(s < 1 for s in shape):
        raise UnsupportedShape(
            f"encoder '{encoder}' accepts {accepts}, but this modality's samples have shape {list(shape)}"
        )
    return shape


from . import conv, mlp, resnet, transformer  # noqa: E402,F401  (registers the encoders)

__all__ = ["ENCODERS", "UnsupportedShape", "check_rank"]
