"""Symbolic links in a run directory: never written through, and refused where a run's file should be.

A run's files are its own: a ``metrics.jsonl`` that is a link to a file elsewhere (a run directory
copied with ``cp -rs``, or linked by hand to save space) would have that file's torn last line cut
off and records appended to it. So every file the store writes is opened with ``O_NOFOLLOW``
(:func:`open_no_follow`, :func:`no_follow_opener`: the open fails instead of following a link), a
file replaced atomically is refused when its name is a link (:func:`refuse_link`; ``os.replace``
would not write through it, but it would silently turn the link into a file), and a resume first
checks every file and folder of the run (:func:`refuse_linked_run_files`). Each refusal is a
:class:`LinkedFileRefused` (exit 3) naming the file, where it points and what to do. Readers
(``ls``, ``watch``, ``compare``) still read through links: reading changes nothing.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from engine.errors import ResumeRefused
from engine.store.paths import (CHECKPOINTS_DIR, KEPT_DIR, LOCK_FILE, META_JSON, RUN_FILES, RunPaths)


class LinkedFileRefused(ResumeRefused):
    """A symbolic link where a run's file (or folder) should be: mmbal neither writes through it nor replaces it."""


def _target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _fix(paths: list[Path]) -> str:
    example = paths[0]
    return (f"Replace {'each link' if len(paths) > 1 else 'it'} with a copy of the file it points to "
            f"(`cp --remove-destination \"$(readlink -f {example})\" {example}`) or remove it, then run the "
            f"command again")


def linked_file_error(path: str | os.PathLike) -> LinkedFileRefused:
    """The refusal to write ``path``, a symbolic link."""
    path = Path(path)
    return LinkedFileRefused(
        f"{path} is a symbolic link (to {_target(path)}): mmbal does not write through links, which would "
        f"change a file outside the run directory, nor replace them. {_fix([path])}.")


def refuse_link(path: str | os.PathLike) -> None:
    """Raise :class:`LinkedFileRefused` when ``path`` itself is a symbolic link."""
    if os.path.islink(path):
        raise linked_file_error(path)


def open_no_follow(path: str | os.PathLike, flags: int, mode: int = 0o666) -> int:
    """``os.open`` with ``O_NOFOLLOW``: a link at ``path`` raises :class:`LinkedFileRefused`, not an open
    of its target. Other ``OSError`` s are raised as they are."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            raise linked_file_error(path) from None
        raise


def no_follow_opener(path: str, flags: int) -> int:
    """An ``opener`` for the built-in ``open``, so that a file object never follows a link."""
    return open_no_follow(path, flags)


def linked_run_files(run_dir: str | os.PathLike) -> list[Path]:
    """Every symbolic link in ``run_dir`` where one of the run's files or folders should be: its top-level
    files, ``.lock``, ``meta.json``, ``checkpoints/`` itself and the entries of ``checkpoints/`` and
    ``checkpoints/kept/``."""
    paths = RunPaths(run_dir)
    names = [*RUN_FILES, META_JSON, LOCK_FILE]
    found = [paths.root / name for name in names if os.path.islink(paths.root / name)]
    for folder in (paths.root / CHECKPOINTS_DIR, paths.root / CHECKPOINTS_DIR / KEPT_DIR):
        if os.path.islink(folder):
            break  # already listed (checkpoints/), or listed as an entry (kept/): nothing inside is the run's
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        found += [Path(e.path) for e in entries if e.is_symlink()]
    return found


def refuse_linked_run_files(run_dir: str | os.PathLike, doing: str = "resume") -> None:
    """Raise :class:`LinkedFileRefused` naming every link of :func:`linked_run_files` (``doing`` is what is
    refused, e.g. ``resume``); nothing has been written when it does."""
    links = linked_run_files(run_dir)
    if not links:
        return
    listed = "; ".join(f"{p} -> {_target(p)}" for p in links)
    which = "these files are symbolic links" if len(links) > 1 else "a file is a symbolic link"
    raise LinkedFileRefused(
        f"{doing} of {Path(run_dir)} refused: {which} "
        f"({listed}). mmbal does not write through links (the run would change files outside its directory) nor "
        f"replace them. {_fix(links)}.")
