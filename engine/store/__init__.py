"""The run store: one directory per run holding identity, config, metrics, status and checkpoints.

Plain files and no server (W&B offline / DVCLive model). The store is the only owner of the run
directory's layout; its modules, one concept each:

* ``paths``: :class:`RunPaths`, the name of every file of a run directory (and temporary names);
* ``layout``: where runs live, how a run directory is named, created (in one rename), found and listed;
* ``names``: which run names are allowed;
* ``atomic``: crash-safe file replacement and strict JSON;
* ``jsonl``: the append-only ``metrics.jsonl``: writer, tolerant reader, live tail;
* ``status``: ``status.json`` and its heartbeat, and whether a run is alive;
* ``runs``: ``run.json`` and ``summary.json``;
* ``checkpoints``: checkpoint files: checksum, atomic write, ``last`` -> ``previous`` rotation, the
  newest intact one on resume;
* ``lock``: one writer per run (``flock``);
* ``write_errors``: a failed write (disk full, read-only) as a :class:`~engine.errors.StorageError`.
"""

from engine.store.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_with,
    read_json,
    to_jsonable,
)
from engine.store.checkpoints import (
    CheckpointDamaged,
    load_checkpoint,
    newest_good_checkpoint,
    save_run_checkpoint,
    write_checkpoint,
)
from engine.store.jsonl import MetricsLog, MetricsTail, MetricsWriter, read_metrics
from engine.store.layout import (
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
from engine.store.paths import (
    CHECKPOINTS_DIR,
    CONFIG_JSON,
    METRICS_JSONL,
    PRESET_TOML,
    RUN_FILES,
    RUN_JSON,
    STATUS_JSON,
    SUMMARY_JSON,
    RunPaths,
)
from engine.store.runs import read_run_json, read_summary, write_summary
from engine.store.status import (
    FINAL_STATES,
    HEARTBEAT_INTERVAL,
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
    "CheckpointDamaged",
    "Heartbeat",
    "MetricsLog",
    "MetricsTail",
    "MetricsWriter",
    "RunInfo",
    "RunLock",
    "RunPaths",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_with",
    "check_run_name",
    "create_run_dir",
    "default_runs_dir",
    "usable_runs_dir",
    "list_runs",
    "load_checkpoint",
    "new_run_id",
    "newest_good_checkpoint",
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
    "save_run_checkpoint",
    "slugify",
    "to_jsonable",
    "write_checkpoint",
    "write_status",
    "write_summary",
]
