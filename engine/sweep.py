"""``mmbal sweep``: one ordinary run per (method, seed), N at a time, resumed by running it again.

A sweep answers "which balancing method helps on my data, and by how much" together with
``mmbal compare --sweep NAME``. Its decisions, in the order a user meets them:

Members and names
    The members are ``methods x seeds``, run seed by seed (every method of seed 0 first), so
    a partial sweep already pairs methods on the same seeds. Member ``(m, s)`` is the run named
    ``<sweep>-<m>-s<s>``; the sweep name defaults to the preset's ``name``.

Where a sweep is recorded
    ``<runs-dir>/sweeps/<sweep>/sweep.json`` holds the plan (preset, overrides, methods, seeds,
    one entry per member with its run name and the run ids of its attempts) and ``logs/`` one
    log per member (the member process's output, appended per attempt). The run directories
    are ordinary runs in ``<runs-dir>``: ``mmbal watch``, ``mmbal resume`` and ``mmbal ls`` work
    on them. ``sweep.json`` is written atomically; the directory is locked while a sweep runs.

Per-method options
    ``--set KEY=VALUE`` applies to every member, except keys scoped by a method name:
    ``--set unimodal.modality=a`` is ``method.modality=a`` for the ``unimodal`` members only.
    Each member gets ``--set seed=S`` and ``--set method={name = "m", ...}``, a TOML inline table
    that *replaces* the preset's ``[method]`` table: options the preset gives its own method
    are kept for that method and never leak into another method's config. ``--set method.*``
    and ``--set seed=`` are refused in a sweep (the sweep owns them). Every member's config is
    validated before anything starts; problems name the scoped key (``unimodal.modality``).

Skipping, resuming, restarting
    Each member's attempts are the runs of its name. A finished attempt with the same config
    -> skipped. A running one (live heartbeat) or a stale one -> left alone and reported. An
    interrupted or failed attempt with a checkpoint -> continued with ``mmbal resume`` (exact,
    like any resume). Otherwise (no attempt, or one that died before its first checkpoint, or
    whose config differs because ``--set`` changed) -> a new run under the same name; older
    attempts stay on disk and ``compare`` uses the newest. A *finished* attempt whose config
    differs from this invocation's is a conflict (exit 2): pick another ``--name``.

Running
    Members are subprocesses ``python -m mmbal_cli run|resume ...``, at most ``jobs`` at a time
    (several small runs share one GPU well). With ``jobs > 1`` each member gets
    ``OMP_NUM_THREADS = cpus // jobs`` unless the variable is set. Members run in their own
    session so a terminal Ctrl-C (or a SIGTERM) reaches only the sweep, which starts no new
    member and forwards exactly one SIGINT to each running one: it writes a checkpoint and stops
    (exit 130), like ``mmbal run`` on Ctrl-C; a member still starting up stops without one. A
    second Ctrl-C forwards another SIGINT (stop now). The sweep exits 130 once all have ended.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .compare import flatten
from .errors import PresetError, RunLocked, RunNotFound, UsageError
from .faults import fault_point
from .registry import did_you_mean
from .storage_errors import failed_write, sweep_write_failed
from .store import (CHECKPOINTS_DIR, CONFIG_JSON, RunLock, atomic_write_json, list_runs, read_json, read_status,
                    read_summary, slugify)

SWEEPS_DIR = "sweeps"
SWEEP_JSON = "sweep.json"
LOGS_DIR = "logs"
SWEEP_SCHEMA = 1
# Keys that may differ between attempts of one member without making them different experiments.
IGNORED_CONFIG_KEYS = ("base_dir", "train.device", "train.threads")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_STARTED_RE = re.compile(r"^(?:run|resuming) ([0-9a-z]{8})  (.+)$", re.MULTILINE)
_TOML_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


# -- parsing the command line -------------------------------------------------------------------
def parse_methods(text: str) -> list[str]:
    """``"joint,ogm_ge"`` -> names checked against the method registry (exit 2 with did-you-mean)."""
    from .methods import METHODS  # torch: imported only by the functions that plan a sweep

    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise UsageError("--methods: give at least one method, e.g. --methods joint,unimodal")
    known = METHODS.names()
    unknown = [n for n in names if n not in known]
    if unknown:
        parts = [f"'{n}'{did_you_mean(n, known)}" for n in unknown]
        raise UsageError(f"--methods: unknown method {', '.join(parts)}; known: {', '.join(sorted(known))} "
                         f"(`mmbal methods` describes them)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"--methods: {', '.join(twice)} given more than once")
    return names


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) or a mix -> distinct seeds >= 0 in the given order."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match or (match.group(2) is not None and int(match.group(2)) < int(match.group(1))):
            raise UsageError(f"--seeds: '{part}' is not a seed (an integer >= 0) or a range like 0-4; "
                             f"e.g. --seeds 0,1,2")
        lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
        seeds.extend(s for s in range(lo, hi + 1) if s not in seeds)
    return seeds


def split_overrides(sets: list[str], methods: list[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """``--set`` items -> (overrides for every member, {method: {option: value}} scoped ones)."""
    from .config import TOP_KEYS, parse_override
    from .methods import METHODS

    general: list[str] = []
    scoped: dict[str, dict[str, Any]] = {m: {} for m in methods}
    problems: list[str] = []
    for item in sets:
        keys, value = parse_override(item)
        head = keys[0]
        if head == "method":
            problems.append(f"'{item}': a sweep sets [method] per member; scope method options by the method's "
                            f"name instead, e.g. --set unimodal.modality=a")
        elif head == "seed":
            problems.append(f"'{item}': a sweep sets the seed per member; use --seeds")
        elif head in METHODS and head not in TOP_KEYS:
            if head not in scoped:
                problems.append(f"'{item}': method '{head}' is not in --methods ({', '.join(methods)})")
            elif len(keys) != 2:
                problems.append(f"'{item}': expected {head}.OPTION=VALUE")
            elif keys[1] == "name":
                problems.append(f"'{item}': the method's name is set by --methods")
            else:
                scoped[head][keys[1]] = value
        else:
            general.append(item)
    if problems:
        raise PresetError("--set", problems)
    return general, {m: o for m, o in scoped.items() if o}


def check_sweep_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise UsageError(f"--name: '{name}' is not a usable sweep name: use letters, digits, '.', '_' and '-' "
                         f"(starting with a letter or digit)")
    return name


# -- TOML inline tables for the per-member method override ---------------------------------------
def toml_value(value: Any) -> str:
    """``value`` (as parsed from TOML) written back as a TOML value; tested by a tomllib round trip."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def toml_key(key: str) -> str:
    return key if _TOML_BARE_KEY.match(key) else toml_value(str(key))


