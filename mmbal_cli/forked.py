"""Members of a local sweep forked from a process that has imported mmbal already.

A member of ``mmbal sweep`` (and of each stage of ``mmbal advise``) is an ordinary ``mmbal run`` /
``mmbal resume``. Started with ``exec``, every member spends seconds importing torch, its compiler
front end (which ``torch.optim`` loads on the first optimiser) and mmbal's engine before it trains:
for the small models of precomputed features that is most of a run. :class:`ForkLauncher` starts
each member instead by forking a *fork server* (:mod:`multiprocessing`'s ``forkserver``) that
imported those modules once. The child is still a process of its own, started fresh from the
server's state (which has imported modules and run no training), so a member behaves as an
exec'd one does:

* it runs in its own session (a terminal Ctrl-C reaches only the sweep, which forwards one SIGINT);
* its standard output and error are the member's log, its standard input ``/dev/null``;
* its environment is the member's (``OMP_NUM_THREADS`` shared out among ``--jobs``; torch's thread
  count, read when torch was imported, is set from it, and so are the test faults of ``MMBAL_FAULTS``);
* its exit status is the command's (130 on Ctrl-C, negative when a signal killed it).

The server is started at the first member, never touches a GPU (members placed on GPUs with
``--gpus`` are exec'd as before, since CUDA cannot be initialised before a fork), and ends with the
sweep's process. ``MMBAL_SWEEP_EXEC=1`` in the environment exec's every member (the old way).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

PRELOAD = ["torch", "torch._dynamo", "torch.optim", "engine.run", "engine.methods", "engine.train.trainer",
           "engine.data", "engine.models"]
_context = None


def fork_context():
    """The ``forkserver`` context with mmbal preloaded (None where there is none: then members are exec'd)."""
    global _context
    if _context is None:
        try:
            ctx = multiprocessing.get_context("forkserver")
        except ValueError:
            return None
        ctx.set_forkserver_preload(PRELOAD)
        _context = ctx
    return _context


def enabled() -> bool:
    return os.environ.get("MMBAL_SWEEP_EXEC", "") in ("", "0") and fork_context() is not None


def run_member(argv: list[str], log: str, env: dict[str, str]) -> None:
    """The forked child: become the member (own session, its log, its environment) and run ``mmbal argv``."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(env)
    from engine.faults import arm_from_environment
    arm_from_environment()   # the one module state read from the environment at import
    threads = env.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import torch
        torch.set_num_threads(int(threads))
    sys.argv = ["mmbal", *argv]
    from .app import main
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    atexit._run_exitfuncs()   # what an exec'd member runs at exit (a forked child skips interpreter shutdown)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    raise SystemExit(code)    # multiprocessing makes it the process's exit status


class ForkedMember:
    """A forked member as the sweep runner sees a subprocess: ``poll``, ``returncode``, ``send_signal``, ``wait``."""

    def __init__(self, process):
        self.process = process
        self.pid = process.pid

    def poll(self) -> int | None:
        return self.process.exitcode

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def send_signal(self, sig) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self) -> int:
        self.process.join()
        return self.process.exitcode


def _nothing() -> None:
    """A member that does nothing: :meth:`ForkLauncher.warm` starts the server with it."""


class ForkLauncher:
    """Starts members (``cli + [command, ...]`` argv) by forking the fork server; ``cli_len``: the argv's
    prefix that starts mmbal (the interpreter and module), dropped here."""

    def __init__(self, cli_len: int):
        self.cli_len = cli_len

    def warm(self) -> None:
        """Start the fork server now and wait until it has imported mmbal (a member that does nothing),
        so that the first real member's start-up does not include it (``mmbal advise`` times its start-ups)."""
        process = fork_context().Process(target=_nothing, name="mmbal fork server warm-up", daemon=True)
        process.start()
        process.join()

    def start(self, cmd: Sequence[str], log: Path, name: str, env: dict[str, str] | None = None) -> ForkedMember:
        ctx = fork_context()
        process = ctx.Process(target=run_member, args=(list(cmd[self.cli_len:]), str(log), dict(env or os.environ)),
                              name=f"mmbal {name}", daemon=False)
        process.start()
        return ForkedMember(process)
