"""What ``mmbal resume`` checks before it touches a run: its files, its data, its checkpoint's shapes.

A resume that is refused leaves every file of the run as it was, so each check here only reads:

* :func:`read_run_files`: ``run.json``, ``config.json`` and ``preset.toml`` present and readable, as
  the resume needs them; a missing or damaged one is a :class:`ResumeRefused` naming it (exit 3).
* :func:`check_data`: the data's fingerprint (:mod:`engine.data.fingerprint`) against the one
  recorded when the run started; a change is refused with what changed, unless the user allows it
  (``--allow-data-change``, then recorded in ``run.json`` and ``metrics.jsonl``). A run started
  before fingerprints were recorded is resumed with a notice.
* :func:`check_checkpoint_fits`: after an allowed change, the model built for the data now has the
  checkpoint's shapes (other dimensions or classes cannot continue the run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data.fingerprint import data_changes, data_fingerprint, split_changes
from ..errors import ResumeRefused, RunNotFound
from ..store import RunPaths, read_json
from ..store.paths import CONFIG_JSON, PRESET_TOML, RUN_JSON

FINGERPRINT_KEY = "data_fingerprint"  # in run.json
RUN_JSON_TEXT_KEYS = ("run_id", "name", "base_dir")
NEW_RUN = "start a new run from its preset with `mmbal run` instead"


@dataclass(frozen=True)
class RunFiles:
    """What a resume reads of a run before anything else."""

    run_info: dict
    config: dict
    preset_text: str


def read_run_files(run_dir: Path) -> RunFiles:
    """``run.json``, ``config.json`` and ``preset.toml`` of ``run_dir``, checked for what a resume uses."""
    paths = RunPaths(run_dir)
    run_info = _json_file(run_dir, paths.run_json, "the run's identity (id, name, overrides)")
    _check_run_info(run_dir, run_info)
    config = _json_file(run_dir, paths.config_json, "the resolved configuration whose locked keys a resume keeps")
    if not _names_its_data(config.get("data")):
        raise _refused(run_dir, f"{CONFIG_JSON} is damaged: its [data] table does not say where the data come "
                                f"from (data.source with data.path or data.synthetic)")
    try:
        preset_text = paths.preset_toml.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise _refused(run_dir, f"{PRESET_TOML} is missing; it holds the run's preset, which the resume "
                                f"reads again with the run's overrides") from None
    except UnicodeDecodeError as exc:
        raise _refused(run_dir, f"{PRESET_TOML} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise _refused(run_dir, f"{PRESET_TOML} cannot be read ({exc.strerror or exc})") from None
    return RunFiles(run_info, config, preset_text)


def _json_file(run_dir: Path, path: Path, holds: str) -> dict:
    try:
        return read_json(path)
    except FileNotFoundError:
        if path.name == RUN_JSON:
            raise RunNotFound(f"{run_dir} is not a usable mmbal run: {RUN_JSON} is missing") from None
        raise _refused(run_dir, f"{path.name} is missing; it holds {holds}") from None
    except ValueError as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise _refused(run_dir, f"{path.name} is damaged ({reason}); it holds {holds}") from None
    except OSError as exc:
        raise _refused(run_dir, f"{path.name} cannot be read ({exc.strerror or exc})") from None


def _names_its_data(data) -> bool:
    """Whether config.json's [data] table says where the data come from (a path, or the generator's options)."""
    if not isinstance(data, dict):
        return False
    if data.get("source") == "parquet":
        return isinstance(data.get("path"), str)
    return data.get("source") == "synthetic" and isinstance(data.get("synthetic"), dict)


def _check_run_info(run_dir: Path, info: dict) -> None:
    bad = [k for k in RUN_JSON_TEXT_KEYS if not isinstance(info.get(k), str)]
    overrides = info.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        bad.append("overrides")
    if not isinstance(info.get("resumed", []), list):
        bad.append("resumed")
    segments = info.get("segments", 1)
    if not isinstance(segments, int) or isinstance(segments, bool) or segments < 1:
        bad.append("segments")
    if bad:
        raise _refused(run_dir, f"{RUN_JSON} is damaged: " + ", ".join(f"'{k}'" for k in bad)
                       + " missing or of the wrong type")


def _refused(run_dir: Path, problem: str) -> ResumeRefused:
    return ResumeRefused(f"resume of {run_dir} refused: {problem}. Nothing in the run was changed; its results "
                         f"stay readable (`mmbal show`, `mmbal compare`); restore the file, or {NEW_RUN}")


# -- the data -------------------------------------------------------------------------------------
@dataclass
class DataCheck:
    """The data's fingerprint now, what changed (allowed) and what to tell the user."""

    current: dict
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_data(run_dir: Path, run_info: dict, config: dict, allow_change: bool) -> DataCheck:
    """Compare the data now with the fingerprint recorded in ``run.json``; refuse a change unless allowed.

    Reads Parquet footers only (and, for the message of a refusal, the label and split columns).
    """
    located = {**config, "base_dir": run_info["base_dir"]}  # relative data paths as the resume resolves them
    current = data_fingerprint(located)
    recorded = run_info.get(FINGERPRINT_KEY)
    changes = _compared(recorded, current)
    if changes is None:
        why = "was started before mmbal recorded its data's fingerprint" if recorded is None else \
            f"has a damaged '{FINGERPRINT_KEY}' in {RUN_JSON}"
        return DataCheck(current, warnings=[f"{run_dir} {why}, so this resume cannot check that the data are "
                                            f"unchanged; it records them now for the next resume"])
    if not changes:
        return DataCheck(current)
    changes += split_changes(recorded, located)
    said = "; ".join(changes)
    if not allow_change:
        raise ResumeRefused(
            f"resume of {run_dir} refused: its data changed since the run started ({said}). Continuing would train "
            f"on other rows and evaluate on another test set than the run's results so far. Restore the data, or "
            f"{NEW_RUN}, or pass --allow-data-change to continue on the changed data (recorded in {RUN_JSON} and "
            f"metrics.jsonl). Nothing in the run was changed")
    return DataCheck(current, changes, [f"the data changed since the run started ({said}); continuing on the changed "
                                        f"data as --allow-data-change asks (recorded in {RUN_JSON} and metrics.jsonl)"])


