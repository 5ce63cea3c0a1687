"""A write that failed (disk full, permission denied, read-only file system) as the user's error.

The run store raises the ``OSError`` of the failing call with ``filename`` set to the file it was
writing (:func:`engine.store.atomic.naming`). Here it becomes a :class:`~engine.errors.StorageError`
(exit 1) with one paragraph: which file, the reason in words, what is intact (the last good
checkpoint: every checkpoint is replaced atomically, so a failed write leaves the previous one as
it was) and what to do (free space or fix permissions, then ``mmbal resume``). Only errors about
files inside the run's (or the sweep's) directory are translated: an ``OSError`` elsewhere is not
a storage problem of the run and keeps its traceback. (The error classes and their exit codes are
:mod:`engine.errors`; this module writes the message of this one.)
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from engine.errors import StorageError
from engine.store.atomic import os_error_in
from engine.store.paths import METRICS_JSONL, RunPaths

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file is larger than the file system allows",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "an input/output error (a failing disk or network file system)",
}


def failed_write(exc: BaseException, *roots: str | os.PathLike) -> OSError | None:
    """The ``OSError`` behind ``exc`` if it is about a file under one of ``roots``, else None."""
    error = os_error_in(exc)
    if error is None or error.filename is None:
        return None
    name = os.path.abspath(os.fspath(error.filename))
    for root in roots:
        root = os.path.abspath(os.fspath(root))
        if name == root or name.startswith(root.rstrip(os.sep) + os.sep):
            return error
    return None


def reason(error: OSError) -> str:
    """``the disk is full (ENOSPC)``: the reason in words with the errno's name."""
    code = errno.errorcode.get(error.errno or 0, "")
    words = _REASONS.get(error.errno) or (error.strerror or "the write failed").rstrip(".")
    return f"{words} ({code})" if code else words


def remedy(error: OSError, where: Path) -> str:
    """What the user can do about ``error`` on the file system holding ``where``."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"Free space on the file system holding {where} (`df -h {where}` shows it)"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"Make {where} and the files in it writable by you (e.g. `chmod -R u+w {where}`)"
    if error.errno == errno.EROFS:
        return f"Remount the file system holding {where} read-write"
    return f"Check the disk or file system holding {where}"


def safe_checkpoint(run_dir: Path, known: dict | None = None) -> str | None:
    """The newest checkpoint left intact, as ``checkpoints/last.pt (epoch E, step S)``, or None.

    ``known`` is the last checkpoint this process wrote or resumed from (``name``, ``epoch``,
    ``step``); its position is quoted when that file is still the newest one on disk.
    """
    for path in RunPaths(run_dir).resume_candidates:
        if path.is_file():
            where = str(path)
            if known and known.get("name") == path.name:
                where += f" (epoch {known['epoch']}, step {known['step']})"
            return where
    return None


def run_write_failed(error: OSError, run_dir: Path, run_id: str, preset: str | None = None,
                     stopped: dict | None = None, checkpoint: dict | None = None,
                     outcome: str | None = None) -> StorageError:
    """The error of a run (or a resume) that stopped because ``error``'s file could not be written.

    ``stopped`` is where training stopped (epoch, step); ``outcome`` replaces "stopped at ..."
    for a failure before training began; ``checkpoint`` is the last checkpoint known intact.
    """
    where = f" at epoch {stopped['epoch']}, step {stopped['step']}" if stopped else ""
    head = f"cannot write {error.filename}: {reason(error)}. Run {run_id} {outcome or 'stopped' + where}."
    safe = safe_checkpoint(run_dir, checkpoint)
    todo = remedy(error, run_dir)
    if safe is None:
        again = f"`mmbal run {preset}`" if preset else "`mmbal run`"
        return StorageError(f"{head} It has no checkpoint yet (one is written at the end of each epoch). {todo}, "
                            f"then `mmbal resume {run_id}` trains it again from step 0 in its directory (or start "
                            f"a new run with {again}).")
    return StorageError(f"{head} Safe: {safe} is intact (a failed write leaves the file it replaces as it was), and "
                        f"{METRICS_JSONL} keeps every record written before the failure. {todo}, then continue with "
                        f"`mmbal resume {run_id}`.")


def creation_failed(error: OSError, runs_dir: Path, preset: str) -> StorageError:
    """The error of a new run whose directory could not be created (the half-made one is gone)."""
    return StorageError(f"cannot create the run directory: cannot write {error.filename}: {reason(error)}. Nothing "
                        f"was kept (the half-made directory was removed). {remedy(error, runs_dir)}, then start "
                        f"the run again with `mmbal run {preset}`.")


def sweep_write_failed(error: OSError, home: Path, stopped_members: int) -> StorageError:
    """The error of a sweep that stopped because its own record or a member's log could not be written."""
    members = (f" The {stopped_members} running member{'s were' if stopped_members != 1 else ' was'} asked to "
               f"write a checkpoint and stop." if stopped_members else "")
    return StorageError(f"cannot write {error.filename}: {reason(error)}. The sweep stopped.{members} Every run "
                        f"directory it made is kept. {remedy(error, home)}, then run the same `mmbal sweep` command "
                        f"again: it skips finished members and resumes the others.")
