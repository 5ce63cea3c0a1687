"""Stop requests during training: Ctrl-C (SIGINT), SIGTERM and a hang-up (SIGHUP).

* The first one asks the trainer to write a checkpoint and stop at the next batch (the run ends
  ``interrupted``; ``mmbal run`` exits 130, or 129 after a hang-up: :func:`engine.terminal.exit_code`).
* A second SIGINT or SIGTERM stops now, without a new checkpoint (``KeyboardInterrupt``) -- except
  while a checkpoint is being written (:func:`checkpoint_write`): the write is completed first, so a
  checkpoint is never cut off half-way. If that write was the "last" checkpoint, the run has one at
  this very position and ends ``interrupted`` as after a single signal.
* A closed pipe (``mmbal run p.toml | head``) is a stop request like a hang-up, which never escalates
  (:data:`engine.terminal.output_closed`; exit 141).
* A hang-up is what a closed SSH connection or terminal window sends. It is a stop request like
  Ctrl-C, but a repeated SIGHUP never escalates: a shell that hangs up sends it to its jobs and the
  kernel sends it again to the foreground job when the shell exits. Standard output and error that
  were that terminal now fail on every write (EIO), so they are pointed at ``/dev/null``
  (:func:`engine.terminal.detach_from_hung_up_terminal`) and the run can still write its checkpoint.
  A SIGHUP that was ignored when the process started (``nohup mmbal run ...``) stays ignored.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

from .. import terminal
from ..terminal import OUTPUT_CLOSED, SIGHUP, detach_from_hung_up_terminal, hangup_ignored, terminal_fds
from ..train.trainer import Interrupted, Trainer

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class SignalStop:
    """The stop requests of one training loop (see the module docstring); installed by :func:`stop_on_signals`."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.first: str | None = None  # the name of the signal that asked for the stop
        self.writing: str | None = None  # the kind of checkpoint being written ("last" | "best"), if any
        self.stop_after_write = False
        self.hung_up = False
        self.terminal = terminal_fds()

    def handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if name == "SIGHUP":
            self.hung_up = True
            detach_from_hung_up_terminal(self.terminal)
        if not self.trainer.stop_requested:
            self.trainer.stop_requested = True
            self.first = self.first or name
            return
        if name == "SIGHUP":  # a hang-up arrives more than once: it never means "stop now"
            return
        if self.writing is not None:
            self.stop_after_write = True
            return
        raise KeyboardInterrupt

    def output_closed(self) -> None:
        """The piped output's reader went away (:mod:`engine.terminal`): a stop request that, like a hang-up,
        never escalates (it may come from any thread that printed)."""
        if not self.trainer.stop_requested:
            self.trainer.stop_requested = True
            self.first = self.first or OUTPUT_CLOSED

    def after_write(self, kind: str) -> None:
        """A checkpoint write ended: a second signal that arrived during it takes effect now."""
        if not self.stop_after_write:
            return
        self.stop_after_write = False
        if kind == "last":  # the checkpoint just written is at this position: a clean stop
            raise Interrupted()
        raise KeyboardInterrupt


_active: SignalStop | None = None  # the training loop's, while it runs (signals are the process's)


@contextmanager
def checkpoint_write(kind: str) -> Iterator[None]:
    """A checkpoint of ``kind`` is being written: a second SIGINT/SIGTERM waits for the write to end."""
    stop = _active
    if stop is None or stop.writing is not None:
        yield
        return
    stop.writing = kind
    try:
        yield
    finally:
        stop.writing = None
    stop.after_write(kind)


@contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[SignalStop]:
    """SIGINT, SIGTERM and SIGHUP ask ``trainer`` to checkpoint and stop at the next batch (see the module)."""
    global _active
    stop = SignalStop(trainer)
    previous = {}
    for sig in STOP_SIGNALS:
        try:
            if sig == SIGHUP and hangup_ignored():
                continue  # nohup: the user asked for the run to outlive the terminal
            previous[sig] = signal.signal(sig, stop.handle)
        except ValueError:  # not in the main thread
            pass
    _active = stop
    terminal.output_closed = stop.output_closed
    try:
        yield stop
    finally:
        _active = None
        terminal.output_closed = None
        for sig, old in previous.items():
            # after a hang-up the process is ending on its own: the SIGHUP the kernel sends again when the
            # shell exits must not kill it while it records the stop
            signal.signal(sig, signal.SIG_IGN if sig == SIGHUP and stop.hung_up else old)
