"""Starting and resuming runs (``mmbal run`` / ``mmbal resume``): preset -> data -> model -> method -> trainer, recorded in a run directory.

Order matters for "nothing lost on bad input": the preset is validated, the data read and the
device checked *before* the run directory exists; the directory then appears complete in one
rename, is locked for the whole run, and every file in it is replaced atomically or appended
one complete line at a time.

A write that fails (disk full, permission denied, read-only file system) stops the run with a
:class:`~engine.errors.StorageError` (exit 1, see :mod:`engine.store.write_errors`): the status ends
``failed`` with the reason when ``status.json`` can still be written, the last good checkpoint is
untouched, and ``mmbal resume`` continues once the cause is fixed. A failure while the directory
of a new run is being made leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import platform
import socket
import time
from pathlib import Path

import torch

from .. import __version__, collectives
from ..data.dataset import absent_counts
from ..data.fingerprint import data_fingerprint, loaded_counts
from ..data.split import SPLIT_NAMES
from ..config import RunConfig, apply_overrides, command_line_paths, load_preset, locked_differences, parse_toml, resolve
from ..errors import MmbalError, PresetError, ResumeRefused
from ..store import (CONFIG_JSON, PRESET_TOML, RUN_JSON, Heartbeat, MetricsWriter, RunLock, RunPaths,
                     atomic_write_json, create_run_dir, default_runs_dir, new_run_id, newest_good_checkpoint,
                     read_metrics, resolve_run, usable_runs_dir)
from ..store.jsonl import WINDOW_BYTES
from ..store.layout import runs_named
from ..store.links import refuse_linked_run_files
from ..store.meta import read_meta
from ..store.starting import announce_start
from ..store.names import check_run_name, run_name_problem, shown
from ..store.write_errors import creation_failed, failed_write
from ..train.device import describe_device
from ..train.early_stop import EarlyStop
from ..train.trainer import Interrupted, Trainer
from .failures import LiveRun, stop_quietly, training_write_failure, write_failures
from .parts import build_parts, load_run_data, placement, training_device
from .ranks import Handoff, follow, resume_follower
from .recorder import RunRecorder, now
from .recovery import best_checkpoint, recorded_finished, tidy_after_crash
from .resume_checks import FINGERPRINT_KEY, check_checkpoint_fits, check_data, read_run_files
from .reporting import NullReporter, ProgressReporter, RunResult
from .signals import stop_on_signals


def _run_name(name: str | None, cfg: RunConfig, preset: str | Path) -> str:
    """``--name`` (checked by the caller), else the preset's ``name`` plus the method's unless it is in
    it: a name that cannot label a run (see :mod:`engine.store.names`) is a preset error (exit 2)."""
    if name is not None:
        return name
    derived = cfg.name if cfg.method_name in cfg.name else f"{cfg.name}-{cfg.method_name}"
    alone = getattr(cfg.method, "modality", None) if cfg.method_name == "unimodal" else None
    if alone and alone not in derived:
        derived = f"{derived}-{alone}"
    problem = run_name_problem(derived)
    if problem is not None:
        raise PresetError(str(preset), [f"name: {shown(cfg.name)} cannot name a run: {problem} "
                                        f"(change it, or pass --name)"])
    return derived


def start_run(preset: str | Path, overrides: list[str] = (), runs_dir: str | Path | None = None,
              name: str | None = None, device: str | None = None, reporter: ProgressReporter | None = None,
              on_created=None) -> RunResult:
    """``mmbal run``: validate everything, create the run directory, train to the end."""
    if name is not None:
        check_run_name(name)
    overrides = command_line_paths(list(overrides)) + ([f'train.device="{device}"'] if device else [])
    runs_dir = usable_runs_dir(default_runs_dir(runs_dir))
    cfg, preset_text = load_preset(preset, overrides)
    run_name = _run_name(name, cfg, preset)
    starting = announce_start(runs_dir, run_name) if collectives.is_main() else contextlib.nullcontext(lambda: None)
    with starting as started:
        return _start(preset, cfg, preset_text, overrides, runs_dir, run_name, device, reporter, on_created, started)


def _start(preset, cfg: RunConfig, preset_text: str, overrides: list[str], runs_dir: Path, run_name: str,
           device: str | None, reporter, on_created, started) -> RunResult:
    """The rest of :func:`start_run`, while the start is announced (``started()`` withdraws it)."""
    dev = training_device(cfg, f"--device {device}" if device else str(preset))
    data = load_run_data(cfg, dev, str(preset))
    run_id = new_run_id()
    run_info = {
        "schema": 1, "run_id": run_id, "name": run_name, "created": now(), "method": cfg.method_name,
        "dataset": data.name, "preset": str(Path(preset).resolve()), "overrides": overrides,
        "base_dir": cfg.base_dir, "host": socket.gethostname(), "mmbal": __version__,
        "torch": torch.__version__, "python": platform.python_version(),
        "device": describe_device(dev), "exactness": "bitwise" if dev.type == "cpu" else "statistical",
        "modalities": cfg.modalities, "classes": data.classes, "data_mode": placement(data),
        FINGERPRINT_KEY: data_fingerprint(cfg.to_dict(), data),
    }
    data, model, method = build_parts(cfg, dev, data, source=str(preset))  # refuses a model too large for dev
    estimate = getattr(model, "memory_estimate", None)
    run_info["model_memory"] = estimate.to_dict() if estimate is not None else None
    files = {RUN_JSON: _json_bytes(run_info), PRESET_TOML: preset_text.encode(),
             CONFIG_JSON: _json_bytes(cfg.to_dict())}
    if not collectives.is_main():  # another rank of a multi-process run: rank 0 makes the run directory
        return follow(Handoff.receive(), cfg, dev, data, model, method, checkpoint=None)
    with Handoff() as handoff:
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
            run_dir = create_run_dir(runs_dir, run_name, run_id, files)
        except OSError as exc:
            error = failed_write(exc, runs_dir)
            if error is None:
                raise
            raise creation_failed(error, runs_dir, str(preset)) from None
        started()
        if on_created:
            on_created(run_dir, run_id, run_info)
        _warn_same_name(runs_dir, run_dir, run_name, run_id, reporter)
        _warn_empty_classes(data, reporter)
        handoff.send(run_dir=str(run_dir), run_id=run_id)
    with write_failures(run_dir, run_id, str(preset)), RunLock(run_dir):
        return _train(run_dir, run_info, cfg, dev, data, model, method, reporter or NullReporter(),
                      checkpoint=None, segment=1)


def _warn_same_name(runs_dir: Path, run_dir: Path, name: str, run_id: str, reporter) -> None:
    """Warn when another run in ``runs_dir`` has this run's name: looking it up by name is then ambiguous."""
    others = [p for p in runs_named(runs_dir, name) if p != run_dir]
    if others and reporter is not None and hasattr(reporter, "warn"):
        reporter.warn(f"{len(others)} other run(s) in {runs_dir} are also named '{name}' (newest: {others[0].name}), "
                      f"so `mmbal resume {name}` and other lookups by name are ambiguous; refer to this run by its "
                      f"id {run_id}, or pass --name to give runs their own names")


