"""Runs being started: a ``mmbal run`` announces itself in the runs directory before it reads its data
(which can take seconds), so that ``mmbal watch NAME`` started right after it waits for *this* run
instead of attaching to an older run of the same name, or to the previous latest run.

An announcement is ``<runs-dir>/.starting/<pid>.json`` (``name``, ``pid``, ``host``, ``since``),
removed once the run directory exists or the start failed; one whose process is gone is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

from .atomic import atomic_write_json
from .status import pid_alive

STARTING_DIR = ".starting"


def _folder(runs_dir: str | os.PathLike) -> Path:
    return Path(runs_dir) / STARTING_DIR


@contextlib.contextmanager
def announce_start(runs_dir: str | os.PathLike, name: str | None) -> Iterator[Callable[[], None]]:
    """Announce a run named ``name`` (None: not known yet) starting in ``runs_dir`` while the block runs; the block calls the
    function it is given once the run directory exists, to withdraw the announcement early. It never
    fails the run (a runs directory that cannot take the file only loses the announcement); a runs
    directory that does not exist yet is not created (no older run can be mistaken for this one there),
    and the ``.starting`` folder is removed again when left empty (a refused start leaves nothing behind)."""
    folder = _folder(runs_dir)
    made = [folder] if not folder.exists() else []
    path: Path | None = folder / f"{os.getpid()}.json"
    try:
        if not Path(runs_dir).is_dir():   # a first run: there is no older run to mistake for it
            raise FileNotFoundError(runs_dir)
        folder.mkdir(exist_ok=True)
        atomic_write_json(path, {"name": name, "pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.time()})
    except OSError:
        path = None

    def withdraw() -> None:
        nonlocal path
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()
            path = None
        for p in reversed(made):
            with contextlib.suppress(OSError):
                p.rmdir()   # only when empty
    try:
        yield withdraw
    finally:
        withdraw()


def starting_runs(runs_dir: str | os.PathLike) -> list[dict]:
    """The announcements of runs still starting (their process alive on this host), oldest first."""
    found = []
    try:
        entries = list(_folder(runs_dir).glob("*.json"))
    except OSError:
        return []
    for entry in entries:
        try:
            info = json.loads(entry.read_text())
        except (OSError, ValueError, RecursionError):
            continue
        if not isinstance(info, dict) or not isinstance(info.get("pid"), int):
            continue
        if info.get("host") == socket.gethostname() and not pid_alive(info["pid"]):
            continue
        found.append(info)
    return sorted(found, key=lambda i: i.get("since", 0))


def being_started(runs_dir: str | os.PathLike, ref: str) -> dict | None:
    """The newest announcement ``ref`` means: one of a run named ``ref``, or for ``latest`` any (a run
    being started is newer than every run that exists; its name may not be known yet)."""
    found = [s for s in starting_runs(runs_dir) if ref == "latest" or s.get("name") == ref]
    return found[-1] if found else None


def wait_until_started(runs_dir: str | os.PathLike, info: dict, timeout: float = 300.0, poll: float = 0.2) -> bool:
    """Wait while the announced start ``info`` is under way (its file is there, its process alive);
    False when ``timeout`` seconds passed first."""
    path = _folder(runs_dir) / f"{info['pid']}.json"
    deadline = time.monotonic() + timeout
    while path.exists() and (info.get("host") != socket.gethostname() or pid_alive(info["pid"])):
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def wait_for_announcement(runs_dir: str | os.PathLike, ref: str, timeout: float, poll: float = 0.1) -> dict | None:
    """The announcement of a run named ``ref`` once one appears within ``timeout`` seconds, else None:
    a ``mmbal run --name ref`` started a moment ago on a busy machine may not have announced itself
    yet (under a load of 10 on two cores, its Python start takes about two seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        info = being_started(runs_dir, ref)
        if info is not None or time.monotonic() >= deadline:
            return info
        time.sleep(poll)
