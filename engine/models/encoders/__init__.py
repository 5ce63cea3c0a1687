"""Encoder registry: one entry per encoder family, each mapping (B, *input_shape) -> (B, out_dim).

Every builder has the signature ``build_x(cfg: XConfig, input_shape: tuple[int, ...]) -> nn.Module``
and the module it returns carries an int attribute ``out_dim``. A builder given a shape it cannot
encode raises :class:`UnsupportedShape` (a ``ValueError``) whose message names the encoder and the
shapes it accepts, and one whose options cannot build raises :class:`EncoderProblem`;
:func:`engine.models.build_model` turns both into preset problems.

Beyond the built-in families: ``encoder = "package.module:function"`` and entry points of the group
``mmbal.encoders`` (:mod:`.external`), Hugging Face ``transformers`` backbones (:mod:`.hf`), timm and
torchvision backbones (:mod:`.timm_tv`); the latter two import their package only when built.

Importing this package imports every encoder module, so all of them are registered.
"""

from __future__ import annotations

from ...registry import Registry


def _adopt(name, obj) -> None:
    """An entry point of ``mmbal.encoders`` that did not register itself: a function, used as an external encoder."""
    from .external import adopt_function
    adopt_function(name, obj)


ENCODERS = Registry("encoder", group="mmbal.encoders", adopt=_adopt)


class EncoderProblem(ValueError):
    """An encoder cannot be built from its options or for its data; the message says why (a preset problem)."""


class UnsupportedShape(EncoderProblem):
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
from . import external, hf, timm_tv  # noqa: E402,F401  (adapters; their third-party packages load when built)

__all__ = ["ENCODERS", "EncoderProblem", "UnsupportedShape", "check_rank"]
