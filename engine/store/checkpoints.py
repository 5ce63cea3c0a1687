"""Checkpoint files: written atomically with a checksum, rotated, verified when read, chosen on resume.

What a checkpoint holds (the training position, weights, optimiser, method and RNG state) is the
trainer's business (:mod:`engine.train.checkpoint`); this module only stores it. Everything stored is
a tensor or a Python primitive, so a checkpoint loads with ``torch.load(weights_only=True)``, and no
code can run from the file.

* Integrity: a SHA-256 over the contents is stored in the checkpoint itself (key ``checksum``), so
  the file stays loadable with a plain ``torch.load`` while truncation or a flipped bit is detected
  (:class:`CheckpointDamaged`).
* Rotation: the last two "last" checkpoints are kept (``last.pt`` and ``previous.pt``) so that a
  damaged newest file still leaves a good one. The old ``last.pt`` becomes ``previous.pt`` only once
  the new one is complete on disk (:func:`engine.store.atomic.atomic_write_with`), so a failed write
  (disk full) leaves both as they were.
* Resume: :func:`newest_good_checkpoint` takes ``last.pt``, or ``previous.pt`` when the newest one is
  damaged or missing, plus the monitors' state from ``monitors.pt`` when it was written apart
  (``monitor.max_overhead``, :mod:`engine.monitor.overhead`).

``torch`` is imported where a checkpoint is read or written, so that listing and watching runs
(``mmbal ls``, the dashboard) never import it.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from engine.errors import ResumeRefused
from engine.store.atomic import atomic_write_with
from engine.store.paths import LAST, RunPaths, damaged_path


class CheckpointDamaged(Exception):
    """A checkpoint file that cannot be read or whose checksum does not match its contents."""

    def __init__(self, path: Path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def checksum(state: dict) -> str:
    """SHA-256 over every tensor's dtype, shape and bytes and every primitive, in a fixed order
    (the ``checksum`` key itself left out)."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != "checksum"})
    return h.hexdigest()


def _feed(h, obj) -> None:
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=str):
            h.update(repr(k).encode())
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    else:
        h.update(repr(obj).encode())


def write_checkpoint(path: str | os.PathLike, state: dict, *, keep_previous: str | os.PathLike | None = None) -> None:
    """Add ``state``'s checksum to it (key ``checksum``) and write it to ``path`` atomically.

    With ``keep_previous``, an existing ``path`` is kept under that name once the new file is on disk.
    A failed write raises the ``OSError`` naming ``path`` and leaves the old file(s) as they were.
    """
    import torch

    state["checksum"] = checksum(state)
    atomic_write_with(path, lambda f: torch.save(state, f), keep_previous=keep_previous)


def save_run_checkpoint(paths: RunPaths, state: dict, kind: str) -> Path:
    """Write ``checkpoints/<kind>.pt`` (``last`` or ``best``) of the run; a new ``last.pt`` keeps the
    old one as ``previous.pt``. Returns the path written."""
    path = paths.checkpoint(kind)
    write_checkpoint(path, state, keep_previous=paths.previous if kind == LAST else None)
    return path


def _unreadable_reason(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in one phrase.

    A file holding Python objects other than tensors and plain values (a class instance, a
    ``__reduce__`` payload that would call a function) is refused by the weights-only unpickler
    before anything in it runs; torch's own message then advises retrying with
    ``weights_only=False``, which mmbal never does, so it is replaced by one that says so.
    """
    text = str(exc)
    if type(exc).__name__ == "UnpicklingError" and "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"holds a Python object{what} that is not a tensor or a plain value: refused without running it "
                f"(mmbal loads checkpoints with weights_only=True and never writes such objects, so this file was "
                f"not written by mmbal or was altered)")
    return f"cannot be read ({type(exc).__name__}: {text})"


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load and verify a checkpoint with ``weights_only=True`` (no code can run from the file).

    Raises ``FileNotFoundError`` when it is missing and :class:`CheckpointDamaged` when the file is
    unreadable, truncated or does not match its checksum.
    """
    import torch

    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises RuntimeError, pickle/zip errors, EOFError, ... on damage
        raise CheckpointDamaged(path, _unreadable_reason(exc)) from None
    if not isinstance(state, dict) or "checksum" not in state:
        raise CheckpointDamaged(path, "has no checksum: not an mmbal checkpoint")
    if checksum(state) != state["checksum"]:
        raise CheckpointDamaged(path, "its contents do not match the checksum stored in it (damaged)")
    return state


def _add_monitors_apart(paths: RunPaths, state: dict, map_location, warnings: list[str]) -> None:
    """The monitors' state written apart (``monitors.pt``, under ``monitor.max_overhead``) into ``state``
    when ``state`` has none; a damaged one is passed over with a warning (the monitors start afresh)."""
    if "monitors" in state:
        return
    try:
        monitors = load_checkpoint(paths.monitors, map_location=map_location)
    except FileNotFoundError:
        return
    except CheckpointDamaged as exc:
        warnings.append(f"checkpoint {exc}; the monitors' probes and critics start afresh")
        return
    monitors.pop("checksum", None)
    state["monitors"] = monitors


def newest_good_checkpoint(paths: RunPaths, map_location="cpu") -> tuple[dict | None, list[str], list[Path]]:
    """``last.pt``, or ``previous.pt`` when the newest one is damaged or missing; with warnings and the
    damaged files passed over (a resume sets them aside, :mod:`engine.run.recovery`). The state's
    ``loaded_from`` is the file's name. None when there is no checkpoint at all (the run died before
    its first one): the resume then starts again from step 0. Every checkpoint damaged refuses the
    resume (:class:`~engine.errors.ResumeRefused`)."""
    warnings, damaged, passed_over = [], [], []
    for path in paths.resume_candidates:
        try:
            state = load_checkpoint(path, map_location=map_location)
        except FileNotFoundError:
            continue
        except CheckpointDamaged as exc:
            damaged.append(str(exc))
            passed_over.append(path)
            warnings.append(f"checkpoint {exc}; falling back to the previous one (the damaged file is kept as "
                            f"{paths.relative(damaged_path(path))})")
            continue
        state["loaded_from"] = path.name
        _add_monitors_apart(paths, state, map_location, warnings)
        return state, warnings, passed_over
    if damaged:
        raise ResumeRefused(f"{paths.root} cannot be resumed: every checkpoint is damaged:\n  " + "\n  ".join(damaged)
                            + f"\nMove them out of {paths.checkpoints} and `mmbal resume` trains the run again "
                            "from step 0 in its directory, or start a new run with `mmbal run`.")
    return None, warnings, passed_over
