"""The parts of a run built from its configuration: device, data, model and method."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import collectives
from ..config import RunConfig
from ..data import TensorData, load_data
from ..data.memory import device_available_bytes, format_bytes
from ..errors import DataError, PresetError, UsageError
from ..methods import METHODS, MethodContext
from ..models import batchnorm_needs_two, build_model
from ..models.size import ModelSize, estimate_model_size
from ..train.checkpoint import seed_everything
from ..train.device import resolve_device


def build_parts(cfg: RunConfig, device: torch.device, data: TensorData | None = None, source: str = "preset",
                data_mode: str | None = None):
    """Data, model and method for ``cfg`` (seeded, so the same config builds the same model).

    ``data_mode`` ("resident" | "stream") overrides the choice of ``data.mode`` (a resumed run keeps
    the mode it started with).

    A model the data cannot feed (an encoder given a shape it does not take) is a preset error
    naming ``source``, and so is one whose training would not fit the device's memory (checked
    before it is built, :func:`check_model_memory`; the estimate is the model's ``memory_estimate``).
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if data is None:
        data = load_data(cfg.data, cfg.columns, cfg.seed, Path(cfg.base_dir), device, mode=data_mode)
    size = check_model_memory(cfg, data, device, source)
    seed_everything(cfg.seed)
    try:
        model = build_model(cfg.model, data.shapes, data.n_classes).to(device)
    except PresetError as exc:
        raise PresetError(source, exc.problems) from None
    model.memory_estimate = size
    _check_training_batches(cfg, model, data, source)
    steps = cfg.train.steps_per_epoch(data.split_size("train"))
    ctx = MethodContext(modalities=cfg.modalities, n_classes=data.n_classes, epochs=cfg.train.epochs,
                        steps_per_epoch=steps, device=device, seed=cfg.seed, data=data,
                        eval_batch_size=cfg.train.eval_batch_size)
    try:
        method = METHODS.get(cfg.method_name)(cfg.method, ctx)
        method.setup(model)
    except PresetError as exc:
        raise PresetError(source, exc.problems) from None
    method.modules.to(device)
    return data, model, method


def check_model_memory(cfg: RunConfig, data, device: torch.device, source: str) -> ModelSize | None:
    """The memory training the model of ``cfg`` takes (parameters, gradients, optimiser state, the
    activations of one batch of this process), estimated on the ``meta`` device without allocating
    it, and refused (a preset error naming ``source``, with the estimate part by part) when it exceeds
    the memory available on ``device`` (:func:`~engine.data.memory.device_available_bytes`: free GPU
    memory, or the host's available memory capped by the control group's limit), measured once the
    data are loaded. None when the model cannot be built on the ``meta`` device (an external encoder
    that needs real tensors): it is then built without the check."""
    share = max(1, cfg.train.batch_size // collectives.world_size())
    try:
        size = estimate_model_size(cfg.model, data.shapes, data.n_classes, share, cfg.train.optimizer,
                                   cfg.train.momentum)
    except Exception:  # noqa: BLE001 - a module that cannot run on meta tensors (an external encoder doing
        return None    # arithmetic on tensors): no estimate; a real problem of the preset is raised by the real build
    available = device_available_bytes(device)
    if size.total_bytes > available:
        where = ("free on the GPU" if torch.device(device).type == "cuda"
                 else "available on the host (MemAvailable, capped by the memory limit of this process's control group)")
        raise PresetError(source, [
            f"model: training it needs about {size.breakdown()}, more than the {format_bytes(available)} {where} on "
            f"{device}; make the encoders or the fusion smaller (their hidden sizes, dim, width, layers), lower "
            f"train.batch_size, or use a device with more memory"])
    return size


def _check_training_batches(cfg: RunConfig, model, data: TensorData, source: str) -> None:
    """Preset errors naming ``source`` for batch settings that cannot train: ``drop_last`` with fewer
    training rows than ``batch_size`` (no batch at all), and a batch of one sample (``batch_size =
    1``, or a last batch of one) when an encoder's BatchNorm cannot train on it (PyTorch raises)."""
    n_train, b = data.split_size("train"), cfg.train.batch_size
    if cfg.train.drop_last and n_train < b:
        raise PresetError(source, [f"train.batch_size: {b} with train.drop_last = true leaves no training batch: "
                                   f"the training split has {n_train} rows; lower train.batch_size or set "
                                   f"train.drop_last = false"])
    world = collectives.world_size()  # each process trains on its share of every batch (padded, see engine.train.data_parallel)
    last = 0 if cfg.train.drop_last else n_train % b
    if b // world == 1:
        why, fix = (f"train.batch_size = {b} gives" + (f" each of the {world} processes" if world > 1 else ""),
                    f"set train.batch_size >= {2 * world}")
    elif last and -(-last // world) == 1:
        share = f" (its share on each of the {world} processes)" if world > 1 else ""
        why, fix = (f"train.batch_size = {b} gives as the last batch of the {n_train} training rows{share}",
                    "set train.drop_last = true or another train.batch_size")
    else:
        return
    problems = [f"modalities.{m}: the encoder's BatchNorm cannot train on a batch of one sample, which {why}; "
                f"{fix}, or the encoder's norm to \"layernorm\" (mlp) or \"groupnorm\" (conv1d, conv2d)"
                for m in batchnorm_needs_two(model, data.shapes)]
    if problems:
        raise PresetError(source, problems)


def placement(data) -> dict | None:
    """How the data are held (resident or streamed), the resident size estimate and the budget."""
    return data.placement.to_dict() if getattr(data, "placement", None) else None


def load_run_data(cfg: RunConfig, device: torch.device, source: str):
    """The run's data; a problem with generated data also names the preset (``source``) that describes it."""
    try:
        return load_data(cfg.data, cfg.columns, cfg.seed, Path(cfg.base_dir), device)
    except DataError as exc:
        if cfg.data.source != "synthetic":
            raise
        raise DataError(f"{source}: {exc}") from None


def training_device(cfg: RunConfig, source: str) -> torch.device:
    """The training device of ``cfg`` (this rank's GPU in a multi-process run, whose batch must split
    evenly); an unusable one is a usage error naming ``source`` (the preset or --device)."""
    try:
        check_batch_split(cfg.train.batch_size, collectives.world_size())
        return resolve_device(collectives.local_device(cfg.train.device))
    except UsageError as exc:
        raise UsageError(f"{source}: {exc}") from None


def check_batch_split(batch_size: int, processes: int) -> None:
    """A multi-process run splits each batch evenly over its processes."""
    if processes > 1 and batch_size % processes:
        raise UsageError(f"train.batch_size = {batch_size} does not split evenly over {processes} processes; "
                         f"use a multiple of {processes} (each process trains on batch_size / {processes} rows "
                         f"of every batch)")
