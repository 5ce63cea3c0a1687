"""The ranks other than 0 of a multi-process run: they train the same loop and write nothing.

Rank 0 makes every check and decision that involves the run directory, then hands the outcome to
the others (:class:`Handoff`); see :mod:`engine.train.data_parallel` for the sharding and gradient averaging.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import collectives
from ..config import RunConfig, apply_overrides, parse_toml, resolve
from ..errors import MmbalError
from ..store import RunPaths, newest_good_checkpoint
from ..train.trainer import Interrupted, Trainer
from .kept import RunKept
from .parts import build_parts, training_device
from .recorder import FollowerRecorder
from .recovery import best_checkpoint
from .reporting import RunResult
from .signals import stop_on_signals


class Handoff:
    """Rank 0 hands what the other ranks need (the run directory, resolved overrides) to them once,
    after the checks only it makes; an error before that is handed over instead, so that every rank
    raises rather than waits. In a single process it does nothing."""

    def __init__(self):
        self.sent = False

    def __enter__(self) -> "Handoff":
        return self

    def send(self, **info) -> None:
        if collectives.is_distributed():
            collectives.broadcast_object({"ok": info})
        self.sent = True

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is not None and not self.sent and collectives.is_distributed():
            self.sent = True
            code = exc.exit_code if isinstance(exc, MmbalError) else 1
            collectives.broadcast_object({"error": str(exc) if isinstance(exc, MmbalError) else
                                   f"{type(exc).__name__}: {exc}", "code": code})
        return False

    @staticmethod
    def receive() -> dict:
        """What rank 0 sent; rank 0's error raised here as :class:`OtherRankFailed`."""
        message = collectives.broadcast_object()
        if "error" in message:
            raise OtherRankFailed(message["error"], message["code"])
        return message["ok"]


class OtherRankFailed(MmbalError):
    """Rank 0 of a multi-process run failed before training (its error is printed by rank 0)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.exit_code = code


def follow(info: dict, cfg: RunConfig, dev: torch.device, data, model, method, checkpoint) -> RunResult:
    """Train as one of the other ranks: the same loop as rank 0, writing nothing."""
    recorder = FollowerRecorder(RunKept(Path(info["run_dir"]), write=False))
    trainer = Trainer(cfg.train, data, model, method, dev, cfg.seed, recorder, cfg.monitor)
    if checkpoint is not None:
        trainer.load_state_dict(*checkpoint)
    run_dir, run_id = Path(info["run_dir"]), info["run_id"]
    try:
        with stop_on_signals(trainer):
            trainer.fit()
    except Interrupted:
        return RunResult(run_dir, run_id, "interrupted", {})
    return RunResult(run_dir, run_id, "finished", {})


def resume_follower() -> RunResult:
    """``resume_run`` on a rank other than 0: the configuration and checkpoints rank 0 resolved."""
    info = Handoff.receive()
    run_dir = Path(info["run_dir"])
    paths = RunPaths(run_dir)
    preset = paths.preset_toml
    raw = parse_toml(preset.read_text(encoding="utf-8"), str(preset))
    cfg = resolve(apply_overrides(raw, info["overrides"]), str(preset), Path(info["base_dir"]),
                  default_name=info["name"])
    dev = training_device(cfg, str(preset))
    state, warnings, _ = newest_good_checkpoint(paths, dev)  # None: rank 0 restarts from step 0
    best = best_checkpoint(run_dir, dev, state, warnings) if state is not None else None
    data, model, method = build_parts(cfg, dev, source=str(preset), data_mode=info["data_mode"])
    return follow(info, cfg, dev, data, model, method, checkpoint=(state, best) if state is not None else None)
