"""Members of a sweep as cluster jobs: ``mmbal sweep --launcher slurm`` submits each through submitit.

Each member is one job that runs the same ``mmbal run`` / ``mmbal resume`` command a local sweep
would start (:func:`run_member`), with its output appended to the member's log in the sweep's
directory. The runs directory must therefore be on a filesystem that the submitting machine and the
cluster's nodes share; the sweep process stays on the submitting machine, polls the jobs, and records
them in ``sweep.json`` as for a local sweep, so running the same command again resumes the sweep.

Stopping (Ctrl-C, SIGTERM or a hang-up of the sweep) cannot signal a process on another node, so it
goes through the shared filesystem: the sweep writes the number of stop requests to the member's
``.stop`` file and the job forwards each as one SIGINT to its member (the first: checkpoint and stop,
``interrupted``; the second: stop now). A job still waiting in the queue is cancelled. When Slurm
itself ends a job (``scancel``, the time limit) the member gets SIGTERM: it checkpoints and stops.

submitit is an optional extra (``pip install "mmbal[slurm]"``), imported only here.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

from ..errors import UsageError

JOBS_DIR = "jobs"  # in the sweep's directory: submitit's own files (pickles, job logs) and the stop files
GENERIC = {"name": str, "timeout_min": int, "mem_gb": float, "nodes": int, "cpus_per_task": int,
           "gpus_per_node": int, "tasks_per_node": int}
_WAITING = {"PENDING", "REQUEUED", "CONFIGURING"}  # a job not started yet: it is cancelled on a stop


def import_submitit():
    """submitit, or a UsageError (exit 2) naming the extra to install."""
    try:
        import submitit
    except ImportError:
        raise UsageError('--launcher slurm needs submitit, which is not installed: pip install "mmbal[slurm]" '
                         '(or pip install submitit)') from None
    return submitit


def parse_parameters(items: Sequence[str]) -> dict:
    """``--slurm KEY=VALUE`` items -> submitit parameters: a shared one (``timeout_min``, ``mem_gb``,
    ``gpus_per_node``, ``cpus_per_task``, ``nodes``, ``tasks_per_node``, ``name``) as typed, any other
    key as a Slurm option (``partition=gpu`` -> ``slurm_partition``), numbers read as numbers."""
    out: dict = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--slurm: '{item}' is not KEY=VALUE; e.g. --slurm partition=gpu --slurm timeout_min=600")
        if key in GENERIC:
            try:
                out[key] = GENERIC[key](text)
            except ValueError:
                raise UsageError(f"--slurm {key}: expected {GENERIC[key].__name__}, got '{text}'") from None
        else:
            out[key if key.startswith("slurm_") else f"slurm_{key}"] = _number_or_text(text)
    return out


def _number_or_text(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class SubmititLauncher:
    """Submits members to ``cluster`` (``"slurm"``; ``"local"`` runs the same jobs on this machine)."""

    def __init__(self, home: Path, parameters: dict, cluster: str = "slurm"):
        submitit = import_submitit()
        self.folder = Path(home) / JOBS_DIR
        try:
            self.executor = submitit.AutoExecutor(folder=self.folder, cluster=cluster)
        except RuntimeError as exc:  # no srun/sbatch here
            raise UsageError(f"--launcher {cluster}: this machine cannot submit {cluster} jobs ({exc}); run the "
                             f"sweep on a machine of the cluster (a login node), the runs directory on a "
                             f"filesystem its nodes share") from None
        try:
            self.executor.update_parameters(**parameters)
        except (NameError, AssertionError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"--slurm: {first}; shared keys: {', '.join(GENERIC)}; any other key is a Slurm "
                             f"option of submitit's SlurmExecutor (partition, account, qos, constraint, ...)") from None

    def start(self, cmd: Sequence[str], log: Path, name: str, env: dict | None = None) -> "SubmittedMember":
        """Submit one member whose output is appended to ``log`` (``env`` is not used: a job runs in the
        cluster's environment)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        stop = self.folder / f"{name}.stop"
        stop.unlink(missing_ok=True)
        job = self.executor.submit(run_member, list(cmd), str(Path.cwd()), str(log), str(stop))
        return SubmittedMember(job, stop, log)


class SubmittedMember:
    """A member running as a job, read like a ``subprocess.Popen`` by the sweep runner."""

    def __init__(self, job, stop_file: Path, log: Path):
        self.job, self.stop_file, self.log = job, stop_file, log
        self.returncode: int | None = None
        self.requests = 0
        self.cancelled = False  # cancelled while queued: the member never started

    def poll(self) -> int | None:
        if self.returncode is None and self.job.done():
            try:
                self.returncode = int(self.job.result())
            except Exception as exc:  # the job itself failed (cancelled, killed, node lost): say so in the log
                self.returncode = 130 if self.cancelled else 1  # 130: stopped before it started
                reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                with open(self.log, "a", encoding="utf-8") as f:
                    f.write(f"job {self.job.job_id} ended without the member's exit code: "
                            f"{'cancelled while queued' if self.cancelled else reason}\n")
        return self.returncode

    def send_signal(self, sig) -> None:
        """A stop request (each one counts as one SIGINT to the member); a job still queued is cancelled."""
        self.requests += 1
        self.stop_file.write_text(str(self.requests))
        if not self.cancelled and self.job.state in _WAITING:
            self.job.cancel(check=False)
            self.cancelled = True

    def wait(self) -> int:
        while self.poll() is None:
            time.sleep(0.2)
        return self.returncode


def run_member(cmd: list[str], cwd: str, log: str, stop_file: str, poll_s: float = 0.2) -> int:
    """In the job: run one member, forwarding each stop request of ``stop_file`` as one SIGINT; its exit code.

    A stop requested before the job started starts nothing (exit 130, as a member stopped while
    starting up). The member shares the job's process group, so Slurm's SIGTERM reaches it too.
    """
    if _requests(stop_file):
        return 130
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    forwarded = 0
    while proc.poll() is None:
        while forwarded < _requests(stop_file):
            proc.send_signal(signal.SIGINT)
            forwarded += 1
        time.sleep(poll_s)
    return proc.returncode


def _requests(stop_file: str) -> int:
    try:
        return int(Path(stop_file).read_text() or 0)
    except (OSError, ValueError):
        return 0
