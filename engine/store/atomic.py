"""Crash-safe file replacement and strict JSON for the run store.

Every file the store rewrites (``status.json``, ``summary.json``, checkpoints) goes through
:func:`atomic_write_with`: the payload is written to ``.<name>.tmp-<pid>`` in the same directory,
flushed and fsynced, moved over the target with :func:`os.replace` (atomic on POSIX), and the
directory is fsynced so the rename itself survives a power loss. A reader therefore sees either
the old file or the new one, never a mixture: the recipe (tmp + ``os.replace``) W&B, Lightning and
accelerate use for their state files.

A failed write (full disk, permission denied, read-only file system) raises the ``OSError`` with
``filename`` set to the *target* path, whatever call failed (a ``write`` on the temporary file has
no name, ``os.replace`` names the temporary one), so the caller can say which file it was; the
temporary file is removed and the target keeps its old content. ``keep_previous`` keeps the old
target under a second name (``last.pt`` -> ``previous.pt``) only once the new content is safely
on disk, and without the target ever going missing. The temporary name is spelled in
:mod:`engine.store.paths`.

JSON is written strictly: ``json.dumps`` would emit bare ``NaN``/``Infinity``, which ``jq`` and
strict parsers reject, so non-finite floats become ``null``. Numpy scalars,
arrays and tensors are converted through their ``tolist()``.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, BinaryIO, Callable

from engine.faults import fault_point
from engine.store.links import no_follow_opener, refuse_link
from engine.store.paths import temp_path_for

_LOCKS_GUARD = threading.Lock()
_PATH_LOCKS: dict[str, threading.Lock] = {}


def _path_lock(path: Path) -> threading.Lock:
    """One lock per target path: two threads of one process share the ``tmp-<pid>`` name."""
    key = os.path.abspath(path)
    with _LOCKS_GUARD:
        return _PATH_LOCKS.setdefault(key, threading.Lock())


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename or a new entry in ``directory`` durable (a no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    """Remove ``path`` if it exists; a failure here must not hide the error being handled."""
    try:
        path.unlink()
    except OSError:
        pass


def os_error_in(exc: BaseException) -> OSError | None:
    """``exc`` itself if it is an ``OSError``, else the first one in its cause/context chain.

    ``torch.save`` can report a failed ``write`` of its file object as a ``RuntimeError`` raised
    while handling the ``OSError``.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
    return None


def naming(exc: OSError, path: str | os.PathLike) -> OSError:
    """``exc`` with ``filename`` = ``path`` (a new ``OSError`` of the same errno when it named another)."""
    target = os.fspath(path)
    if exc.errno is None or exc.filename == target:
        return exc
    named = OSError(exc.errno, exc.strerror, target)
    named.__cause__ = exc
    return named


def atomic_write_with(path: str | os.PathLike, writer: Callable[[BinaryIO], None], *,
                      keep_previous: str | os.PathLike | None = None, site: str | None = None) -> None:
    """Let ``writer`` fill a binary file object, then put it in place at ``path`` atomically.

    For large payloads: ``atomic_write_with(p, lambda f: torch.save(state, f))``. On any
    failure (including KeyboardInterrupt) the temporary file is removed and ``path`` is untouched;
    an ``OSError`` (also one ``writer`` wrapped in another exception) is raised naming ``path``.
    With ``keep_previous``, the old content of an existing ``path`` becomes ``keep_previous`` once the
    new content is on disk, just before the new file takes its place (see :func:`_keep_as`).
    ``site`` is the fault-injection site (default: the file name; see :mod:`engine.faults`).
    A symbolic link at ``path`` is refused (:class:`~engine.store.links.LinkedFileRefused`, exit 3)
    and the temporary file is opened without following links (:mod:`engine.store.links`).
    """
    path = Path(path)
    tmp = temp_path_for(path)
    refuse_link(path)  # a link at ``path``: LinkedFileRefused, nothing written (engine.store.links)
    with _path_lock(path):
        try:
            with open(tmp, "wb", opener=no_follow_opener) as f:
                writer(f)
                fault_point(site or path.name, path)
                f.flush()
                os.fsync(f.fileno())
            if keep_previous is not None and path.exists():
                _keep_as(path, Path(keep_previous))
                fault_point("checkpoint_rename", path)
            os.replace(tmp, path)
        except BaseException as exc:
            _remove_quietly(tmp)
            os_error = os_error_in(exc) if isinstance(exc, Exception) else None
            named = None if os_error is None else naming(os_error, path)
            if named is None or named is exc:
                raise
            raise named from exc
    fsync_dir(path.parent)


def _keep_as(path: Path, keep: Path) -> None:
    """Make ``keep`` name the current content of ``path`` too, without ``path`` ever missing.

    A hard link under a temporary name is moved over ``keep``; where the file system has no hard
    links, ``path`` is renamed to ``keep`` (then briefly missing until the new file lands).
    """
    link = temp_path_for(keep)
    _remove_quietly(link)
    try:
        os.link(path, link)
    except OSError:
        os.replace(path, keep)
        return
    try:
        os.replace(link, keep)
    finally:
        _remove_quietly(link)  # left by rename(2) when ``keep`` already was this very file


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, site: str | None = None) -> None:
    """Replace ``path`` with ``data`` atomically (tmp file, fsync, ``os.replace``, fsync dir)."""
    atomic_write_with(path, lambda f: f.write(data), site=site)


def _child_path(parent: str, key: Any) -> str:
    return f"{parent}.{key}" if parent else str(key)


def to_jsonable(obj: Any, nonfinite: list[str] | None = None, path: str = "") -> Any:
    """``obj`` as plain JSON values; NaN and +-inf become ``None``.

    When ``nonfinite`` is a list, the dotted path of every non-finite value is appended to it
    (a top-level mapping key is its own path). Numpy values and tensors go through ``tolist()``;
    paths become strings. Anything else raises ``TypeError`` naming the path.
    """
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isfinite(obj):
            return float(obj)
        if nonfinite is not None:
            nonfinite.append(path)
        return None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, nonfinite, _child_path(path, k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, nonfinite, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, PurePath):
        return str(obj)
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return to_jsonable(tolist(), nonfinite, path)
    raise TypeError(f"{path or 'value'}: {type(obj).__name__} cannot be written as JSON")


def dumps_strict(obj: Any, *, indent: int | None = None) -> str:
    """Strict JSON text of ``obj`` (see :func:`to_jsonable`); compact when ``indent`` is None."""
    separators = None if indent is not None else (",", ":")
    return json.dumps(
        to_jsonable(obj), indent=indent, separators=separators, ensure_ascii=False, allow_nan=False
    )


def atomic_write_json(path: str | os.PathLike, obj: Any, *, site: str | None = None) -> None:
    """Write ``obj`` as indented JSON (keys in insertion order, NaN -> null, final newline)."""
    text = dumps_strict(obj, indent=2) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"), site=site)


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object stored at ``path``.

    Raises ``FileNotFoundError`` when it is missing and ``ValueError`` naming the path when it
    is not valid UTF-8 JSON or not an object (also when it is nested too deeply to parse: such a
    file is damaged, not a reason for a ``RecursionError``).
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid JSON for mmbal (arrays or objects nested too deeply to read)") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj
