"""Hugging Face ``transformers`` backbones as encoders: ``encoder = "hf"`` (or ``"transformers"``).

An optional extra (``pip install "mmbal[hf]"``); the package is imported when such an encoder is
built, never by ``import engine``. The backbone comes from a model name or local folder::

    [modalities.text]
    encoder = "hf"
    model = "prajjwal1/bert-tiny"      # AutoModel.from_pretrained (pretrained = false: its architecture, random weights)

or from a configuration, with random initial weights and no download::

    [modalities.text]
    encoder = "hf"
    config = { model_type = "bert", hidden_size = 64, num_hidden_layers = 2, num_attention_heads = 2,
               intermediate_size = 128, vocab_size = 30522 }      # AutoConfig.for_model(**config)

What the modality's column holds (``input``; ``auto`` decides by rank):

* ``tokens`` (a vector [L]): token ids, stored as floats in our format (exact up to 2^24), padded to L
  with ``pad_token_id``; the attention mask is ``ids != pad_token_id``. Standardisation would change
  the ids, so the preset must say ``data.standardize = "none"`` (checked when it is read);
* ``pixels`` ([C, H, W]): pixel values as the model's image processor would give them (e.g. ViT's
  normalised to [-1, 1]); the configuration's ``image_size`` and ``num_channels`` default to the
  data's and must match them.

The feature (``pooling``) is the first token's last hidden state (``cls``: BERT's [CLS], ViT's class
token), the mean over tokens (``mean``; padding left out for text, the spatial mean of a
convolutional backbone's map) or the model's pooler output (``pooler``), so ``out_dim`` is the
hidden size (measured once when built). The backbone's parameters are named ``backbone.*`` (its own
names after that), e.g. ``freeze = ["backbone.embeddings", "backbone.encoder.layer.0"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ...schema import opt
from . import ENCODERS, EncoderProblem, UnsupportedShape
from .external import measured_out_dim

EXTRA = 'pip install "mmbal[hf]"'


@dataclass(frozen=True)
class HFConfig:
    model: str | None = opt(None, help="a Hugging Face model name or local folder (AutoModel.from_pretrained)")
    config: dict | None = opt(None, help="a configuration table for AutoConfig.for_model (model_type and sizes): "
                                         "random initial weights, nothing downloaded")
    pretrained: bool = opt(True, help="with `model`: load its pretrained weights (false: its architecture only)")
    input: Literal["auto", "tokens", "pixels"] = opt(
        "auto", help="the column holds token ids [L] or pixel values [C, H, W]; auto = by the number of dimensions")
    pooling: Literal["cls", "mean", "pooler"] = opt(
        "cls", help="feature: the first token's hidden state, the mean over tokens, or the model's pooler output")
    pad_token_id: int | None = opt(None, ge=0, help="token id of padding (default: the model's, else 0)")

    def __post_init__(self) -> None:
        if (self.model is None) == (self.config is None):
            raise ValueError("give either model = \"<name or folder>\" or config = { model_type = \"...\", ... }, "
                             "not both and not neither")
        if self.config is not None and not isinstance(self.config.get("model_type"), str):
            raise ValueError("config needs model_type = \"bert\" (or vit, roberta, ...): the architecture to build")

    def takes_token_ids(self, shape: tuple[int, ...]) -> bool:
        """Whether a modality of per-sample ``shape`` is read as token ids (see :func:`input_kind`)."""
        return input_kind(self, shape) == "tokens"


def input_kind(cfg: HFConfig, shape: tuple[int, ...]) -> str | None:
    """``tokens`` for a vector, ``pixels`` for [C, H, W] (or what ``cfg.input`` says), None otherwise."""
    if cfg.input != "auto":
        return cfg.input
    return {1: "tokens", 3: "pixels"}.get(len(shape))


def import_transformers():
    """The ``transformers`` module, or a problem naming the extra that installs it."""
    try:
        import transformers
    except ImportError:
        raise EncoderProblem(f"encoder 'hf' needs the transformers package, which is not installed; {EXTRA}") from None
    return transformers


class HFEncoder(nn.Module):
    """A ``transformers`` backbone giving one feature vector per sample (see the module docstring)."""

    def __init__(self, backbone: nn.Module, kind: str, pooling: str, pad_token_id: int):
        super().__init__()
        self.backbone = backbone
        self.kind = kind
        self.pooling = pooling
        self.pad_token_id = pad_token_id
        self.out_dim = 0  # measured by build_hf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = None
        if self.kind == "tokens":
            ids = x.round().long()
            mask = ids.ne(self.pad_token_id)
            out = self.backbone(input_ids=ids, attention_mask=mask.long())
        else:
            out = self.backbone(pixel_values=x)
        if self.pooling == "pooler":
            return out.pooler_output.flatten(1)
        h = out.last_hidden_state
        if h.dim() == 4:  # a convolutional backbone's map (B, C, H, W)
            return h.mean(dim=(2, 3))
        if self.pooling == "cls":
            return h[:, 0]
        if mask is None:
            return h.mean(dim=1)
        weights = mask.unsqueeze(-1).to(h.dtype)
        return (h * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def _config_from_table(transformers, cfg: HFConfig, kind: str, shape: tuple[int, ...]):
    table = dict(cfg.config)
    model_type = table.pop("model_type")
    if kind == "pixels":
        table.setdefault("num_channels", shape[0])
        table.setdefault("image_size", shape[1])
    return transformers.AutoConfig.for_model(model_type, **table)


def _backbone(transformers, cfg: HFConfig, kind: str, shape: tuple[int, ...]) -> nn.Module:
    try:
        if cfg.config is not None:
            return transformers.AutoModel.from_config(_config_from_table(transformers, cfg, kind, shape))
        if cfg.pretrained:
            return transformers.AutoModel.from_pretrained(cfg.model)
        return transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(cfg.model))
    except Exception as exc:  # unknown model type or name, no network and not cached, bad sizes, ...
        what = f"model '{cfg.model}'" if cfg.model is not None else f"config {cfg.config}"
        hint = " (no network? the model must then be in the Hugging Face cache, or give a local folder)" \
            if isinstance(exc, OSError) else ""
        raise EncoderProblem(f"transformers cannot build {what}: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}{hint}") from None


def _check_fit(conf: Any, kind: str, shape: tuple[int, ...]) -> None:
    """The data's shape against the configuration: sequence length, channels and image size."""
    if kind == "tokens":
        longest = getattr(conf, "max_position_embeddings", None)
        if isinstance(longest, int) and shape[0] > longest:
            raise EncoderProblem(f"the token sequences have length {shape[0]}, above the model's "
                                 f"max_position_embeddings = {longest}")
        return
    channels = getattr(conf, "num_channels", None)
    size = getattr(conf, "image_size", None)
    if isinstance(channels, int) and channels != shape[0]:
        raise EncoderProblem(f"the images have {shape[0]} channels, the model num_channels = {channels}")
    if size is not None:
        hw = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        if hw != tuple(shape[1:]):
            raise EncoderProblem(f"the images are {shape[1]}x{shape[2]}, the model's image_size is {hw[0]}x{hw[1]}")


