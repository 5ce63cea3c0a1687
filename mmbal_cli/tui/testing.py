"""Helpers for driving the dashboard headless (tests, documentation captures).

Textual draws a change on its next frame, a moment after the state changed, and a busy machine
makes that moment longer; these helpers wait for what is on the screen instead of sleeping a
fixed time. :func:`live_run` makes a run directory that looks like one being trained by this
process (its ``status.json`` says running and names this live pid), with an open writer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from engine.store import CONFIG_JSON, RUN_JSON, MetricsWriter, RunPaths, create_run_dir, write_status

if TYPE_CHECKING:
    from .app import DashboardApp


async def settled(pilot, app: DashboardApp, timeout: float = 30.0) -> str:
    """Wait until the dashboard shows its run and the screen stopped changing; the screen text."""
    deadline = time.monotonic() + timeout
    while not (app.dashboard.model.loaded and app.dashboard.model.run_id in app.export_text()):
        if time.monotonic() > deadline:
            raise TimeoutError("the dashboard never showed the run")
        await pilot.pause(0.05)
    return await stable(pilot, app, deadline - time.monotonic())


async def stable(pilot, app: DashboardApp, timeout: float = 30.0) -> str:
    """Wait until two screen texts 0.1 s apart are the same; that text."""
    deadline = time.monotonic() + timeout
    previous = None
    while (text := app.export_text()) != previous:
        if time.monotonic() > deadline:
            raise TimeoutError("the screen kept changing")
        previous = text
        await pilot.pause(0.1)
    return text


async def shows(pilot, app: DashboardApp, text: str, timeout: float = 20.0) -> str:
    """Wait until ``text`` is on the screen; the screen text (TimeoutError shows the screen)."""
    deadline = time.monotonic() + timeout
    while text not in (screen := app.export_text()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} never appeared on the screen:\n{screen}")
        await pilot.pause(0.05)
    return screen


def live_run(runs_dir: Path, name: str = "live-run", run_id: str = "live0001",
             modalities: Sequence[str] = ("audio", "image"), epochs: int = 3) -> tuple[Path, MetricsWriter]:
    """A run directory "being trained" by this process, its header written; the open writer."""
    info = {"run_id": run_id, "name": name, "method": "joint", "dataset": "toy", "device": "cpu",
            "modalities": list(modalities)}
    config = {"modalities": {m: {} for m in modalities}, "method": {"name": "joint"}, "train": {"epochs": epochs}}
    run_dir = create_run_dir(runs_dir, name, run_id,
                             {RUN_JSON: json.dumps(info).encode(), CONFIG_JSON: json.dumps(config).encode()})
    write_status(run_dir, "running", step=0, epoch=0, heartbeat_interval=5.0)
    writer = MetricsWriter(RunPaths(run_dir).metrics)
    writer.header(run_id, name=name, method="joint", modalities=list(modalities))
    return run_dir, writer
