"""Fault injection for the reliability tests: named points where a test makes this process die or
an operation fail, so that a crash at an exact moment can be reproduced.

``MMBAL_FAULTS="<site>:<n>[:<action>][,...]"`` arms faults: the ``n``-th time (1-based) this process
reaches ``fault_point(site)`` the action happens; ``<n>+`` means the ``n``-th time and every later one
(a disk that stays full). Actions:

* ``kill`` (the default): SIGKILL to the own process, as the OOM killer, ``kill -9`` or a power cut
  would do it: no ``finally`` block, no atexit handler, no flush of Python buffers runs;
* an errno name (``ENOSPC``, ``EACCES``, ``EIO``, ``EROFS``, ...): an :class:`OSError` with that errno
  and the system's message is raised at the point, naming the file the call site passes.

The variable is read once, when this module is first imported; unset (always, outside tests) a
call of :func:`fault_point` is one global lookup and a return. Tests that stay in one process arm
faults with :func:`inject` instead. A malformed entry or an unknown action is an error at once;
:func:`hits` tells a test whether an armed site was reached at all (a fault that never fires
would let a test pass without testing anything).

Sites are free-form names; the call sites use these:

=====================  ============================================================================
``step``               after a training step's optimiser update, before the position advances
``eval``               in an evaluation, after one batch's forward pass
``checkpoint_rename``  the new ``last.pt`` complete in its temporary file, the old one already
                       linked as ``previous.pt``, the new one not yet renamed to ``last.pt`` (both
                       names then hold the old checkpoint: ``last.pt`` is never missing)
``<file name>``        an atomic write of that file (``last.pt``, ``best.pt``, ``summary.json``,
                       ``status.json``, ``run.json``, ``config.json``, ``sweep.json``, ...): its
                       temporary file written (maybe partly, still buffered), before the fsync and
                       the rename (:mod:`engine.store.atomic`). ``run.json``, ``preset.toml``,
                       ``config.json`` and ``status.json`` are also reached while a new run's
                       directory is made (a partial write there: half the file, then the error)
``run-dir``            a new run's directory complete under ``.<name>.creating``, not yet renamed
``heartbeat``          the heartbeat thread's periodic rewrite of ``status.json``
``.lock``              the run lock taken, its holder record about to be written
``metrics.jsonl``      just before a record is appended to ``metrics.jsonl`` (partial: half the line)
``metrics.fsync``      just before ``metrics.jsonl`` is fsynced
``sweep-log``          a sweep about to open a member's log file
``plot``               ``mmbal compare --plot``: the image written, before its rename
=====================  ============================================================================

A call site that can fail half-way passes ``partial``, a function doing the first half of the
operation: an injected error then happens after it (a short write, then ENOSPC).
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

ENV = "MMBAL_FAULTS"
KILL = "kill"


@dataclass(frozen=True)
class Fault:
    """Do ``action`` the ``n``-th time ``site`` is reached (and every later time if ``onwards``)."""

    site: str
    n: int
    onwards: bool = False
    action: str = KILL

    def fires(self, count: int) -> bool:
        return count == self.n or (self.onwards and count > self.n)


def parse(spec: str) -> dict[str, list[Fault]]:
    """``"step:3,last.pt:1+:ENOSPC"`` -> faults by site; ``ValueError`` naming a bad entry."""
    faults: dict[str, list[Fault]] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        parts = entry.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"{ENV}: '{entry}' is not <site>:<n>[:<action>]")
        site, count, action = parts[0], parts[1], parts[2] if len(parts) == 3 else KILL
        if not site:
            raise ValueError(f"{ENV}: '{entry}' names no site")
        onwards = count.endswith("+")
        if not count.rstrip("+").isdigit() or int(count.rstrip("+")) < 1:
            raise ValueError(f"{ENV}: '{entry}': the count must be a positive integer, optionally with '+'")
        if action != KILL and not (action.startswith("E") and isinstance(getattr(errno, action, None), int)):
            raise ValueError(f"{ENV}: '{entry}': the action must be 'kill' or an errno name such as ENOSPC")
        faults.setdefault(site, []).append(Fault(site, int(count.rstrip("+")), onwards, action))
    return faults


_lock = threading.Lock()
_faults: dict[str, list[Fault]] | None = parse(os.environ[ENV]) if os.environ.get(ENV) else None
_counts: dict[str, int] = {}


def fault_point(site: str, path: str | os.PathLike | None = None,
                partial: Callable[[], object] | None = None) -> None:
    """Mark a point where a test may inject a fault (nothing happens unless one is armed)."""
    if _faults is not None:
        _reached(site, path, partial)


def _reached(site: str, path, partial) -> None:
    faults = (_faults or {}).get(site)
    if not faults:
        return
    with _lock:
        count = _counts[site] = _counts.get(site, 0) + 1
    for fault in faults:
        if fault.fires(count):
            _act(fault, path, partial)


def _act(fault: Fault, path, partial) -> None:
    if fault.action == KILL:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
        os._exit(137)  # not reached where SIGKILL exists
    code = getattr(errno, fault.action)
    if partial is not None:
        partial()
    raise OSError(code, os.strerror(code), None if path is None else os.fspath(path))


def hits() -> dict[str, int]:
    """How often each armed site has been reached in this process (since the faults were armed)."""
    with _lock:
        return dict(_counts)


def arm_from_environment() -> None:
    """Arm the faults ``MMBAL_FAULTS`` names now (read at import otherwise): for a process forked from
    one that imported this module under another environment (a forked sweep member)."""
    global _faults, _counts
    with _lock:
        _faults = parse(os.environ[ENV]) if os.environ.get(ENV) else None
        _counts = {}


@contextmanager
def inject(spec: str) -> Iterator[None]:
    """Arm the faults of ``spec`` (the ``MMBAL_FAULTS`` syntax) in this process for a ``with`` block."""
    global _faults, _counts
    armed = parse(spec)
    with _lock:
        before = _faults, _counts
        _faults, _counts = armed, {}
    try:
        yield
    finally:
        with _lock:
            _faults, _counts = before