def empty_classes(data) -> list[str]:
    """One phrase per class that some split has no row of (``'virginica' (2 rows): none in val, test``)."""
    counts = {split: data.class_counts(split).cpu().tolist() for split in SPLIT_NAMES}
    phrases = []
    for c, name in enumerate(data.classes):
        missing = [split for split in SPLIT_NAMES if counts[split][c] == 0]
        if missing:
            rows = sum(counts[split][c] for split in SPLIT_NAMES)
            phrases.append(f"'{name}' ({rows} row{'s' * (rows != 1)}): none in {', '.join(missing)}")
    return phrases


def _warn_empty_classes(data, reporter) -> None:
    """Warn when a class has no row in some split: never trained on, or never measured in val or test."""
    phrases = empty_classes(data)
    if phrases and reporter is not None and hasattr(reporter, "warn"):
        shown = "; ".join(phrases[:5]) + (f"; and {len(phrases) - 5} more classes" if len(phrases) > 5 else "")
        count = f"1 class of {len(data.classes)} has" if len(phrases) == 1 else \
            f"{len(phrases)} classes of {len(data.classes)} have"
        reporter.warn(f"{count} no rows in a split: {shown}. A class "
                      f"without train rows is never learned; one without val or test rows is not measured there. "
                      f"Use more rows of it, larger "
                      f"data.val_fraction / data.test_fraction, or a split column that gives it rows in each split")


