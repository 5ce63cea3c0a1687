"""``mmbal run --nproc N`` / ``mmbal resume --nproc N``: one training run over N local processes.

The command starts N copies of itself (``python -m mmbal_cli run ...`` without ``--nproc``) with the
environment torchrun gives its workers (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), waits for them and exits with rank 0's exit
code (or the first failing rank's). ``torchrun --nproc-per-node N -m mmbal_cli run ...`` does the same
job; starting the processes here instead keeps mmbal's exit codes (2 for a bad preset, 3 for a
refused resume, 130 after an interrupt), where torchrun turns any failure into 1 with a traceback.

The children run in their own process group: Ctrl-C (SIGINT) or SIGTERM reaches this process,
which forwards it once to every child, so all of them checkpoint and stop at the same batch (a
second one stops them at once, as in a single process). On Linux the children also get SIGTERM if
this process dies. When one child fails, the others are given a few seconds to notice (their next
collective fails) and are then terminated. Each child gets ``OMP_NUM_THREADS`` = cores / N unless
it is set, as torchrun does, so N processes do not oversubscribe the CPU.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

GRACE_S = 10.0   # how long the other ranks get to exit on their own after one fails
POLL_S = 0.05


def free_port() -> int:
    """A TCP port that is free now on the loopback interface (for the group's rendezvous store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(rank: int, nproc: int, port: int, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc),
               GROUP_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    return env


def _libc_prctl():
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl() if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child, before exec: its own process group, and SIGTERM when the parent dies (Linux
    prctl PR_SET_PDEATHSIG; looked up in the parent, so nothing is imported here)."""
    os.setpgrp()
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def exit_code(codes: list[int | None]) -> int:
    """Rank 0's code when it failed, else the first failing rank's (a signal k counts as 128 + k)."""
    norm = [(128 - c if c < 0 else c) if c is not None else 1 for c in codes]
    if norm[0]:
        return norm[0]
    return next((c for c in norm if c), 0)


def start_processes(args: list[str], nproc: int) -> int:
    """Run ``python -m mmbal_cli *args`` as ranks 0..nproc-1 of one process group; their exit code."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "mmbal_cli", *args], env=child_env(r, nproc, port),
                              preexec_fn=_die_with_parent) for r in range(nproc)]

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = _wait(procs)
        for r, c in enumerate(codes):
            if c is not None and c < 0:
                print(f"mmbal: process {r} of {nproc} was stopped by {signal.Signals(-c).name}", file=sys.stderr,
                      flush=True)
        return exit_code(codes)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _wait(procs: list[subprocess.Popen]) -> list[int | None]:
    failed_at = None
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            return codes
        if failed_at is None and any(c for c in codes if c is not None):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > GRACE_S:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            try:
                for p in procs:
                    p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            return [p.poll() if p.poll() is not None else -signal.SIGKILL for p in procs]
        time.sleep(POLL_S)


# -- the command side ---------------------------------------------------------------------------------
def run_args(preset, overrides: list[str], runs_dir, name: str | None, device: str | None) -> list[str]:
    """The children's ``mmbal run`` arguments (everything but ``--nproc``)."""
    args = ["run", str(preset)]
    for item in overrides:
        args += ["--set", item]
    if runs_dir is not None:
        args += ["--runs-dir", str(runs_dir)]
    if name is not None:
        args += ["--name", name]
    if device is not None:
        args += ["--device", device]
    return args


def resume_args(run_dir, overrides: list[str], runs_dir) -> list[str]:
    args = ["resume", str(run_dir)]
    for item in overrides:
        args += ["--set", item]
    if runs_dir is not None:
        args += ["--runs-dir", str(runs_dir)]
    return args


def check_run(preset, overrides: list[str], device: str | None, nproc: int) -> None:
    """Before starting processes: the preset is valid and its batch splits over them (else MmbalError)."""
    from engine.config import load_preset
    from engine.run import check_batch_split
    from engine.errors import UsageError
    cfg, _ = load_preset(preset, list(overrides) + ([f'train.device="{device}"'] if device else []))
    try:
        check_batch_split(cfg.train.batch_size, nproc)
    except UsageError as exc:
        raise UsageError(f"{preset}: {exc}") from None


def check_resume(ref: str, runs_dir, nproc: int):
    """Before starting processes: the run exists and its batch splits over them; returns its directory."""
    from engine.errors import ResumeRefused
    from engine.run import check_batch_split
    from engine.store import CONFIG_JSON, RunPaths, default_runs_dir, read_json, resolve_run
    run_dir = resolve_run(default_runs_dir(runs_dir), ref)
    try:
        batch_size = int(read_json(RunPaths(run_dir).config_json)["train"]["batch_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ResumeRefused(f"{run_dir}: {CONFIG_JSON} cannot be read ({exc}); the run cannot be resumed") from None
    check_batch_split(batch_size, nproc)
    return run_dir


@contextmanager
def ranks():
    """The body of ``mmbal run``/``resume`` in a process started by torchrun or ``--nproc`` (the process
    group is open inside; in a plain process nothing happens): yields whether this is rank 0, which
    alone prints. Another rank's unexpected error (usually: rank 0 stopped, so a collective failed)
    is one line on stderr and exit 1, not a traceback per process."""
    import typer

    from engine.collectives import is_main, process_group, rank
    from engine.errors import MmbalError
    with process_group():
        main = is_main()
        try:
            yield main
        except (typer.Exit, KeyboardInterrupt, MmbalError):
            raise
        except Exception as exc:
            if main:
                raise
            print(f"process {rank()}: stopped: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                  file=sys.stderr, flush=True)
            raise typer.Exit(1)
