"""The multimodal model: one encoder per modality, then a fusion head.

``MultimodalModel.forward`` returns a :class:`ModelOutput` with the fused logits, each modality's
logits and each modality's encoder features. Balancing methods reach the pieces separately:
``encode`` (features only), ``head`` (fusion only, on any leading batch shape, e.g. features with
one modality permuted or zeroed, stacked along the batch), per-modality ``encoder_parameters``,
``head_parameters`` and ``parameter_groups`` (one optimiser group per encoder plus "fusion").

Mid-fusion (optional, ``ModelSpec.mid_fusion``): modules placed after given encoder stages
(:mod:`engine.models.mid_fusion`). ``encode`` then runs the encoders stage by stage, all of them
up to a placement, then that module on the dict {m: h_m} of intermediate tensors, and so on; the
features are what the encoders' last parts make of the modified tensors. Without mid-fusion,
``encode`` is each encoder's own call, as before. Methods reach the model through ``encode``,
``forward`` and ``predict``, so they run with mid-fusion unchanged; one that calls
``model.encoders[m]`` by itself gets that encoder without the cross-modal exchange.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import PresetError
from ..schema import build
from .encoders import ENCODERS, EncoderProblem
from .encoders.external import is_target, register_target
from .encoders.weights import freeze_parameters, load_initial_weights
from .fusion import FUSIONS
from .mid_fusion import MID_FUSIONS, placements

FUSION_GROUP = "fusion"


@dataclass
class ModelOutput:
    fused: torch.Tensor                 # (B, C)
    logits: dict[str, torch.Tensor]     # per modality, (B, C)
    features: dict[str, torch.Tensor]   # per modality encoder features, (B, d_m)


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    encoder: str
    options: Any = None   # the encoder's config dataclass instance (None: its defaults; a mapping: validated;
                          # for an external encoder, the keyword arguments of its function)
    init: str | None = None   # a file of initial weights for the encoder (encoders/weights.py)
    freeze: Any = False       # True, a number of leading stages, or stage names / parameter prefixes


@dataclass(frozen=True)
class ModelSpec:
    modalities: tuple[ModalitySpec, ...]
    fusion: str = "concat"
    fusion_options: Any = None   # the fusion's config dataclass instance (None: defaults; a mapping: validated)
    mid_fusion: str | None = None   # a MID_FUSIONS name, or None for none
    mid_fusion_options: Any = None  # its config dataclass instance (None: defaults; a mapping: validated)


class MultimodalModel(nn.Module):
    """Encoders (one per modality, in order), optional mid-fusion modules between their stages, a fusion head.

    ``mid_fusions``: (placement, module) pairs in the order they run, a placement giving for every
    modality the index of the stage after which the module sits (increasing from pair to pair).
    """

    def __init__(self, encoders: dict[str, nn.Module], fusion: nn.Module,
                 mid_fusions: list[tuple[dict[str, int], nn.Module]] = ()):
        super().__init__()
        self.modalities: list[str] = list(encoders)
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.mid_fusion_stages: list[dict[str, int]] = [dict(after) for after, _ in mid_fusions]
        self.mid_fusions = nn.ModuleList([module for _, module in mid_fusions])
        self.frozen_norms = [mod for enc in encoders.values() for mod in enc.modules()
                             if isinstance(mod, _BATCHNORMS) and mod.affine
                             and not any(p.requires_grad for p in mod.parameters())]

    def train(self, mode: bool = True) -> "MultimodalModel":
        """As ``nn.Module.train``, but a BatchNorm of a frozen encoder part keeps its running statistics."""
        super().train(mode)
        for norm in self.frozen_norms:
            norm.eval()
        return self

    def encode(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{m: (B, d_m)} from {m: (B, *shape_m)}."""
        if not self.mid_fusion_stages:
            return {m: self.encoders[m](inputs[m]) for m in self.modalities}
        return self.encode_with_mid_fusion(inputs)

    def encode_with_mid_fusion(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every encoder up to the first placement, its mid-fusion module on {m: h_m}, on to the next, ..., then
        each encoder's remaining stages and exit (``encoder(h, start, stop)``, see :mod:`.encoders.stages`)."""
        h = {m: inputs[m] for m in self.modalities}
        done = dict.fromkeys(self.modalities, 0)
        for after, module in zip(self.mid_fusion_stages, self.mid_fusions):
            h = module({m: self.encoders[m](h[m], start=done[m], stop=after[m] + 1) for m in self.modalities})
            done = {m: after[m] + 1 for m in self.modalities}
        return {m: self.encoders[m](h[m], start=done[m]) for m in self.modalities}

    def head(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The fusion alone: (fused (..., C), {m: (..., C)}) for features of any leading shape."""
        return self.fusion(features)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        features = self.encode(inputs)
        fused, logits = self.head(features)
        return ModelOutput(fused=fused, logits=logits, features=features)

    def to_channels_last(self) -> list[str]:
        """Channels-last memory format (NHWC) for the encoders that declare ``supports_channels_last``
        (the 2-D convolutional ones): their 4-D weights are converted in place (same parameters, same
        state-dict keys and values, so checkpoints stay interchangeable) and they convert their 4-D
        inputs in ``forward``. cuDNN's convolutions and BatchNorm are faster in this layout on tensor
        cores; on the CPU it mostly is not. Returns the modalities converted."""
        done = []
        for m in self.modalities:
            encoder = self.encoders[m]
            if getattr(encoder, "supports_channels_last", False):
                encoder.to(memory_format=torch.channels_last)
                encoder.channels_last = True
                done.append(m)
        return done

    def encoder_parameters(self, m: str) -> list[nn.Parameter]:
        """The parameters of modality m's encoder that train (a frozen one, ``freeze``, is left out)."""
        return [p for p in self.encoders[m].parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        """The fusion head's parameters and the mid-fusion modules' (the optimiser's "fusion" group)."""
        return list(self.fusion.parameters()) + self.mid_fusion_parameters()

    def mid_fusion_parameters(self) -> list[nn.Parameter]:
        return list(self.mid_fusions.parameters())

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """One group per modality encoder (keyed by the modality) plus "fusion" (the head and the mid-fusion
        modules); together, every parameter once."""
        groups = {m: self.encoder_parameters(m) for m in self.modalities}
        groups[FUSION_GROUP] = self.head_parameters()
        return groups


def default_encoder(kind: str, shape: tuple[int, ...]) -> str:
    """The encoder used when a preset names none: from the data's ``kind`` hint, else from the rank."""
    rank = len(shape)
    if kind == "vector":
        return "mlp"
    if kind in ("image", "spectrogram") and rank in (2, 3):
        return "conv2d"
    if kind == "sequence" and rank in (1, 2):
        return "conv1d"
    return "conv2d" if rank in (2, 3) else "mlp"


def resolve_options(config: type | None, options: Any, path: str, problems: list[str]) -> Any:
    """``options`` as an instance of ``config``: None -> defaults, a mapping -> validated with :func:`build`."""
    if config is None:
        return options
    if options is None:
        return config()
    if isinstance(options, Mapping):
        return build(config, options, path, problems)
    if not isinstance(options, config):
        raise TypeError(f"{path}: options must be a {config.__name__}, got {type(options).__name__}")
    return options


def check_names(names: list[str], problems: list[str]) -> None:
    """Modality names must be usable as module keys and must not clash with the "fusion" group."""
    probe = nn.ModuleDict()
    for name in names:
        bad = name == FUSION_GROUP or not name or "." in name or hasattr(probe, name)
        if bad:
            problems.append(f"modalities.{name}: '{name}' cannot name a modality in the model "
                            f"(reserved or contains '.'); map the column onto another name in the preset")
    if len(set(names)) != len(names):
        problems.append(f"modalities: a modality is listed twice ({', '.join(names)})")


def _on_meta(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


def build_encoder(ms: ModalitySpec, shape: tuple[int, ...] | None, problems: list[str]) -> nn.Module | None:
    """The encoder of ``ms`` for samples of ``shape``, with its initial weights and frozen parameters."""
    path = f"modalities.{ms.name}"
    if is_target(ms.encoder):
        failed = register_target(ms.encoder)
        if failed:
            problems.append(f"{path}.encoder: {failed}")
            return None
    if ms.encoder not in ENCODERS:
        problems.append(f"{path}.encoder: {ENCODERS.unknown_message(ms.encoder)}")
        return None
    if shape is None:
        problems.append(f"{path}: the data has no modality '{ms.name}'")
        return None
    entry = ENCODERS.entry(ms.encoder)
    cfg = resolve_options(entry.config, ms.options, path, problems)
    if cfg is None and entry.config is not None:
        return None
    try:
        encoder = entry.builder(cfg, tuple(shape))
    except EncoderProblem as exc:
        problems.append(f"{path}.encoder: {exc}")
        return None
    try:
        if ms.init and not _on_meta(encoder):   # the size estimate (models/size.py) needs no weights
            load_initial_weights(encoder, ms.init, ms.name)
        freeze_parameters(encoder, ms.freeze)
    except EncoderProblem as exc:
        problems.append(f"{path}.{exc}")
        return None
    return encoder


def build_fusion(spec: ModelSpec, in_dims: dict[str, int], n_classes: int, problems: list[str]) -> nn.Module | None:
    if spec.fusion not in FUSIONS:
        problems.append(f"model.fusion: {FUSIONS.unknown_message(spec.fusion)}")
        return None
    entry = FUSIONS.entry(spec.fusion)
    cfg = resolve_options(entry.config, spec.fusion_options, "model", problems)
    if cfg is None and entry.config is not None:
        return None
    try:
        return entry.builder(cfg, in_dims, n_classes)
    except ValueError as exc:
        problems.append(f"model.{exc}")
        return None


def build_mid_fusions(spec: ModelSpec, encoders: dict[str, nn.Module],
                      problems: list[str]) -> list[tuple[dict[str, int], nn.Module]]:
    """One module per placement of ``spec.mid_fusion`` (none without one), sized from the encoders' stage shapes."""
    if spec.mid_fusion is None:
        return []
    key = "model.mid_fusion"
    if spec.mid_fusion not in MID_FUSIONS:
        problems.append(f"{key}: {MID_FUSIONS.unknown_message(spec.mid_fusion)}")
        return []
    entry = MID_FUSIONS.entry(spec.mid_fusion)
    before = len(problems)
    cfg = resolve_options(entry.config, spec.mid_fusion_options, f"{key}_options", problems)
    if cfg is None:
        return []
    depths = {m: len(getattr(enc, "stage_shapes", ())) for m, enc in encoders.items()}
    where = placements(list(cfg.stages), depths, f"{key}_options.stages", problems)
    if len(problems) > before:
        return []
    built = []
    for after in where:
        try:
            built.append((after, entry.builder(cfg, {m: encoders[m].stage_shapes[i] for m, i in after.items()})))
        except ValueError as exc:
            problems.append(f"model.{exc}")
            return []
    return built


def build_model(spec: ModelSpec, shapes: dict[str, tuple[int, ...]], n_classes: int) -> MultimodalModel:
    """Encoders from the registry for each modality's per-sample shape, the fusion head, then the
    mid-fusion modules if any (built last, so the encoders and the head start from the same values
    with and without mid-fusion for the same seed).

    Raises :class:`~engine.errors.PresetError` (source "model") listing every problem: unknown
    encoder, fusion or mid-fusion names, options that fail validation, shapes an encoder cannot
    take, unusable modality names, fusion options that do not fit the modalities, mid-fusion
    stages out of range.
    """
    problems: list[str] = []
    names = [ms.name for ms in spec.modalities]
    if not names:
        problems.append("modalities: the model needs at least one modality")
    check_names(names, problems)
    if problems:
        raise PresetError("model", problems)
    encoders = {ms.name: build_encoder(ms, shapes.get(ms.name), problems) for ms in spec.modalities}
    if problems:
        raise PresetError("model", problems)
    in_dims = {m: int(enc.out_dim) for m, enc in encoders.items()}
    fusion = build_fusion(spec, in_dims, n_classes, problems)
    mid_fusions = build_mid_fusions(spec, encoders, problems)  # after the head: same seed, same encoders and head
    if problems:
        raise PresetError("model", problems)
    return MultimodalModel(encoders, fusion, mid_fusions)


_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def batchnorm_needs_two(model: MultimodalModel, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """Modalities whose encoder cannot train on a batch of one sample: a BatchNorm layer in it sees
    a single value per channel then (a vector, or a map pooled down to 1x1), which PyTorch refuses.

    Found by one forward pass of a zero sample per such encoder, in eval mode and without
    gradients (no running statistics or RNG state change), with hooks counting the values per
    channel each BatchNorm receives.
    """
    found = []
    for m, encoder in model.encoders.items():
        norms = [mod for mod in encoder.modules() if isinstance(mod, _BATCHNORMS)]
        if not norms:
            continue
        per_channel: list[int] = []

        def count(mod, args, seen=per_channel):
            seen.append(args[0].numel() // args[0].shape[1])

        hooks = [mod.register_forward_pre_hook(count) for mod in norms]
        was_training = encoder.training
        try:
            encoder.eval()
            with torch.no_grad():
                device = next(encoder.parameters()).device
                encoder(torch.zeros((1, *shapes[m]), device=device))
        finally:
            encoder.train(was_training)
            for hook in hooks:
                hook.remove()
        if min(per_channel, default=2) < 2:
            found.append(m)
    return found


__all__ = ["ModelOutput", "ModalitySpec", "ModelSpec", "MultimodalModel", "batchnorm_needs_two", "build_model",
           "default_encoder"]
