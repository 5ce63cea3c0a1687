"""The process's terminal and the exit codes of a stop by signal.

A hang-up (SIGHUP: the SSH connection or the terminal window closed) leaves standard output and
error pointing at a terminal that is gone: every write then fails with EIO, so a progress bar, a
final message or the flush at exit would turn a clean stop into a traceback. A run or a sweep that
stops on a hang-up points them at ``/dev/null`` first (:func:`detach_from_hung_up_terminal`). Used
by :mod:`engine.run.signals` (training) and :mod:`engine.sweep.runner` (a sweep), with no import of
torch so that the sweep stays light.

A closed pipe is the same for a run whose output is piped: ``mmbal run p.toml | head`` ends ``head``
after a few lines, and the run's next line fails with EPIPE. Standard output is then pointed at
``/dev/null`` and :data:`output_closed` (set by :mod:`engine.run.signals` while a run trains) asks the
run to stop after a checkpoint, as a hang-up does: it ends ``interrupted`` and exits 141 (128 + SIGPIPE)
instead of failing with a traceback.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import sys

HANGUP_EXIT = 129       # 128 + SIGHUP: stopped by a hang-up, after the checkpoints
INTERRUPTED_EXIT = 130  # stopped by Ctrl-C or SIGTERM, after the checkpoints
PIPE_EXIT = 141         # 128 + SIGPIPE: stopped because the reader of the output went away, after the checkpoints
OUTPUT_CLOSED = "SIGPIPE"  # the stop's name when the piped output was closed (no signal is delivered)

output_closed = None    # called once the piped output is closed (a run's stop request), else None

SIGHUP = getattr(signal, "SIGHUP", None)  # None where the platform has no hang-up (Windows)


def exit_code(signal_name: str | None) -> int:
    """The exit code of a run or sweep stopped (after its checkpoints) by the signal named ``signal_name``."""
    return {"SIGHUP": HANGUP_EXIT, OUTPUT_CLOSED: PIPE_EXIT}.get(signal_name, INTERRUPTED_EXIT)


def hangup_ignored() -> bool:
    """Whether SIGHUP is ignored in this process (started by ``nohup``): it then stays ignored."""
    return SIGHUP is None or signal.getsignal(SIGHUP) == signal.SIG_IGN


def terminal_fds() -> list[int]:
    """Which of standard output and error (1, 2) are a terminal now (to be remembered before a hang-up)."""
    return [fd for fd in (1, 2) if _is_terminal(fd)]


def detach_from_hung_up_terminal(fds: list[int]) -> list[int]:
    """Point those of ``fds`` (which were a terminal) whose terminal is gone at ``/dev/null``; returns them.

    A terminal still there (a SIGHUP sent by hand with ``kill -HUP``) is kept: what is printed from
    then on still reaches it. A redirected output (a file, a pipe) was never in ``fds``.
    """
    gone = [fd for fd in fds if not _is_terminal(fd)]
    if not gone:
        return gone
    for fd in gone:
        _to_null(fd)
    return gone


class HangupSafeStream:
    """Standard output or error over a terminal, whose writes survive the terminal's hang-up.

    The kernel fails writes to a hung-up terminal (EIO) as soon as it is gone, while Python runs the
    SIGHUP handler that points the stream at ``/dev/null`` only at the next bytecode of the main
    thread: a line printed in between (an epoch line, a sweep's progress, the progress bar's refresh
    thread) would raise and turn the clean stop into a failure (exit 1). The same holds for a run whose
    SIGHUP was ignored when it started (it trains on by design, :func:`hangup_ignored`) but whose output
    is still the terminal: its next line raised. Here EIO drops the text and points the descriptor at
    ``/dev/null`` at once; a SIGHUP's stop request is then handled as usual, and an ignored one lets the
    run train on. Every other error, and everything else of the stream, is the stream's own.
    """

    def __init__(self, stream, pipe: bool = False):
        self._stream = stream
        self._pipe = pipe   # a pipe: a closed reader (EPIPE) is the end of the output, not an error

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as exc:
            self._lost(exc)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self._lost(exc)

    def _lost(self, exc: OSError) -> None:
        if exc.errno == errno.EPIPE and self._pipe:
            _to_null(self._stream.fileno())
            if output_closed is not None:
                output_closed()
            return
        if exc.errno != errno.EIO:
            raise exc
        detach_from_hung_up_terminal([self._stream.fileno()])

    def __getattr__(self, name):
        return getattr(self._stream, name)


def survive_hangups(pipes: bool = False) -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` in :class:`HangupSafeStream` where they are a terminal (once)
    and, with ``pipes`` (a training run's), where they are a pipe."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or isinstance(stream, HangupSafeStream):
            continue
        try:
            terminal = stream.isatty()
            pipe = pipes and not terminal and stat.S_ISFIFO(os.fstat(stream.fileno()).st_mode)
        except (OSError, ValueError, AttributeError):
            continue
        if terminal or pipe:
            setattr(sys, name, HangupSafeStream(stream, pipe=pipe))


def _to_null(fd: int) -> None:
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def _is_terminal(fd: int) -> bool:
    """``isatty``; a hung-up terminal answers EIO, which counts as gone."""
    try:
        return os.isatty(fd)
    except OSError:
        return False
