"""Errors the engine raises for the user's mistakes, each mapped to a CLI exit code.

Every error here carries a one-paragraph message meant to be printed as it is, without a
traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class MmbalError(Exception):
    """Base of the user-facing errors. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class DataError(MmbalError):
    """A dataset that cannot be used: names the file, the column and the first bad row."""

    exit_code = 2


class PresetError(MmbalError):
    """One or more problems in a preset; ``problems`` lists every one with its key path."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"{source}: {n} problem{'s' if n != 1 else ''} in the preset:\n{lines}")


class UsageError(MmbalError):
    """A bad command-line argument that the argument parser could not catch itself."""

    exit_code = 2


class RunNotFound(MmbalError):
    """``RUN`` matched no run, or more than one."""

    exit_code = 3


class ResumeRefused(MmbalError):
    """Resume would change a locked key (data, model, method, seed) or the run cannot be resumed."""

    exit_code = 3


class RunLocked(MmbalError):
    """Another process holds the run directory's lock."""

    exit_code = 3


class NonFiniteError(MmbalError):
    """Training produced a non-finite loss or gradient and ``train.on_nonfinite = "stop"``."""

    exit_code = 1


class StorageError(MmbalError):
    """A file could not be written: the disk is full, permission is denied or the file system is
    read-only. Names the file, the reason, what is intact and what to do next."""

    exit_code = 1
