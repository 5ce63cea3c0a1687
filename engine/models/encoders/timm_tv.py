"""timm and torchvision backbones as encoders: ``encoder = "timm"`` and ``encoder = "torchvision"``.

Both are optional (``pip install "mmbal[timm]"`` / ``"mmbal[torchvision]"``) and imported only when
such an encoder is built. The backbone's classifier is removed, so the feature is its pooled
output, and ``out_dim`` is its ``num_features`` (measured once when built)::

    [modalities.image]
    encoder = "timm"
    model = "resnet18"          # any timm.create_model name
    pretrained = false          # true downloads the weights (or reads timm's cache)

    [modalities.image]
    encoder = "torchvision"
    model = "resnet18"          # any torchvision.models.get_model name
    weights = "DEFAULT"         # or none (the default): random weights

The images' channels are passed to timm as ``in_chans`` (timm adapts pretrained first-layer weights);
torchvision's models expect 3 channels. The backbones' parameters are named ``backbone.*``
(their own names after that), e.g. ``freeze = ["backbone.conv1", "backbone.layer1"]``.

torchvision's compiled operators must load beside the installed torch (and timm imports
torchvision): where they do not, building such an encoder is a preset problem that says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...schema import opt
from . import ENCODERS, EncoderProblem, check_rank
from .external import measured_out_dim


@dataclass(frozen=True)
class TimmConfig:
    model: str = opt(help="a timm model name (timm.list_models())")
    pretrained: bool = opt(False, help="load timm's pretrained weights (downloaded, or from its cache)")
    drop_rate: float = opt(0.0, ge=0.0, lt=1.0, help="dropout before the (removed) classifier")


@dataclass(frozen=True)
class TorchvisionConfig:
    model: str = opt(help="a torchvision.models name (torchvision.models.list_models())")
    weights: str | None = opt(None, help="weights enum name, e.g. \"DEFAULT\" or \"IMAGENET1K_V1\" (none: random)")


def import_optional(package: str, extra: str):
    """``package`` imported, or a problem naming the extra to install (or why it does not load)."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise EncoderProblem(f"this encoder needs the {package} package, which is not installed; "
                             f"pip install \"mmbal[{extra}]\"") from None
    except Exception as exc:  # e.g. torchvision's compiled operators built for another torch
        raise EncoderProblem(f"the {package} package is installed but does not load beside torch "
                             f"{torch.__version__} ({type(exc).__name__}: {str(exc).splitlines()[0]}); install a "
                             f"{package} built for this torch") from None


class BackboneEncoder(nn.Module):
    """A classification backbone without its classifier: (B, C, H, W) -> (B, num_features)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.out_dim = 0  # measured by the builder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).flatten(1)


def _built(make, what: str) -> nn.Module:
    try:
        return make()
    except Exception as exc:  # unknown name, no network for weights, ...
        raise EncoderProblem(f"cannot build {what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


@ENCODERS.register("timm", config=TimmConfig, help="a timm backbone for images [C, H, W] (pooled features)")
def build_timm(cfg: TimmConfig, input_shape: tuple[int, ...]) -> nn.Module:
    shape = check_rank("timm", input_shape, (3,), "images [C, H, W]")
    timm = import_optional("timm", "timm")
    backbone = _built(lambda: timm.create_model(cfg.model, pretrained=cfg.pretrained, num_classes=0,
                                                in_chans=shape[0], drop_rate=cfg.drop_rate), f"timm model '{cfg.model}'")
    encoder = BackboneEncoder(backbone)
    encoder.out_dim = measured_out_dim(encoder, shape, "timm")
    declared = getattr(backbone, "num_features", None)
    if isinstance(declared, int) and declared != encoder.out_dim:
        raise EncoderProblem(f"timm model '{cfg.model}' gives {encoder.out_dim} features, not its num_features = {declared}")
    return encoder


def strip_classifier(model: nn.Module) -> nn.Module:
    """A torchvision classifier with its last Linear layer replaced by the identity (``fc``, ``classifier``
    or ``heads``, the last Linear inside it when it is a Sequential)."""
    for name in ("fc", "classifier", "heads", "head"):
        part = getattr(model, name, None)
        if isinstance(part, nn.Linear):
            setattr(model, name, nn.Identity())
            return model
        if isinstance(part, nn.Sequential):
            linear = [i for i, m in enumerate(part) if isinstance(m, nn.Linear)]
            if linear:
                part[linear[-1]] = nn.Identity()
                return model
    raise EncoderProblem(f"cannot find the classifier of torchvision's {type(model).__name__} (fc, classifier, heads)")


@ENCODERS.register("torchvision", config=TorchvisionConfig,
                   help="a torchvision classification backbone for images [C, H, W] (classifier removed)")
def build_torchvision(cfg: TorchvisionConfig, input_shape: tuple[int, ...]) -> nn.Module:
    shape = check_rank("torchvision", input_shape, (3,), "images [C, H, W]")
    tv = import_optional("torchvision", "torchvision")
    model = _built(lambda: tv.models.get_model(cfg.model, weights=cfg.weights), f"torchvision model '{cfg.model}'")
    encoder = BackboneEncoder(strip_classifier(model))
    encoder.out_dim = measured_out_dim(encoder, shape, "torchvision")
    return encoder


__all__ = ["BackboneEncoder", "TimmConfig", "TorchvisionConfig", "build_timm", "build_torchvision", "strip_classifier"]
