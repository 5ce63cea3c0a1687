"""``mmbal show``: one run in full: identity, state, configuration, results, tags and notes, files."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from ..options import RunsDirOpt
from ..output import fail, fit_lines, out_console, terminal_width


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def describe_run(run_dir) -> dict:
    """What ``show`` prints, as plain data (also its ``--json``)."""
    from engine.store import RunPaths, read_json, read_status
    from engine.store.meta import read_meta

    paths = RunPaths(run_dir)

    def load(path):
        try:
            return read_json(path)
        except (OSError, ValueError):
            return {}
    files, total = [], 0
    for p in sorted(paths.root.rglob("*")):   # one walk: the files shown, and the total with hidden ones
        if p.is_file() and not p.is_symlink():
            size = p.stat().st_size
            total += size
            if not p.name.startswith("."):
                files.append({"path": paths.relative(p), "bytes": size})
    return {"path": str(paths.root), "run": load(paths.run_json), "status": read_status(run_dir),
            "config": load(paths.config_json), "summary": load(paths.summary), "meta": read_meta(run_dir),
            "files": files, "bytes": total}


def shown_config(config: dict) -> dict:
    """The run's configuration as ``show`` lists it: without ``base_dir`` and, for a run on a data file,
    without the synthetic generator's options, which that run does not use (``--json`` keeps everything)."""
    shown = {k: v for k, v in config.items() if k != "base_dir"}
    data = shown.get("data")
    if isinstance(data, dict) and data.get("source") != "synthetic":
        shown["data"] = {k: v for k, v in data.items() if k != "synthetic"}
    return shown


def _flat(prefix: str, node, out: list[tuple[str, str]]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out.append((prefix, json.dumps(node) if not isinstance(node, str) else node))


def register(app: typer.Typer) -> None:
    @app.command("show", rich_help_panel="Runs")
    def show(run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, id prefix, name, directory or 'latest'.")],
             runs_dir: RunsDirOpt = None,
             as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
        """One run in full: identity, state, configuration, results, tags and notes, files and sizes."""
        from engine.errors import MmbalError
        from engine.store import default_runs_dir, resolve_run
        try:
            run_dir = resolve_run(default_runs_dir(runs_dir), run_ref)
        except MmbalError as exc:
            fail(exc)
        info = describe_run(run_dir)
        if as_json:
            print(json.dumps(info, indent=2, default=str))
            return
        run, status, summary, meta = info["run"], info["status"], info["summary"], info["meta"]
        say = lambda text="": out_console.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
        say(f"{run.get('name', '?')}  {run.get('run_id', '?')}  {info['path']}")
        state = status.get("effective_state", "?") + (f" ({status['reason']})" if status.get("reason") else "")
        say(f"state     {state}, epoch {status.get('epoch', '?')} of {status.get('epochs', '?')}, "
            f"step {status.get('step', '?')}")
        if status.get("message"):   # why it failed or stopped (the exception, or what the run wrote)
            say(f"{'error' if status.get('effective_state') == 'failed' else 'message':<10}{status['message']}")
        columns = terminal_width(sys.stdout)  # None into a pipe: no wrapping in logs
        for line in fit_lines("method  ", [
                f"{run.get('method', '?')} on {run.get('dataset', '?')} ({', '.join(run.get('modalities', []))})",
                f"device {run.get('device', '?')}", f"created {run.get('created', '?')}",
                f"segments {run.get('segments', 1)}"], width=columns):
            say(line)
        if meta["tags"]:
            say(f"tags      {', '.join(meta['tags'])}")
        for note in meta["notes"]:
            say(f"note      {note.get('at', '')}  {note.get('text', '')}")
        selected = summary.get("selected") or {}
        if selected:
            say(f"selected  {selected.get('metric')} {selected.get('value', float('nan')):.4f} after epoch "
                f"{int(selected.get('epoch', -1)) + 1}")
        test = summary.get("test") or {}
        if test:
            shown = [k for k in test if k.startswith("test/acc/")] + ["test/f1/fused", "imbalance"]
            items = [f"{k.removeprefix('test/')} {test[k]:.4f}" for k in shown if isinstance(test.get(k), (int, float))]
            for line in fit_lines("test    ", items, width=columns):
                say(line)
        if meta.get("gc"):
            say(f"gc        {', '.join(meta['gc'].get('removed', []))} removed {meta['gc'].get('at', '')}")
        say()
        say("config")
        rows: list[tuple[str, str]] = []
        _flat("", shown_config(info["config"]), rows)
        width = max((len(k) for k, _ in rows), default=0)
        for key, value in rows:
            say(f"  {key:<{width}}  {value}")
        say()
        say(f"files ({human_size(info['bytes'])})")
        for f in info["files"]:
            say(f"  {human_size(f['bytes']):>10}  {f['path']}")