# -- the plan -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    """One (method, seed) of a sweep: its run name, the overrides it runs with and its config."""

    method: str
    seed: int
    run_name: str
    overrides: tuple[str, ...]
    config: dict = field(compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.method} s{self.seed}"


@dataclass(frozen=True)
class Attempt:
    """An existing run of a member: its directory, effective state and whether its config matches."""

    run_dir: Path
    run_id: str
    state: str
    same_config: bool
    has_checkpoint: bool
    reason: str | None = None


@dataclass(frozen=True)
class Task:
    """What the sweep does about one member: skip | running | stale | resume | start."""

    member: Member
    action: str
    attempt: Attempt | None = None
    note: str = ""


@dataclass
class Plan:
    name: str
    preset: Path
    runs_dir: Path
    methods: list[str]
    seeds: list[int]
    overrides: list[str]
    method_options: dict[str, dict[str, Any]]
    device: str | None
    tasks: list[Task]

    def todo(self) -> list[Task]:
        return [t for t in self.tasks if t.action in ("start", "resume")]

    def count(self, action: str) -> int:
        return sum(t.action == action for t in self.tasks)


def sweep_dir(runs_dir: str | os.PathLike, name: str) -> Path:
    return Path(runs_dir) / SWEEPS_DIR / name


def member_run_name(sweep: str, method: str, seed: int) -> str:
    return f"{sweep}-{method}-s{seed}"


