"""Starting and resuming runs: preset -> data -> model -> method -> trainer, recorded in a run directory.

Order matters for "nothing lost on bad input": the preset is validated, the data read and the
device checked *before* the run directory exists; the directory then appears complete in one
rename, is locked for the whole run, and every file in it is replaced atomically or appended
one complete line at a time.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import torch

from . import __version__
from .config import RunConfig, apply_overrides, load_preset, locked_differences, parse_toml, resolve
from .data import TensorData, load_data
from .errors import MmbalError, PresetError, ResumeRefused
from .methods import METHODS, MethodContext
from .models import build_model
from .store import (Heartbeat, MetricsWriter, RunLock, atomic_write_json, atomic_write_with, create_run_dir,
                    default_runs_dir, new_run_id, read_json, read_metrics, resolve_run, write_summary)
from .train.checkpoint import CheckpointDamaged, load_checkpoint, seed_everything, with_checksum
from .train.device import describe_device, resolve_device
from .train.trainer import Interrupted, Position, Trainer

CHECKPOINTS = "checkpoints"


class Reporter(Protocol):
    """What a front end (the CLI's progress display) is told while a run trains."""

    def start(self, info: dict) -> None: ...
    def progress(self, pos: Position, n_batches: int, epochs: int, values: dict[str, float] | None) -> None: ...
    def epoch(self, epoch: int, epochs: int, values: dict[str, float]) -> None: ...
    def end(self, summary: dict) -> None: ...


class NullReporter:
    def start(self, info): pass
    def progress(self, pos, n_batches, epochs, values): pass
    def epoch(self, epoch, epochs, values): pass
    def end(self, summary): pass


@dataclass
class RunResult:
    run_dir: Path
    run_id: str
    state: str  # finished | interrupted
    summary: dict


class RunRecorder:
    """The trainer's :class:`~engine.train.trainer.Recorder` over a run directory."""

    def __init__(self, run_dir: Path, writer: MetricsWriter, heartbeat: Heartbeat, reporter: Reporter,
                 epochs: int, summary_base: dict):
        self.run_dir = run_dir
        self.writer = writer
        self.heartbeat = heartbeat
        self.reporter = reporter
        self.epochs = epochs
        self.summary_base = summary_base
        self.latest: dict[str, float] = {}
        self.epoch_times: list[float] = []
        self._epoch_started = time.perf_counter()

    def metrics(self, step, epoch, split, values):
        if not values:
            return
        self.writer.metrics(step, epoch, split, values, seg=self.summary_base["segments"] - 1)
        self.latest.update(values)
        if split == "val":
            self.epoch_times.append(time.perf_counter() - self._epoch_started)
            self._epoch_started = time.perf_counter()
            self.reporter.epoch(int(epoch), self.epochs, values)

    def event(self, name, step, **fields):
        self.writer.event(name, step, **fields)

    def save_checkpoint(self, state, kind):
        """Atomically write ``checkpoints/<kind>.pt`` with a checksum; the last two "last" ones are kept
        (``last.pt`` and ``previous.pt``) so a damaged newest file still leaves a good one."""
        state["metrics_offset"] = self.writer.offset()
        with_checksum(state)
        path = self.run_dir / CHECKPOINTS / f"{kind}.pt"
        self.writer.flush_to_disk()
        if kind == "last" and path.exists():
            os.replace(path, path.with_name("previous.pt"))
        atomic_write_with(path, lambda f: torch.save(state, f))
        if kind == "last":
            pos = state["position"]
            self.heartbeat.update(step=pos["step"], epoch=pos["epoch"])
            self.writer.event("checkpoint", pos["step"], path=f"{CHECKPOINTS}/{kind}.pt", epoch=pos["epoch"])
            self.write_summary("running", pos, state["best"])

    def progress(self, pos, n_batches, values):
        self.heartbeat.update(step=pos.step, epoch=pos.epoch)
        self.reporter.progress(pos, n_batches, self.epochs, values)

    def write_summary(self, status: str, pos: dict, best: dict, test: dict | None = None) -> dict:
        summary = dict(self.summary_base)
        summary.update(status=status, steps=pos["step"], epochs=pos["epoch"],
                       updated=_now(), final=dict(self.latest),
                       best={**best.get("metrics", {}), **(test or {})},
                       selected={"metric": summary["select_metric"], "value": best.get("value"),
                                 "epoch": best.get("epoch"), "step": best.get("step")},
                       time_per_epoch_s=(sum(self.epoch_times) / len(self.epoch_times)) if self.epoch_times else None,
                       peak_memory_bytes=_peak_memory())
        if test is not None:
            summary["test"] = dict(test)
        write_summary(self.run_dir, summary)
        return summary


# -- building the parts -------------------------------------------------------------------------
def build_parts(cfg: RunConfig, device: torch.device, data: TensorData | None = None, source: str = "preset"):
    """Data, model and method for ``cfg`` (seeded, so the same config builds the same model).

    A model the data cannot feed (an encoder given a shape it does not take) is a preset error
    naming ``source``.
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if data is None:
        data = load_data(cfg.data, cfg.columns, cfg.seed, Path(cfg.base_dir), device)
    seed_everything(cfg.seed)
    try:
        model = build_model(cfg.model, data.shapes, data.n_classes).to(device)
    except PresetError as exc:
        raise PresetError(source, exc.problems) from None
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _peak_memory() -> int | None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    try:
        import resource
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return None


@contextmanager
def _stop_on_signals(trainer: Trainer):
    """SIGINT/SIGTERM ask the trainer to checkpoint and stop at the next batch; a second one stops now."""
    def handler(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not in the main thread
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# -- start and resume ---------------------------------------------------------------------------
def start_run(preset: str | Path, overrides: list[str] = (), runs_dir: str | Path | None = None,
              name: str | None = None, device: str | None = None, reporter: Reporter | None = None,
              on_created=None) -> RunResult:
    """``mmbal run``: validate everything, create the run directory, train to the end."""
    overrides = list(overrides) + ([f'train.device="{device}"'] if device else [])
    cfg, preset_text = load_preset(preset, overrides)
    dev = resolve_device(cfg.train.device)
    data = load_data(cfg.data, cfg.columns, cfg.seed, Path(cfg.base_dir), dev)
    runs_dir = default_runs_dir(runs_dir)
    run_id = new_run_id()
    run_name = name or (cfg.name if cfg.method_name in cfg.name else f"{cfg.name}-{cfg.method_name}")
    run_info = {
        "schema": 1, "run_id": run_id, "name": run_name, "created": _now(), "method": cfg.method_name,
        "dataset": data.name, "preset": str(Path(preset).resolve()), "overrides": overrides,
        "base_dir": cfg.base_dir, "host": socket.gethostname(), "mmbal": __version__,
        "torch": torch.__version__, "python": platform.python_version(),
        "device": describe_device(dev), "exactness": "bitwise" if dev.type == "cpu" else "statistical",
        "modalities": cfg.modalities, "classes": data.classes,
    }
    files = {"run.json": _json_bytes(run_info), "preset.toml": preset_text.encode(),
             "config.json": _json_bytes(cfg.to_dict())}
    data, model, method = build_parts(cfg, dev, data, source=str(preset))
    runs_dir.mkdir(parents=True, exist_ok=True)
    run_dir = create_run_dir(runs_dir, run_name, run_id, files)
    if on_created:
        on_created(run_dir, run_id, run_info)
    with RunLock(run_dir):
        return _train(run_dir, run_info, cfg, dev, data, model, method, reporter or NullReporter(),
                      checkpoint=None, segment=1)


def resume_run(ref: str, overrides: list[str] = (), runs_dir: str | Path | None = None,
               reporter: Reporter | None = None, on_found=None) -> RunResult:
    """``mmbal resume``: continue a run from ``checkpoints/last.pt`` (locked keys may not change)."""
    runs_dir = default_runs_dir(runs_dir)
    run_dir = resolve_run(runs_dir, ref)
    with RunLock(run_dir):
        run_info = read_json(run_dir / "run.json")
        old_config = read_json(run_dir / "config.json")
        all_overrides = list(run_info.get("overrides", [])) + list(overrides)
        raw = parse_toml((run_dir / "preset.toml").read_text(encoding="utf-8"), str(run_dir / "preset.toml"))
        cfg = resolve(apply_overrides(raw, all_overrides), str(run_dir / "preset.toml"),
                      Path(run_info["base_dir"]), default_name=run_info["name"])
        diffs = locked_differences(old_config, cfg.to_dict())
        if diffs:
            raise ResumeRefused(f"resume of {run_dir} refused: these locked keys would change "
                                f"(start a new run with `mmbal run` instead):\n  " + "\n  ".join(diffs))
        dev = resolve_device(cfg.train.device)
        state, warnings = _newest_good_checkpoint(run_dir, dev)
        done = state["position"]["epoch"]
        if state["position"]["batch"] == 0 and done >= cfg.train.epochs:
            raise ResumeRefused(f"{run_dir} has already trained {done} of train.epochs = {cfg.train.epochs}; "
                                f"to train longer pass --set train.epochs=N with N > {done}")
        if done > cfg.train.epochs:
            raise ResumeRefused(f"train.epochs = {cfg.train.epochs} is below the {done} epochs already trained")
        best = _best_checkpoint(run_dir, dev, state, warnings)
        if on_found:
            on_found(run_dir, run_info)
        for warning in warnings:
            if reporter is not None and hasattr(reporter, "warn"):
                reporter.warn(warning)
        data, model, method = build_parts(cfg, dev, source=str(run_dir / "preset.toml"))
        run_info["overrides"] = all_overrides
        run_info["segments"] = int(run_info.get("segments", 1)) + 1
        run_info["resumed"] = list(run_info.get("resumed", [])) + [{"at": _now(), "step": state["position"]["step"]}]
        atomic_write_json(run_dir / "run.json", run_info)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
        return _train(run_dir, run_info, cfg, dev, data, model, method, reporter or NullReporter(),
                      checkpoint=(state, best), segment=run_info["segments"])


def _train(run_dir: Path, run_info: dict, cfg: RunConfig, dev: torch.device, data, model, method,
           reporter: Reporter, checkpoint, segment: int) -> RunResult:
    pos = checkpoint[0]["position"] if checkpoint else {"step": 0, "epoch": 0}
    heartbeat = Heartbeat(run_dir, state="running", step=pos["step"], epoch=pos["epoch"], started=_now())
    summary_base = {"run_id": run_info["run_id"], "name": run_info["name"], "method": cfg.method_name,
                    "dataset": data.name, "created": run_info["created"], "device": run_info["device"],
                    "torch": torch.__version__, "mmbal": __version__, "config_hash": cfg.hash(),
                    "modalities": cfg.modalities, "select_metric": cfg.train.select_metric, "segments": segment}
    started = time.time()
    with MetricsWriter(run_dir / "metrics.jsonl") as writer:
        recorder = RunRecorder(run_dir, writer, heartbeat, reporter, cfg.train.epochs, summary_base)
        trainer = Trainer(cfg.train, data, model, method, dev, cfg.seed, recorder, cfg.monitor)
        heartbeat.update(epochs=cfg.train.epochs, steps_per_epoch=trainer.steps_per_epoch)
        if checkpoint is None:
            writer.header(run_info["run_id"], name=run_info["name"], method=cfg.method_name,
                          modalities=cfg.modalities, epochs=cfg.train.epochs,
                          steps_per_epoch=trainer.steps_per_epoch)
        else:
            state, best = checkpoint
            trainer.load_state_dict(state, best)
            recorder.latest = _latest_values(run_dir)
            writer.resume(from_step=trainer.pos.step, seg=segment - 1)
        reporter.start({"run_dir": str(run_dir), "run_id": run_info["run_id"], "name": run_info["name"],
                        "device": run_info["device"], "epochs": cfg.train.epochs,
                        "steps_per_epoch": trainer.steps_per_epoch, "position": trainer.pos,
                        "n_train": trainer.n_train, "method": cfg.method_name})
        try:
            with _stop_on_signals(trainer):
                test = trainer.fit()
        except Interrupted:
            writer.event("interrupted", trainer.pos.step, epoch=trainer.pos.epoch, batch=trainer.pos.batch)
            writer.flush_to_disk()
            heartbeat.stop("interrupted", step=trainer.pos.step, epoch=trainer.pos.epoch)
            summary = recorder.write_summary("interrupted", vars(trainer.pos), _best_dict(trainer))
            return RunResult(run_dir, run_info["run_id"], "interrupted", summary)
        except KeyboardInterrupt:
            heartbeat.stop("interrupted", step=trainer.pos.step, epoch=trainer.pos.epoch,
                           message="stopped by a second interrupt, without a checkpoint at this step")
            raise
        except BaseException as exc:
            message = str(exc) if isinstance(exc, MmbalError) else f"{type(exc).__name__}: {exc}"
            heartbeat.stop("failed", step=trainer.pos.step, epoch=trainer.pos.epoch, message=message)
            raise
        recorder.summary_base["duration_s"] = round(time.time() - started, 3)
        recorder.summary_base["ended"] = _now()
        summary = recorder.write_summary("finished", vars(trainer.pos), _best_dict(trainer), test)
        writer.event("finished", trainer.pos.step, epoch=trainer.pos.epoch)
        writer.flush_to_disk()
        heartbeat.stop("finished", step=trainer.pos.step, epoch=trainer.pos.epoch)
    reporter.end(summary)
    return RunResult(run_dir, run_info["run_id"], "finished", summary)


def _best_checkpoint(run_dir: Path, device: torch.device, state: dict, warnings: list[str]) -> dict | None:
    """The best-on-val weights, if they are intact and not newer than the resume point."""
    path = run_dir / CHECKPOINTS / "best.pt"
    try:
        best = load_checkpoint(path, map_location=device)
    except FileNotFoundError:
        return None
    except CheckpointDamaged as exc:
        warnings.append(f"checkpoint {exc}; the best weights will be re-selected from here on")
        state["best"] = {"value": None, "epoch": -1, "step": -1, "metrics": {}}
        return None
    if best["step"] > state["position"]["step"]:  # resuming from previous.pt: best.pt is from the lost epoch
        state["best"] = {"value": None, "epoch": -1, "step": -1, "metrics": {}}
        warnings.append("checkpoints/best.pt is newer than the checkpoint resumed from; the best weights will be "
                        "re-selected from here on")
        return None
    return best


def _newest_good_checkpoint(run_dir: Path, device: torch.device) -> tuple[dict, list[str]]:
    """``last.pt``, or ``previous.pt`` when the newest one is damaged or missing; with warnings."""
    warnings, damaged = [], []
    for name in ("last.pt", "previous.pt"):
        path = run_dir / CHECKPOINTS / name
        try:
            state = load_checkpoint(path, map_location=device)
        except FileNotFoundError:
            continue
        except CheckpointDamaged as exc:
            damaged.append(str(exc))
            warnings.append(f"checkpoint {exc}; falling back to the previous one")
            continue
        return state, warnings
    if damaged:
        raise ResumeRefused(f"{run_dir} cannot be resumed: every checkpoint is damaged:\n  " + "\n  ".join(damaged))
    raise ResumeRefused(f"{run_dir} has no checkpoint (checkpoints/last.pt is missing): the run stopped before "
                        "its first epoch ended; start it again with `mmbal run`")


def _best_dict(trainer: Trainer) -> dict:
    b = trainer.best
    return {"value": b.value, "epoch": b.epoch, "step": b.step, "metrics": b.metrics}


def _latest_values(run_dir: Path) -> dict[str, float]:
    return read_metrics(run_dir / "metrics.jsonl").latest()


def _json_bytes(obj: dict) -> bytes:
    import json
    return (json.dumps(obj, indent=2) + "\n").encode()