def resume_run(ref: str, overrides: list[str] = (), runs_dir: str | Path | None = None,
               reporter: ProgressReporter | None = None, on_found=None, allow_data_change: bool = False) -> RunResult:
    """``mmbal resume``: continue a run from ``checkpoints/last.pt`` (locked keys may not change).

    A run that died before its first checkpoint trains again from step 0 in its directory (a resume
    record at step 0 supersedes what the attempt logged). What a crash left behind is tidied first
    and reported as warnings: temporary files, a damaged checkpoint, damaged status or summary,
    bad lines in the log (:mod:`engine.run.recovery`).

    In a multi-process run rank 0 finds the run, checks it and hands the resolved overrides to the
    other ranks (or its error, which they raise too); they then read the same checkpoint files. The
    checkpoint holds global state only, so the number of processes may differ from the last segment's.

    Before it touches any file, the resume checks the run's files and that its data are those it
    started with (:mod:`engine.run.resume_checks`); a change is refused unless ``allow_data_change``.
    """
    if not collectives.is_main():
        return resume_follower()
    with Handoff() as handoff:
        return _resume_main(handoff, ref, overrides, runs_dir, reporter, on_found, allow_data_change)


def _resume_main(handoff: "Handoff", ref: str, overrides: list[str], runs_dir, reporter, on_found,
                 allow_data_change: bool = False) -> RunResult:
    runs_dir = default_runs_dir(runs_dir)
    run_dir = resolve_run(runs_dir, ref)
    paths = RunPaths(run_dir)
    preset = str(paths.preset_toml)
    with write_failures(run_dir, run_dir.name.rsplit("_", 1)[-1], None), RunLock(run_dir):
        refuse_linked_run_files(run_dir)  # a link where a run file should be: exit 3, nothing written
        files = read_run_files(run_dir)
        run_info, old_config = files.run_info, files.config
        data_check = check_data(run_dir, run_info, old_config, allow_data_change)
        all_overrides = list(run_info.get("overrides", [])) + command_line_paths(list(overrides))
        raw = parse_toml(files.preset_text, preset)
        cfg = resolve(apply_overrides(raw, all_overrides), preset,
                      Path(run_info["base_dir"]), default_name=run_info["name"])
        diffs = locked_differences(old_config, cfg.to_dict())
        if diffs:
            raise ResumeRefused(f"resume of {run_dir} refused: these locked keys would change "
                                f"(start a new run with `mmbal run` instead):\n  " + "\n  ".join(diffs))
        dev = training_device(cfg, preset)
        collected = read_meta(run_dir).get("gc")
        if isinstance(collected, dict) and collected.get("removed"):
            raise ResumeRefused(f"resume of {run_dir} refused: `mmbal gc` removed its resume checkpoints on "
                                f"{collected.get('at', '?')} ({', '.join(collected['removed'])}); its results and "
                                f"best.pt remain; start a new run with `mmbal run` to train again")
        state, warnings, damaged = newest_good_checkpoint(paths, dev)
        best = None
        if state is not None:
            done = state["position"]["epoch"]
            if state["position"]["batch"] == 0 and done >= cfg.train.epochs and recorded_finished(run_dir):
                raise ResumeRefused(f"{run_dir} has already trained {done} of train.epochs = {cfg.train.epochs}; "
                                    f"to train longer pass --set train.epochs=N with N > {done}")
            early = EarlyStop(cfg.train.early_stop, cfg.train.early_stop_min_delta)
            early.load_state_dict(state.get("early_stop"))
            if state["position"]["batch"] == 0 and early.stopped_after(done - 1) and recorded_finished(run_dir):
                raise ResumeRefused(f"{run_dir} stopped early after epoch {done}: {early.reason(cfg.train.select_metric)}; "
                                    f"to train on pass --set train.early_stop=0 or a patience above "
                                    f"{done - 1 - early.epoch}")
            if done > cfg.train.epochs:
                raise ResumeRefused(f"train.epochs = {cfg.train.epochs} is below the {done} epochs already trained")
            best = best_checkpoint(run_dir, dev, state, warnings)
        data_mode = (run_info.get("data_mode") or {}).get("mode", "resident")  # runs before streaming: resident
        data, model, method = build_parts(cfg, dev, source=preset, data_mode=data_mode)
        if state is not None and data_check.changes:
            check_checkpoint_fits(run_dir, state, model, data)
        # every check passed: from here on the resume changes the run's files
        warnings = tidy_after_crash(run_dir, state, damaged) + warnings + data_check.warnings
        handoff.send(run_dir=str(run_dir), run_id=run_info["run_id"], overrides=all_overrides,
                     base_dir=run_info["base_dir"], name=run_info["name"], data_mode=data_mode)
        if on_found:
            on_found(run_dir, run_info)
        for warning in warnings:
            if reporter is not None and hasattr(reporter, "warn"):
                reporter.warn(warning)
        run_info["overrides"] = all_overrides
        run_info["segments"] = int(run_info.get("segments", 1)) + 1
        run_info["resumed"] = list(run_info.get("resumed", [])) + [
            {"at": now(), "step": state["position"]["step"] if state is not None else 0,
             **({"data_changed": data_check.changes} if data_check.changes else {})}]
        run_info[FINGERPRINT_KEY] = {**data_check.current, **loaded_counts(data)}
        atomic_write_json(paths.run_json, run_info)
        atomic_write_json(paths.config_json, cfg.to_dict())
        return _train(run_dir, run_info, cfg, dev, data, model, method, reporter or NullReporter(),
                      checkpoint=(state, best) if state is not None else None, segment=run_info["segments"])


