"""One writer per run: an exclusive ``flock`` on ``<run_dir>/.lock``.

``flock`` locks belong to the open file and vanish when the process dies, however it dies, so
a crash never leaves a run locked (unlike a pid file). The holder writes its pid and host into
the file only so that the refusal can say who holds it. POSIX only (Linux, macOS); on Linux
NFS mounts ``flock`` is emulated with byte-range locks and still works.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

from engine.errors import RunLocked, RunNotFound

LOCK_FILE = ".lock"


def _holder(fd: int) -> str:
    """'pid N on host H' from the lock file, as well as it can be read."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process (its pid is not recorded yet)"
    return f"process {info['pid']} on host {info.get('host', '?')}"


class RunLock:
    """Context manager holding the run directory's exclusive lock; raises :class:`RunLocked`."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Take the lock now, without waiting; raises :class:`RunLocked` if it is taken."""
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            raise RunNotFound(f"run directory {self.run_dir} does not exist") from None
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
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n").encode(), 0)
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
