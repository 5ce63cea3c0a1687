"""Where runs live and how they are named, created, found and listed.

A run is one directory ``<runs-dir>/<YYYYMMDD-HHMMSS>_<slug>_<id>/`` (``docs/run-directory.md``),
following W&B's ``wandb/run-<timestamp>-<id>/``: the id is 8 random base-36
characters, the timestamp is the creation time in *local* time, so names sort chronologically
and ``latest`` is simply the greatest name. A new directory is assembled under the hidden name
``.<dirname>.creating`` and renamed into place, so nobody ever sees half a run.

``RUN`` references (the CLI's argument) resolve through :func:`resolve_run`: a run id, a unique
id prefix, a run name, the directory's name, a directory path, or ``latest``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import platformdirs

from engine.errors import RunNotFound, UsageError
from engine.faults import fault_point
from engine.registry import did_you_mean
from engine.store.atomic import fsync_dir, naming, read_json
from engine.store.links import no_follow_opener
from engine.store.meta import read_meta
from engine.store.paths import RUN_JSON, STATUS_JSON, SUMMARY_JSON, RunPaths
from engine.store.status import read_status, write_status

RUNS_DIR_ENV = "MMBAL_RUNS_DIR"
RUN_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
RUN_ID_LENGTH = 8
SLUG_MAX = 60
MIN_PREFIX = 2
CREATING_SUFFIX = ".creating"

_RUN_DIR_RE = re.compile(r"^(\d{8}-\d{6})_(.+)_([0-9a-z]{8})$")
_SLUG_BAD = re.compile(r"[^a-z0-9._-]+")


def default_runs_dir(override: str | os.PathLike | None = None) -> Path:
    """``override``, else ``$MMBAL_RUNS_DIR``, else ``platformdirs.user_data_path("mmbal")/"runs"``."""
    if override is not None and str(override) != "":
        return Path(override).expanduser()
    env = os.environ.get(RUNS_DIR_ENV, "")
    if env:
        return Path(env).expanduser()
    return platformdirs.user_data_path("mmbal", appauthor=False) / "runs"


def usable_runs_dir(runs_dir: Path) -> Path:
    """``runs_dir``, unless it (or the nearest existing folder above it) is a file: then a usage error."""
    existing = next((p for p in (runs_dir, *runs_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"--runs-dir {runs_dir}: {existing} is a file, not a directory; choose a runs directory "
                         f"with --runs-dir or $MMBAL_RUNS_DIR")
    return runs_dir


def new_run_id() -> str:
    """8 lowercase base-36 characters from :mod:`secrets` (about 2.8e12 possibilities)."""
    return "".join(secrets.choice(RUN_ID_ALPHABET) for _ in range(RUN_ID_LENGTH))


def slugify(name: str) -> str:
    """A file-name-safe form of ``name``: ``[a-z0-9._-]``, at most 60 characters, never empty.

    Accents are stripped (NFKD), other runs of unsafe characters become one ``-``, and leading
    or trailing ``.``/``-``/``_`` are dropped (no hidden names, no ``..``). Empty -> ``"run"``.
    """
    text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    slug = _SLUG_BAD.sub("-", text.lower()).strip(".-_")
    slug = slug[:SLUG_MAX].rstrip(".-_")
    return slug or "run"


def run_dir_name(name: str, run_id: str, when: datetime) -> str:
    """``YYYYMMDD-HHMMSS_<slug>_<id>`` with ``when`` formatted as given (callers pass local time)."""
    return f"{when:%Y%m%d-%H%M%S}_{slugify(name)}_{run_id}"


def _checked_relative(name: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or any(part in ("", "..") for part in rel.parts) or "\\" in name:
        raise ValueError(f"run file name '{name}' must be a relative path inside the run directory")
    return rel


def _write_synced(path: Path, data: bytes | str, final: Path) -> None:
    """Write ``path`` (inside the ``.creating`` directory); an ``OSError`` names ``final``, the file's
    path once the run directory is in place."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"content of run file '{path.name}' must be bytes, got {type(data).__name__}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb", opener=no_follow_opener) as f:
            fault_point(path.name, final, partial=lambda: f.write(payload[: len(payload) // 2]))
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise naming(exc, final)


def _write_created_status(tmp: Path, final: Path) -> None:
    try:
        write_status(tmp, "created")
    except OSError as exc:
        raise naming(exc, RunPaths(final).status)


def create_run_dir(
    runs_dir: str | os.PathLike,
    name: str,
    run_id: str,
    files: dict[str, bytes],
    *,
    when: datetime | None = None,
) -> Path:
    """Create the complete run directory and return its path.

    Everything (``files``, an empty ``checkpoints/`` and, unless ``files`` has one, a
    ``status.json`` in state ``"created"`` stamped with this process) is written under
    ``runs_dir/.<dirname>.creating`` and then renamed to ``runs_dir/<dirname>`` in one step; on
    any failure the temporary directory is removed and nothing is visible. ``when`` defaults to
    the current local time. Raises ``FileExistsError`` if the directory already exists, and an
    ``OSError`` naming the file (as it would be named in the finished directory) when a write
    fails.
    """
    runs_dir = Path(runs_dir)
    rels = {n: _checked_relative(n) for n in files}
    dirname = run_dir_name(name, run_id, when or datetime.now())
    final = runs_dir / dirname
    tmp = runs_dir / f".{dirname}{CREATING_SUFFIX}"
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        if final.exists():
            raise FileExistsError(f"run directory {final} already exists")
        tmp.mkdir()
    except OSError as exc:  # a read-only or full runs directory: name the run directory it was making
        raise naming(exc, final)
    try:
        for file_name, data in files.items():
            _write_synced(tmp / rels[file_name], data, final / rels[file_name])
        if STATUS_JSON not in files:
            _write_created_status(tmp, final)
        RunPaths(tmp).checkpoints.mkdir(exist_ok=True)
        fsync_dir(tmp)
        if final.exists():
            raise FileExistsError(f"run directory {final} already exists")
        fault_point("run-dir", final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(runs_dir)
    return final


def run_dirs(runs_dir: str | os.PathLike) -> list[Path]:
    """Run directories in ``runs_dir``, newest first (by name); hidden and ``.creating`` ones skipped."""
    try:
        entries = list(os.scandir(runs_dir))
    except OSError:
        return []
    found = [
        Path(e.path)
        for e in entries
        if not e.name.startswith(".") and _RUN_DIR_RE.match(e.name) and e.is_dir()
    ]
    return sorted(found, key=lambda p: p.name, reverse=True)


def runs_named(runs_dir: str | os.PathLike, name: str) -> list[Path]:
    """The run directories in ``runs_dir`` whose run is named ``name``, newest first. Only directories
    whose name carries ``name``'s slug have their ``run.json`` read (a start checks this, in a runs
    directory that may hold thousands of runs)."""
    slug = slugify(name)
    return [p for p in run_dirs(runs_dir) if _slug_of(p) == slug and _name_of(p) == name]


def _id_of(path: Path) -> str:
    match = _RUN_DIR_RE.match(path.name)
    return match.group(3) if match else ""


def _slug_of(path: Path) -> str:
    match = _RUN_DIR_RE.match(path.name)
    return match.group(2) if match else path.name


def _created_of(path: Path) -> str:
    match = _RUN_DIR_RE.match(path.name)
    if not match:
        return ""
    return datetime.strptime(match.group(1), "%Y%m%d-%H%M%S").strftime("%Y-%m-%d %H:%M:%S")


def _name_of(path: Path) -> str:
    try:
        name = read_json(RunPaths(path).run_json).get("name")
    except (OSError, ValueError):
        return _slug_of(path)
    return name if isinstance(name, str) and name else _slug_of(path)


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or os.sep in ref or ref.startswith((".", "~")) or Path(ref).is_absolute()


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and (RunPaths(path).run_json.exists() or bool(_RUN_DIR_RE.match(path.name)))


def _ambiguous(ref: str, what: str, matches: list[Path], runs_dir: Path) -> RunNotFound:
    listed = "; ".join(f"{p.name} (id {_id_of(p)}, name '{_name_of(p)}')" for p in matches)
    return RunNotFound(
        f"'{ref}' is ambiguous: it is the {what} of {len(matches)} runs in {runs_dir}: {listed}. "
        f"Use a longer id prefix or the full id."
    )


def _resolve_path(ref: str) -> Path:
    path = Path(ref).expanduser()
    if not path.exists():
        raise RunNotFound(f"run directory {path} does not exist")
    if not _is_run_dir(path):
        raise RunNotFound(f"{path} is not an mmbal run directory (it has no {RUN_JSON})")
    return path.resolve()


def resolve_run(runs_dir: str | os.PathLike, ref: str) -> Path:
    """The directory of the run ``ref`` names; raises :class:`RunNotFound` otherwise.

    Tried in this order: ``latest``; a path (anything with a separator, or starting with ``.``
    or ``~``); in ``runs_dir``: an exact run id, a directory name, a run name (``name`` in
    run.json), a unique id prefix of at least 2 characters; finally a directory relative to the
    working directory. Several runs sharing a name or a prefix is an error listing them.
    """
    runs_dir = Path(runs_dir)
    ref = str(ref).strip()
    if not ref:
        raise RunNotFound("no run given: pass a run id, an id prefix, a run name, a path or 'latest'")
    if _looks_like_path(ref):
        return _resolve_path(ref)
    dirs = run_dirs(runs_dir)
    if ref == "latest":
        if not dirs:
            raise RunNotFound(f"there is no run in {runs_dir} yet, so 'latest' names nothing; start one with "
                              f"`mmbal run presets/quickstart.toml` (or choose another runs directory with "
                              f"--runs-dir or ${RUNS_DIR_ENV})")
        return dirs[0]
    rules = (
        ("id", lambda p: _id_of(p) == ref),
        ("directory name", lambda p: p.name == ref),
        ("name", lambda p: _name_of(p) == ref),
    )
    for what, matches_rule in rules:
        matches = [p for p in dirs if matches_rule(p)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise _ambiguous(ref, what, matches, runs_dir)
    if len(ref) >= MIN_PREFIX:
        matches = [p for p in dirs if _id_of(p).startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise _ambiguous(ref, "id prefix", matches, runs_dir)
    if Path(ref).is_dir() and _is_run_dir(Path(ref)):
        return Path(ref).resolve()
    raise _not_found(ref, dirs, runs_dir)


def _elsewhere(ref: str, runs_dir: Path) -> str:
    """A hint naming ``./runs`` when ``ref`` is a run there (the usual ``--runs-dir ./runs`` of a
    project folder) and the search looked in another runs directory."""
    local = Path("runs")
    if not local.is_dir() or local.resolve() == runs_dir.resolve():
        return ""
    try:
        resolve_run(local, ref)
    except RunNotFound:
        return ""
    return f"; ./runs has a run '{ref}': pass --runs-dir ./runs (or set ${RUNS_DIR_ENV})"


def _named_from(ref: str, dirs: list[Path], names: dict[Path, str], shown: int = 3) -> str:
    """" (did you mean 'iris-ogm_ge'?)" for the runs whose name starts with ``ref``, newest first: a run's
    name is the preset's name followed by ``-<method>``, so the preset's name alone finds no run."""
    matches = list(dict.fromkeys(names[p] for p in dirs if names[p].startswith(ref)))
    if not matches:
        return ""
    quoted = [f"'{name}'" for name in matches[:shown]]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    rest = len(matches) - shown
    more = (f" {rest} more {'name starts' if rest == 1 else 'names start'} with '{ref}': "
            f"`mmbal ls --filter 'name={ref}*'`" if rest > 0 else "")
    return f" (did you mean {listed}?{more})"


def _not_found(ref: str, dirs: list[Path], runs_dir: Path) -> RunNotFound:
    elsewhere = _elsewhere(ref, runs_dir)
    if not runs_dir.is_dir():
        return RunNotFound(
            f"no run '{ref}': the runs directory {runs_dir} does not exist "
            f"(choose it with --runs-dir or ${RUNS_DIR_ENV}){elsewhere}"
        )
    names = {p: _name_of(p) for p in dirs}
    hint = _named_from(ref, dirs, names) or did_you_mean(ref, sorted({_id_of(p) for p in dirs} | set(names.values())))
    short = " (an id prefix needs at least 2 characters)" if len(ref) < MIN_PREFIX else ""
    return RunNotFound(
        f"no run '{ref}' in {runs_dir}{hint}{short}: searched {len(dirs)} runs by id, id prefix, "
        f"name and directory name, and the working directory for a path{elsewhere}; `mmbal ls` lists the runs."
    )


@dataclass(frozen=True)
class RunInfo:
    """One line of ``mmbal ls``; ``state`` is the effective state, or ``"damaged"`` with ``error`` (a heartbeat
    from a clock ahead of this host's is ``"unknown"`` with ``error`` saying so: nothing is damaged)."""

    path: Path
    run_id: str
    name: str
    created: str
    method: str | None
    dataset: str | None
    state: str
    epoch: float | int | None
    step: int | None
    error: str | None = None
    epochs: int | None = None          # the epochs the run is planned to train
    selected: dict | None = None       # summary.json's "selected": {metric, value, epoch, step}
    tags: tuple[str, ...] = ()         # meta.json's tags (`mmbal tag`)


def _text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("name")
    return str(value) if value not in (None, "") else None


def _dataset_from_config(config: dict) -> str | None:
    data = config.get("data")
    if not isinstance(data, dict):
        return None
    if data.get("path"):
        return PurePosixPath(str(data["path"]).replace("\\", "/")).name
    return _text(data.get("source"))


def _method_and_dataset(path: Path, meta: dict) -> tuple[str | None, str | None]:
    method, dataset = _text(meta.get("method")), _text(meta.get("dataset"))
    if method is not None and dataset is not None:
        return method, dataset
    try:
        config = read_json(RunPaths(path).config_json)
    except (OSError, ValueError):
        return method, dataset
    return method or _text(config.get("method")), dataset or _dataset_from_config(config)


def _read_meta(path: Path) -> tuple[dict, str | None]:
    try:
        return read_json(RunPaths(path).run_json), None
    except FileNotFoundError:
        return {}, f"{RUN_JSON} is missing"
    except (OSError, ValueError) as e:
        return {}, f"{RUN_JSON} unreadable: {e}"


def _read_summary(path: Path, finished: bool) -> tuple[dict, str | None]:
    """``summary.json`` and its problem: unreadable, or missing although the run finished (it has
    none before its first checkpoint)."""
    try:
        return read_json(RunPaths(path).summary), None
    except FileNotFoundError:
        return {}, (f"{SUMMARY_JSON} is missing although the run finished" if finished else None)
    except (OSError, ValueError) as e:
        return {}, f"{SUMMARY_JSON} unreadable: {e}"


def _selected(summary: dict) -> dict | None:
    sel = summary.get("selected") if isinstance(summary, dict) else None
    ok = isinstance(sel, dict) and isinstance(sel.get("metric"), str) and isinstance(sel.get("value"), (int, float))
    return {k: sel.get(k) for k in ("metric", "value", "epoch", "step")} if ok else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def run_info(path: str | os.PathLike) -> RunInfo:
    """What ``mmbal ls`` shows for one run directory; never raises for damaged files."""
    path = Path(path)
    meta, meta_error = _read_meta(path)
    status = read_status(path)
    status_error = status.get("reason") if status["effective_state"] == "unknown" else None
    summary, summary_error = _read_summary(path, finished=status["effective_state"] == "finished")
    error = "; ".join(e for e in (meta_error, status_error, summary_error) if e) or None
    damaged = bool(meta_error or summary_error or (status_error and "clock_ahead" not in status))
    method, dataset = _method_and_dataset(path, meta)
    step, epoch = status.get("step"), status.get("epoch")
    return RunInfo(
        path=path,
        run_id=str(meta.get("run_id") or _id_of(path)),
        name=str(meta.get("name") or _slug_of(path)),
        created=str(meta.get("created") or _created_of(path)),
        method=method,
        dataset=dataset,
        state="damaged" if damaged else status["effective_state"],  # a clock ahead damages nothing: "unknown"
        epoch=epoch if isinstance(epoch, (int, float)) and not isinstance(epoch, bool) else None,
        step=_count(step),
        error=error,
        epochs=_count(status.get("epochs")) if _count(status.get("epochs")) is not None else _count(summary.get("epochs")),
        selected=_selected(summary),
        tags=tuple(read_meta(path)["tags"]),
    )


def list_runs(runs_dir: str | os.PathLike) -> list[RunInfo]:
    """Every run in ``runs_dir``, newest first; a missing directory gives ``[]``."""
    return [run_info(p) for p in run_dirs(runs_dir)]