def _train(run_dir: Path, run_info: dict, cfg: RunConfig, dev: torch.device, data, model, method,
           reporter: ProgressReporter, checkpoint, segment: int) -> RunResult:
    """Train in ``run_dir``; a failed write of any of its files stops the run with a StorageError."""
    pos = checkpoint[0]["position"] if checkpoint else {"step": 0, "epoch": 0}
    resumed_from = None
    if checkpoint:
        resumed_from = {"name": checkpoint[0].get("loaded_from", RunPaths(run_dir).last.name),
                        "epoch": pos["epoch"], "step": pos["step"]}
    live = LiveRun({"epoch": pos["epoch"], "step": pos["step"]}, resumed_from)
    try:
        return _train_recorded(live, run_dir, run_info, cfg, dev, data, model, method, reporter, checkpoint,
                               segment)
    except Exception as exc:
        failure = training_write_failure(exc, run_dir, run_info, live)
        if failure is None:
            raise
        raise failure from None


def _train_recorded(live: LiveRun, run_dir: Path, run_info: dict, cfg: RunConfig, dev: torch.device, data, model,
                    method, reporter: ProgressReporter, checkpoint, segment: int) -> RunResult:
    pos = live.start
    heartbeat = live.heartbeat = Heartbeat(run_dir, state="running", step=pos["step"], epoch=pos["epoch"],
                                           started=now())
    summary_base = {"run_id": run_info["run_id"], "name": run_info["name"], "method": cfg.method_name,
                    "dataset": data.name, "created": run_info["created"], "device": run_info["device"],
                    "torch": torch.__version__, "mmbal": __version__, "config_hash": cfg.hash(),
                    "modalities": cfg.modalities, "select_metric": cfg.train.select_metric, "segments": segment}
    started = time.time()
    with MetricsWriter(RunPaths(run_dir).metrics) as writer:
        recorder = live.recorder = RunRecorder(run_dir, writer, heartbeat, reporter, cfg.train.epochs, summary_base)
        trainer = live.trainer = Trainer(cfg.train, data, model, method, dev, cfg.seed, recorder, cfg.monitor)
        heartbeat.update(epochs=cfg.train.epochs, steps_per_epoch=trainer.steps_per_epoch)
        if checkpoint is None:
            if segment == 1 or read_metrics(RunPaths(run_dir).metrics, WINDOW_BYTES).header() is None:
                writer.header(run_info["run_id"], name=run_info["name"], method=cfg.method_name,
                              modalities=cfg.modalities, epochs=cfg.train.epochs,
                              steps_per_epoch=trainer.steps_per_epoch, data_mode=placement(data))
            if segment > 1:  # a restart of a run that died before its first checkpoint: all logged so far is superseded
                writer.resume(from_step=0, seg=segment - 1)
        else:
            state, best = checkpoint
            trainer.load_state_dict(state, best)
            recorder.best_state = best
            recorder.latest = _latest_values(run_dir)
            writer.resume(from_step=trainer.pos.step, seg=segment - 1)
        _record_data_change(writer, run_info, segment, trainer.pos.step)
        reporter.start({"run_dir": str(run_dir), "run_id": run_info["run_id"], "name": run_info["name"],
                        "device": run_info["device"], "epochs": cfg.train.epochs,
                        "steps_per_epoch": trainer.steps_per_epoch, "position": trainer.pos,
                        "n_train": trainer.n_train, "method": cfg.method_name,
                        "modalities": list(method.trained_modalities),
                        "data": data.placement.describe() if data.placement else None,
                        "absent": absent_counts(data)})
        try:
            with stop_on_signals(trainer) as stop:
                test = trainer.fit()
        except Interrupted:
            writer.event("interrupted", trainer.pos.step, epoch=trainer.pos.epoch, batch=trainer.pos.batch,
                         signal=stop.first)
            writer.flush_to_disk()
            heartbeat.stop("interrupted", step=trainer.pos.step, epoch=trainer.pos.epoch)
            summary = recorder.write_summary("interrupted", vars(trainer.pos), _best_dict(trainer))
            return RunResult(run_dir, run_info["run_id"], "interrupted", summary, stopped_by=stop.first)
        except KeyboardInterrupt:
            stop_quietly(heartbeat, "interrupted", step=trainer.pos.step, epoch=trainer.pos.epoch,
                          message="stopped by a second interrupt, without a checkpoint at this step")
            raise
        except BaseException as exc:
            if failed_write(exc, run_dir) is None:  # a failed write is reported (and recorded) by _train
                message = str(exc) if isinstance(exc, MmbalError) else f"{type(exc).__name__}: {exc}"
                stop_quietly(heartbeat, "failed", step=trainer.pos.step, epoch=trainer.pos.epoch, message=message)
            raise
        recorder.restore_best()  # deleted since the last checkpoint: a finished run has its best.pt
        recorder.summary_base["duration_s"] = round(time.time() - started, 3)
        recorder.summary_base["ended"] = now()
        summary = recorder.write_summary("finished", vars(trainer.pos), _best_dict(trainer), test)
        writer.event("finished", trainer.pos.step, epoch=trainer.pos.epoch)
        writer.flush_to_disk()
        heartbeat.stop("finished", step=trainer.pos.step, epoch=trainer.pos.epoch)
    reporter.end(summary)
    return RunResult(run_dir, run_info["run_id"], "finished", summary)


def _record_data_change(writer: MetricsWriter, run_info: dict, segment: int, step: int) -> None:
    """A ``data_changed`` event when this segment resumed on changed data (``--allow-data-change``)."""
    changes = (run_info.get("resumed") or [{}])[-1].get("data_changed") if segment > 1 else None
    if changes:
        writer.event("data_changed", step, changes=changes)


def _best_dict(trainer: Trainer) -> dict:
    b = trainer.best
    return {"value": b.value, "epoch": b.epoch, "step": b.step, "metrics": b.metrics}


def _latest_values(run_dir: Path) -> dict[str, float]:
    """The latest value of every metric, from the log's last window (a long log is not read whole)."""
    return read_metrics(RunPaths(run_dir).metrics, WINDOW_BYTES).latest()


def _json_bytes(obj: dict) -> bytes:
    import json
    return (json.dumps(obj, indent=2) + "\n").encode()
