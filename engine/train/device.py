"""Choosing the device and the numeric precision."""

from __future__ import annotations

import contextlib

import torch

from ..errors import UsageError


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda``/``cuda:N`` checked to exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"train.device: '{spec}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"train.device: '{spec}' was asked for but CUDA is not available on this machine; "
                             "use --device cpu or train.device = \"auto\"")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"train.device: '{spec}' does not exist; this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UsageError(f"train.device: '{spec}' is not supported; use auto, cpu, cuda or cuda:N")
    return dev


def autocast_factory(precision: str, device: torch.device):
    """A zero-argument context factory: bf16 autocast where asked (auto: on CUDA), else a no-op."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def channels_last_enabled(setting: bool | str, device: torch.device) -> bool:
    """``train.channels_last``: ``"auto"`` -> on CUDA only (cuDNN's NHWC kernels, tensor cores), else as given."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"