def build_hf(cfg: HFConfig, input_shape: tuple[int, ...]) -> nn.Module:
    shape = tuple(int(s) for s in input_shape)
    kind = input_kind(cfg, shape)
    if kind is None or (kind == "tokens" and len(shape) != 1) or (kind == "pixels" and len(shape) != 3):
        raise UnsupportedShape(f"encoder 'hf' accepts token ids [L] or pixel values [C, H, W], but this "
                               f"modality's samples have shape {list(shape)}")
    transformers = import_transformers()
    backbone = _backbone(transformers, cfg, kind, shape)
    conf = backbone.config
    _check_fit(conf, kind, shape)
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else getattr(conf, "pad_token_id", None)
    if kind == "tokens" and isinstance(getattr(conf, "vocab_size", None), int) and pad is not None \
            and pad >= conf.vocab_size:
        raise EncoderProblem(f"pad_token_id = {pad} is outside the model's vocabulary of {conf.vocab_size} ids")
    encoder = HFEncoder(backbone, kind, cfg.pooling, int(pad or 0))
    encoder.out_dim = measured_out_dim(encoder, shape, "hf")
    return encoder


ENCODERS.register("hf", config=HFConfig, help="a Hugging Face transformers model (text token ids or images)")(build_hf)
ENCODERS.register("transformers", config=HFConfig, help="the same as 'hf'")(build_hf)

__all__ = ["EXTRA", "HFConfig", "HFEncoder", "build_hf", "input_kind"]
