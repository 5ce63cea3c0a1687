"""One writer per run: an exclusive ``flock`` on ``<run_dir>/.lock``.

``flock`` locks belong to the open file and vanish when the process dies, however it dies, so
a crash never leaves a run locked (unlike a pid file). The holder writes its pid and host into
the file only so that the refusal can say who holds it. POSIX only (Linux, macOS); on Linux
NFS mounts ``flock`` is emulated with byte-range locks and still works.

Stale locks: the file's content never decides anything. A ``.lock`` left behind by a process
that died (SIGKILL, power loss) names a pid that may since have been reused, or a host that is
down; neither matters, because the kernel dropped the ``flock`` with the process and the next
``acquire`` takes it and rewrites the record. A live holder on another host of a shared NFS
mount still blocks (the byte-range lock is held by the server's lock manager); a dead host's
lock is released by the server's lock recovery (NFSv4: when the client's lease expires, about
90 s; NFSv3: when the client reboots), so nobody has to guess from a pid whether a remote
process is alive. ``.lock`` is opened with ``O_NOFOLLOW``: a symbolic link planted there is
refused rather than followed (the holder record would be written through it, outside the run
directory).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from engine.errors import RunLocked, RunNotFound
from engine.faults import fault_point
from engine.store.atomic import naming
from engine.store.paths import LOCK_FILE, RunPaths


def _read_holder(fd: int) -> dict:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (ValueError, RecursionError):   # a damaged lock file says nothing about its holder
        return {}
    return info if isinstance(info, dict) else {}


def _holder(fd: int, wait_s: float = 0.5) -> str:
    """'pid N on host H' from the lock file, as well as it can be read. A holder that has just taken
    the lock writes its record a moment later, so an empty record is read again for up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    info = _read_holder(fd)
    while "pid" not in info and time.monotonic() < deadline:
        time.sleep(0.01)
        info = _read_holder(fd)
    if "pid" not in info:
        return "another process (its pid is not recorded yet)"
    return f"process {info['pid']} on host {info.get('host', '?')}"


class RunLock:
    """Context manager holding the run directory's exclusive lock; raises :class:`RunLocked`."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = RunPaths(run_dir).lock
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Take the lock now, without waiting; raises :class:`RunLocked` if it is taken."""
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except FileNotFoundError:
            raise RunNotFound(f"run directory {self.run_dir} does not exist") from None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise RunLocked(f"run {self.run_dir} cannot be locked: {self.path} is a symbolic link, which mmbal "
                            f"does not follow (it would write outside the run directory); remove it") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunLocked(
                f"run {self.run_dir} is in use by {holder}; wait for it to end (or stop it) "
                f"before resuming or writing to this run"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            fault_point(LOCK_FILE, self.path)
            os.pwrite(fd, (json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n").encode(), 0)
        except OSError as exc:  # disk full: give the lock back and name the file
            os.close(fd)
            raise naming(exc, self.path)
        self._fd = fd
        return self

    def release(self) -> None:
        """Clear the holder record and drop the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