def _compared(recorded, current: dict) -> list[str] | None:
    """What changed since ``recorded``; None when there is no usable recorded fingerprint (absent, or
    edited into another shape)."""
    if not isinstance(recorded, dict):
        return None
    try:
        return data_changes(recorded, current)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def check_checkpoint_fits(run_dir: Path, state: dict, model, data) -> None:
    """Refuse (before the run's files are rewritten) a checkpoint whose weights do not fit ``model``, or
    whose method's epoch plan names training rows that ``data`` no longer has."""
    _check_weights(run_dir, state, model)
    plan = state.get("plan")
    n_train = data.split_size("train")
    if plan is not None and plan["rows"].numel() and int(plan["rows"].max()) >= n_train:
        raise ResumeRefused(f"resume of {run_dir} refused: the checkpoint stopped inside an epoch whose rows the "
                            f"method chose among the training rows of the data then (up to row "
                            f"{int(plan['rows'].max())}), and the training split now has {n_train} rows; restore "
                            f"the data, or {NEW_RUN}")


def _check_weights(run_dir: Path, state: dict, model) -> None:
    saved, now = state["model"], model.state_dict()
    problems = [f"{k} missing in the checkpoint" for k in now if k not in saved]
    problems += [f"{k} not in the model" for k in saved if k not in now]
    problems += [f"{k} is {list(saved[k].shape)} in the checkpoint, {list(v.shape)} now"
                 for k, v in now.items() if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise ResumeRefused(f"resume of {run_dir} refused: the model built for the data now does not fit the "
                            f"checkpoint ({shown}): the data's shapes or classes changed, which a run cannot "
                            f"continue on even with --allow-data-change; restore the data, or {NEW_RUN}")