def method_table(preset_method: dict, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The ``[method]`` table of a member: the preset's own options when it is the preset's method."""
    own = preset_method.get("name", "joint") == method
    base = {k: v for k, v in preset_method.items() if k != "name"} if own else {}
    return {"name": method, **base, **options}


def member_overrides(general: list[str], seed: int, table: dict[str, Any]) -> tuple[str, ...]:
    return (*general, f"seed={seed}", f"method={toml_value(table)}")


def build_members(preset: Path, name: str, methods: list[str], seeds: list[int], general: list[str],
                  scoped: dict[str, dict[str, Any]], device: str | None) -> list[Member]:
    """Every member, seed-major, with its config validated; all problems raised as one PresetError."""
    from .config import load_preset, read_toml

    raw = read_toml(preset)
    preset_method = raw.get("method", {}) if isinstance(raw.get("method", {}), dict) else {}
    device_override = [f'train.device="{device}"'] if device else []
    members, problems = [], []
    for seed in seeds:
        for method in methods:
            overrides = member_overrides(general, seed, method_table(preset_method, method, scoped.get(method, {})))
            try:
                cfg, _ = load_preset(preset, [*overrides, *device_override])
            except PresetError as exc:
                problems.extend(p for p in _scoped_problems(exc.problems, method) if p not in problems)
                continue
            members.append(Member(method, seed, member_run_name(name, method, seed), overrides, cfg.to_dict()))
    if problems:
        raise PresetError(f"{preset} (sweep '{name}')", problems)
    return members


def _scoped_problems(problems: list[str], method: str) -> list[str]:
    """``method.modality: ...`` -> ``unimodal.modality: ... (scoped to this method: --set unimodal.modality=VALUE)``."""
    out = []
    for p in problems:
        if p.startswith("method.") and not p.startswith("method.name"):
            key = p.split(":", 1)[0].removeprefix("method.")
            p = f"{method}.{p.removeprefix('method.')} (scoped to this method: --set {method}.{key}=VALUE)"
        out.append(p)
    return out


def config_differences(a: dict, b: dict) -> list[str]:
    """``key: old -> new`` for every flattened key both configs have with different values.

    Keys only one side has are not differences: a newer mmbal adds options with their defaults
    (or drops old ones), and a run finished before the upgrade is still the same experiment.
    :data:`IGNORED_CONFIG_KEYS` (where it ran) never count.
    """
    fa, fb = flatten(a), flatten(b)
    keys = [k for k in fa if k in fb and k not in IGNORED_CONFIG_KEYS]
    return [f"{k}: {json.dumps(fa[k])} -> {json.dumps(fb[k])}" for k in keys if fa[k] != fb[k]]


def runs_by_name(runs_dir: Path) -> dict[str, list[Path]]:
    """Run directories grouped by run name (``mmbal ls``'s reading of them), newest first."""
    found: dict[str, list[Path]] = {}
    for info in list_runs(runs_dir):
        found.setdefault(info.name, []).append(info.path)
    return found


def _attempt(path: Path, config: dict | None) -> Attempt:
    status = read_status(path)
    try:
        old = read_json(path / CONFIG_JSON)
        same = config is None or not config_differences(old, config)
    except (OSError, ValueError):
        same = False
    run_id = path.name.rsplit("_", 1)[-1]
    return Attempt(path, run_id, status["effective_state"], same,
                   (path / CHECKPOINTS_DIR / "last.pt").exists(), status.get("reason"))


def decide(member: Member, attempts: list[Attempt]) -> Task:
    """The action for one member given its attempts (newest first); see the module docstring."""
    for a in attempts:
        if a.state == "finished" and a.same_config:
            return Task(member, "skip", a, "finished")
    for a in attempts:
        if a.state in ("running", "created"):
            return Task(member, "running", a, "running in another process")
        if a.state == "stale":
            return Task(member, "stale", a, a.reason or "heartbeat is stale")
    for a in attempts:
        if a.same_config and a.state in ("interrupted", "failed") and a.has_checkpoint:
            return Task(member, "resume", a, f"{a.state}; resuming from its last checkpoint")
    if attempts:
        a = attempts[0]
        why = "config changed" if not a.same_config else f"{a.state} before its first checkpoint"
        return Task(member, "start", a, f"previous attempt {a.run_id} {why}; starting afresh")
    return Task(member, "start")


def plan_sweep(preset: str | os.PathLike, runs_dir: str | os.PathLike, methods: list[str], seeds: list[int],
               sets: list[str] = (), name: str | None = None, device: str | None = None) -> Plan:
    """Validate every member and decide what to do about each; nothing is started or written.

    Raises :class:`UsageError` (exit 2) when a finished member's config differs from this
    invocation's, and :class:`PresetError` for any invalid member config.
    """
    from .config import load_preset

    preset = Path(preset).resolve()
    runs_dir = Path(runs_dir).expanduser().resolve()
    general, scoped = split_overrides(list(sets), methods)
    if name is None:
        cfg, _ = load_preset(preset, general)
        name = slugify(cfg.name)
    check_sweep_name(name)
    members = build_members(preset, name, methods, seeds, general, scoped, device)
    existing = runs_by_name(runs_dir)
    tasks, conflicts = [], []
    for member in members:
        attempts = [_attempt(p, member.config) for p in existing.get(member.run_name, [])]
        done = any(a.state == "finished" and a.same_config for a in attempts)
        for a in attempts:
            if a.state == "finished" and not a.same_config and not done:
                diffs = config_differences(read_json(a.run_dir / CONFIG_JSON), member.config)
                conflicts.append(f"{member.run_name} (run {a.run_id}) finished with another config: "
                                 + "; ".join(diffs[:4]) + (" ..." if len(diffs) > 4 else ""))
        tasks.append(decide(member, attempts))
    if conflicts:
        raise UsageError(f"sweep '{name}' in {runs_dir} already has finished runs with a different configuration, "
                         f"so they cannot be part of this sweep: " + " | ".join(conflicts)
                         + f". Give this sweep another name with --name (e.g. --name {name}-2).")
    return Plan(name, preset, runs_dir, methods, seeds, general, scoped, device, tasks)


# -- sweep.json ---------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sweep_record(plan: Plan, previous: dict | None) -> dict:
    """The content of ``sweep.json`` for ``plan``, keeping the members and attempts already recorded."""
    old_members = {(m["method"], m["seed"]): m for m in (previous or {}).get("members", [])}
    members = [dict(m) for m in (previous or {}).get("members", [])]
    for task in plan.tasks:
        m = task.member
        if (m.method, m.seed) not in old_members:
            members.append({"method": m.method, "seed": m.seed, "run_name": m.run_name, "attempts": []})
    return {
        "schema": SWEEP_SCHEMA, "name": plan.name, "preset": str(plan.preset),
        "created": (previous or {}).get("created", _now()), "updated": _now(),
        "methods": _union((previous or {}).get("methods", []), plan.methods),
        "seeds": _union((previous or {}).get("seeds", []), plan.seeds),
        "overrides": plan.overrides, "method_options": plan.method_options, "members": members,
    }


def _union(old: list, new: list) -> list:
    return list(old) + [x for x in new if x not in old]


def read_sweep(runs_dir: str | os.PathLike, name: str) -> dict:
    """``sweep.json`` of sweep ``name``; :class:`RunNotFound` (exit 3) with did-you-mean otherwise."""
    path = sweep_dir(runs_dir, name) / SWEEP_JSON
    try:
        record = read_json(path)
    except FileNotFoundError:
        known = list_sweeps(runs_dir)
        listed = f"; sweeps there: {', '.join(known)}" if known else "; there are no sweeps there"
        raise RunNotFound(f"no sweep '{name}' in {Path(runs_dir)}{did_you_mean(name, known)}{listed}") from None
    except (OSError, ValueError) as exc:
        raise RunNotFound(f"sweep '{name}': {path} is damaged ({exc})") from None
    if not isinstance(record.get("members"), list):
        raise RunNotFound(f"sweep '{name}': {path} has no 'members' list")
    return record


def list_sweeps(runs_dir: str | os.PathLike) -> list[str]:
    root = Path(runs_dir) / SWEEPS_DIR
    try:
        return sorted(p.name for p in root.iterdir() if (p / SWEEP_JSON).exists())
    except OSError:
        return []


def choose_attempt(paths: list[Path]) -> Path | None:
    """The attempt that represents a member: the newest finished one, else the newest."""
    for path in paths:
        if read_status(path)["effective_state"] == "finished":
            return path
    return paths[0] if paths else None


def sweep_members(runs_dir: str | os.PathLike, name: str) -> list[tuple[dict, Path | None]]:
    """Each member of sweep ``name`` (method, seed, run_name) with its run directory (None: not started)."""
    record = read_sweep(runs_dir, name)
    existing = runs_by_name(Path(runs_dir))
    return [(m, choose_attempt(existing.get(str(m.get("run_name")), []))) for m in record["members"]]


# -- running ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """How one launched member ended: exit code, its run and (when finished) its summary."""

    task: Task
    returncode: int
    run_dir: Path | None
    run_id: str | None
    state: str
    seconds: float
    log: Path
    summary: dict | None = None
    last_line: str = ""


@dataclass
class SweepResult:
    outcomes: list[Outcome]
    interrupted: bool

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.state != "finished"]


def member_command(plan: Plan, task: Task, python: str = sys.executable) -> list[str]:
    """The argv that runs (or resumes) one member as an ordinary ``mmbal`` process."""
    if task.action == "resume":
        return [python, "-m", "mmbal_cli", "resume", str(task.attempt.run_dir)]
    cmd = [python, "-m", "mmbal_cli", "run", str(plan.preset), "--runs-dir", str(plan.runs_dir),
           "--name", task.member.run_name]
    for item in task.member.overrides:
        cmd += ["--set", item]
    if plan.device:
        cmd += ["--device", plan.device]
    return cmd


def member_env(jobs: int) -> dict[str, str]:
    env = dict(os.environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


@dataclass
class _Live:
    task: Task
    proc: subprocess.Popen
    log: Path
    log_start: int
    started: float


class SweepRunner:
    """Runs a plan's members as subprocesses, ``jobs`` at a time, recording them in ``sweep.json``.

    ``on_event(kind, task, outcome_or_None)`` is told ``"start"`` and ``"end"`` for each member
    and ``"stopping"`` once when an interrupt is being forwarded.
    """

    def __init__(self, plan: Plan, jobs: int = 1, on_event: Callable | None = None, poll_s: float = 0.1,
                 python: str = sys.executable):
        if jobs < 1:
            raise UsageError(f"--jobs: expected at least 1, got {jobs}")
        self.plan, self.jobs, self.poll_s, self.python = plan, jobs, poll_s, python
        self.on_event = on_event or (lambda kind, task, outcome: None)
        self.home = sweep_dir(plan.runs_dir, plan.name)
        self.record: dict = {}
        self._live: list[_Live] = []
        self._interrupts = 0

    def run(self) -> SweepResult:
        """Run the members; a failed write of the sweep's own files (sweep.json, a log) stops the sweep
        with a StorageError after the running members were asked to checkpoint and stop."""
        lock = RunLock(self.home)
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except RunLocked:
            raise RunLocked(f"sweep '{self.plan.name}' is already running in another process "
                            f"({self.home}); wait for it to end or stop it first") from None
        except OSError as exc:
            raise self._storage_error(exc, 0) from None
        try:
            return self._run_locked()
        except OSError as exc:
            stopped = self._stop_members()
            raise self._storage_error(exc, stopped) from None
        finally:
            lock.release()

    def _storage_error(self, exc: OSError, stopped: int) -> BaseException:
        error = failed_write(exc, self.plan.runs_dir)
        return exc if error is None else sweep_write_failed(error, self.home, stopped)

    def _stop_members(self) -> int:
        """SIGINT every running member (each writes a checkpoint and stops) and wait for them."""
        live, self._live = self._live, []
        for item in live:
            _forward_sigint(item.proc)
        for item in live:
            item.proc.wait()
        return len(live)

    def _run_locked(self) -> SweepResult:
        previous = None
        if (self.home / SWEEP_JSON).exists():
            try:
                previous = read_json(self.home / SWEEP_JSON)
            except (OSError, ValueError):
                previous = None
        self.record = sweep_record(self.plan, previous)
        self._save()
        (self.home / LOGS_DIR).mkdir(exist_ok=True)
        queue, outcomes = list(self.plan.todo()), []
        self._live, self._interrupts = [], 0
        previous = _set_handlers(self._on_signal)
        try:
            while self._live or (queue and not self._interrupts):
                while queue and len(self._live) < self.jobs and not self._interrupts:
                    self._launch(queue.pop(0))
                time.sleep(self.poll_s)
                for item in [x for x in self._live if x.proc.poll() is not None]:
                    self._live.remove(item)
                    outcomes.append(self._finish(item))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return SweepResult(outcomes, interrupted=self._interrupts > 0)

    def _on_signal(self, signum, frame) -> None:
        """SIGINT/SIGTERM: forward one SIGINT to every running member and start no new one."""
        self._interrupts += 1
        if self._interrupts == 1:
            self.on_event("stopping", None, None)
        for item in self._live:
            _forward_sigint(item.proc)

    def _launch(self, task: Task) -> _Live:
        log = self.home / LOGS_DIR / f"{task.member.run_name}.log"
        cmd = member_command(self.plan, task, self.python)
        fault_point("sweep-log", log)
        with open(log, "ab") as f:
            start = f.tell()
            f.write(f"== {_now()} {' '.join(cmd)}\n".encode())
            f.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                    env=member_env(self.jobs), start_new_session=True)
        item = _Live(task, proc, log, start, time.perf_counter())
        self._live.append(item)
        if self._interrupts:  # a signal arrived while this member was being started
            _forward_sigint(proc)
        self.on_event("start", task, None)
        return item

    def _finish(self, item: _Live) -> Outcome:
        text = _read_from(item.log, item.log_start)
        match = _STARTED_RE.search(text)
        run_dir = Path(match.group(2)) if match else None
        run_id = match.group(1) if match else None
        code = item.proc.returncode
        stopped = code in (130, -signal.SIGINT) and self._interrupts > 0
        state = read_status(run_dir)["effective_state"] if run_dir else ("interrupted" if stopped else "failed")
        if code != 0 and state == "finished":
            state = "failed"
        summary = None
        if run_dir is not None:
            try:
                summary = read_summary(run_dir)
            except ValueError:
                summary = None
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("== ")] or ["(no output)"]
        outcome = Outcome(item.task, item.proc.returncode, run_dir, run_id, state,
                          time.perf_counter() - item.started, item.log, summary, lines[-1])
        if run_id:
            self._record_attempt(item.task.member, run_id)
        self.on_event("end", item.task, outcome)
        return outcome

    def _record_attempt(self, member: Member, run_id: str) -> None:
        for entry in self.record["members"]:
            if entry["method"] == member.method and entry["seed"] == member.seed:
                if run_id not in entry["attempts"]:
                    entry["attempts"].append(run_id)
                entry["run_id"] = run_id
        self.record["updated"] = _now()
        self._save()

    def _save(self) -> None:
        atomic_write_json(self.home / SWEEP_JSON, self.record)


def _read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", errors="replace")


def _forward_sigint(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass


def _set_handlers(handler) -> dict:
    """Handle SIGINT and SIGTERM with ``handler``; returns the previous handlers.

    Handling SIGINT (rather than inheriting it) also matters for the members: a SIGINT ignored
    by the sweep (a background job of a non-interactive shell) would be inherited as ignored by
    every member, which could then never be asked to stop; a handled signal is reset to the
    default at exec. Outside the main thread signals cannot be set and nothing is installed.
    """
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:
            break
    return previous
