"""Ctrl-C and SIGTERM during training: checkpoint at the next batch, then stop; a second one stops now."""

from __future__ import annotations

import signal
from contextlib import contextmanager

from ..train.trainer import Trainer


@contextmanager
def stop_on_signals(trainer: Trainer):
    """SIGINT/SIGTERM ask the trainer to checkpoint and stop at the next batch; a second one stops now."""
    def handler(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not in the main thread
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
