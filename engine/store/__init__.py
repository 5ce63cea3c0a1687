"""The run store: one directory per run holding identity, config, metrics, status and checkpoints.

Plain files and no server (W&B offline / DVCLive model): ``run.json``, ``preset.toml``,
``config.json``, an append-only ``metrics.jsonl``, ``status.json`` with a heartbeat,
``summary.json`` and ``checkpoints/``. See :mod:`engine.store.layout` for names and lookup,
:mod:`engine.store.jsonl` for the metrics log and :mod:`engine.store.status` for liveness.
"""

from engine.store.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_with,
    read_json,
    to_jsonable,
)
from engine.store.jsonl import MetricsLog, MetricsTail, MetricsWriter, read_metrics
from engine.store.layout import (
    CHECKPOINTS_DIR,
    CONFIG_JSON,
    METRICS_JSONL,
    PRESET_TOML,
    RUN_FILES,
    RUN_JSON,
    SUMMARY_JSON,
    RunInfo,
    create_run_dir,
    default_runs_dir,
    usable_runs_dir,
    list_runs,
    new_run_id,
    resolve_run,
    run_dir_name,
    run_dirs,
    run_info,
    slugify,
)
from engine.store.lock import RunLock
from engine.store.names import check_run_name, run_name_problem
from engine.store.runs import read_run_json, read_summary, write_summary
from engine.store.status import (
    FINAL_STATES,
    HEARTBEAT_INTERVAL,
    STATUS_JSON,
    Heartbeat,
    read_status,
    write_status,
)

__all__ = [
    "CHECKPOINTS_DIR",
    "CONFIG_JSON",
    "FINAL_STATES",
    "HEARTBEAT_INTERVAL",
    "METRICS_JSONL",
    "PRESET_TOML",
    "RUN_FILES",
    "RUN_JSON",
    "STATUS_JSON",
    "SUMMARY_JSON",
    "Heartbeat",
    "MetricsLog",
    "MetricsTail",
    "MetricsWriter",
    "RunInfo",
    "RunLock",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_with",
    "check_run_name",
    "create_run_dir",
    "default_runs_dir",
    "usable_runs_dir",
    "list_runs",
    "new_run_id",
    "read_json",
    "read_metrics",
    "read_run_json",
    "read_status",
    "read_summary",
    "resolve_run",
    "run_dir_name",
    "run_dirs",
    "run_info",
    "run_name_problem",
    "slugify",
    "to_jsonable",
    "write_status",
    "write_summary",
]
