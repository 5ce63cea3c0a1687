"""The data's memory budget bounds memory (issue #21, item 5), ``data synth`` files' mode (item 10) and
``data.memory_budget = "auto"`` under a control group's limit (#20).

The peak-RSS tests run the loading in a subprocess, which first loads and iterates a tiny file (so
that the interpreter's, Arrow's and torch's one-time allocations are in the baseline), then measures
how much the peak RSS (``VmHWM``) grows while the real file is loaded and one epoch is read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

import engine.data.memory as memory
import engine.data.stream as stream_mod
from engine.data import DataConfig, StreamData, TensorData, load_data, write_dataset
from engine.data.memory import cgroup_available_bytes, host_available_bytes, resident_estimate, resident_peak
from engine.data.writer import MAX_GROUP_ROWS, ROW_GROUP_BYTES, group_rows
from engine.errors import DataError
from engine.schema import build

MIB = 2 ** 20


def data_cfg(path, **options) -> DataConfig:
    problems: list[str] = []
    cfg = build(DataConfig, {"path": str(path), **options}, "data", problems)
    assert not problems, problems
    return cfg


def write_rows(path: Path, n: int, seed: int = 0, **kwargs) -> Path:
    """``n`` rows of modalities a (80,) and b (20,): 408 bytes a row once resident."""
    rng = np.random.default_rng(seed)
    features = {"a": rng.normal(size=(n, 80)).astype(np.float32), "b": rng.normal(size=(n, 20)).astype(np.float32)}
    write_dataset(path, features, rng.integers(0, 3, n), None, ["x", "y", "z"], name="m", **kwargs)
    return path


# ----------------------------------------------------------------------------------------------
# the writer: small row groups, the umask's mode


def test_the_writer_writes_row_groups_of_about_eight_mib(tmp_path):
    assert group_rows({"a": np.zeros((1, 80)), "b": np.zeros((1, 20))}) == ROW_GROUP_BYTES // 408 == 20560
    assert group_rows({"a": np.zeros((1, 2))}) == MAX_GROUP_ROWS
    assert group_rows({"a": np.zeros((1, 3, 2048, 2048))}) == 1
    meta = pq.ParquetFile(write_rows(tmp_path / "d.parquet", 50_000)).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [20560, 20560, 8880]
    meta = pq.ParquetFile(write_rows(tmp_path / "e.parquet", 1000, row_group_rows=300)).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [300, 300, 300, 100]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_data_synth_files_get_the_mode_of_the_umask(tmp_path, umask, mode):
    from mmbal_cli.app import app
    old = os.umask(umask)
    try:
        res = CliRunner().invoke(app, ["data", "synth", str(tmp_path / "s.parquet"), "--samples", "60"])
        write_rows(tmp_path / "w.parquet", 10)
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s.parquet").stat().st_mode & 0o777 == mode
    assert (tmp_path / "w.parquet").stat().st_mode & 0o777 == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.parquet", "w.parquet"]   # no temporary file left


# ----------------------------------------------------------------------------------------------
# streaming a file of one huge row group, in slices


def test_a_huge_row_group_streams_in_slices_with_every_row_once(tmp_path, monkeypatch):
    path = write_rows(tmp_path / "one.parquet", 3000, row_group_rows=1 << 20)
    monkeypatch.setattr(stream_mod, "SLICE_BYTES", 418 * 700)   # 418 bytes a row: slices of 700 rows
    data = load_data(data_cfg(path, mode="stream", shuffle_window=2, prefetch=1, standardize="none"), None, 3,
                     Path("."), "cpu")
    assert isinstance(data, StreamData)
    assert [(u.group, u.offset, u.rows) for u in data.units] == [(0, 0, 700), (0, 700, 700), (0, 1400, 700),
                                                                  (0, 2100, 700), (0, 2800, 200)]
    resident = load_data(data_cfg(path, mode="resident", standardize="none"), None, 3, Path("."), "cpu")
    train = resident.splits["train"]
    batches = data.train_epoch(3, 0, 64, False)
    rows = [x["a"] for x, *_ in batches.iterate(0)]
    seen, expected = torch.cat(rows), resident.x["a"][train]
    assert seen.shape[0] == train.numel() == 2100
    assert torch.equal(seen[seen[:, 0].argsort()], expected[expected[:, 0].argsort()])   # each row once
    tail = torch.cat([x["a"] for x, *_ in batches.iterate(len(batches) - 3)])   # resumed inside the epoch
    assert torch.equal(tail, torch.cat(rows[-3:]))


PROBE = r"""
import json, sys
from pathlib import Path
import numpy as np
from engine.data import DataConfig, load_data, write_dataset
from engine.errors import DataError
from engine.schema import build

def peak():
    # VmHWM, the peak RSS of this process's memory since its exec; not ru_maxrss, which Linux carries over
    # exec from the forked parent (a pytest process of 800 MB would hide every growth below that)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

def run(path, options):
    problems = []
    cfg = build(DataConfig, {"path": str(path), **options}, "data", problems)
    data = load_data(cfg, None, 0, Path("."), "cpu")
    for batch in data.train_epoch(0, 0, 256, False).iterate(0):
        pass
    return data

path, options = sys.argv[1], json.loads(sys.argv[2])
rng = np.random.default_rng(1)
tiny = Path(path).with_name("tiny.parquet")
write_dataset(tiny, {"a": rng.normal(size=(2000, 80)), "b": rng.normal(size=(2000, 20))}, rng.integers(0, 3, 2000),
              None, ["x", "y", "z"], name="t")
run(tiny, options)
before = peak()
try:
    data = run(path, options)
except DataError as exc:
    print(json.dumps({"refused": str(exc)}))
else:
    print(json.dumps({"grew": peak() - before, "placement": data.placement.to_dict(),
                      "working_set": getattr(data, "working_set_bytes", lambda: 0)()}))
"""


def probe(path: Path, **options) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path), json.dumps(options)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def one_group(tmp_path_factory) -> Path:
    """61 MiB of resident features in one row group of 150,000 rows (pyarrow's default would do the same)."""
    return write_rows(tmp_path_factory.mktemp("budget") / "one.parquet", 150_000, row_group_rows=1 << 20)


def test_streaming_a_file_of_one_huge_row_group_stays_within_the_budget(one_group):
    budget = 128 * MIB
    result = probe(one_group, mode="stream", memory_budget="128MiB", shuffle_window=2, prefetch=1)
    assert "refused" not in result, result              # main: refused (the whole group is one unit)
    assert result["working_set"] <= budget
    assert result["grew"] <= budget, result              # measured, not estimated
    assert result["grew"] < resident_estimate(150_000, [(80,), (20,)]) * 2   # well below a resident load


def test_the_resident_estimate_covers_the_measured_peak_and_auto_follows_it(one_group):
    resident = resident_estimate(150_000, [(80,), (20,)])
    peak = resident_peak(150_000, [(80,), (20,)], 150_000)
    result = probe(one_group, memory_budget=str(peak))
    assert result["placement"] == {"mode": "resident", "estimate_bytes": peak, "budget_bytes": peak,
                                   "chosen_by": "auto", "resident_bytes": resident}
    assert resident < result["grew"] <= peak, result     # main estimated the resident size alone
    under = probe(one_group, memory_budget=str(peak - 1))
    assert under["placement"]["mode"] == "stream" and under["grew"] <= peak - 1, under


def test_resident_over_the_peak_is_refused_with_the_peak_in_the_message(tmp_path):
    path = write_rows(tmp_path / "d.parquet", 500, row_group_rows=100)
    peak = resident_peak(500, [(80,), (20,)], 100)
    with pytest.raises(DataError) as info:
        load_data(data_cfg(path, mode="resident", memory_budget=peak - 1), None, 0, Path("."), "cpu")
    text = str(info.value)
    assert info.value.exit_code == 2 and str(path) in text
    assert f"({peak} bytes at the peak of loading it, 204 KiB once loaded" in text
    data = load_data(data_cfg(path, mode="resident", memory_budget=peak), None, 0, Path("."), "cpu")
    assert isinstance(data, TensorData) and data.placement.estimate_bytes == peak


# ----------------------------------------------------------------------------------------------
# "auto" under a control group's limit


def fake_cgroup_v2(root: Path, limit: str, current: int, inactive: int, parent_limit: str = "max") -> Path:
    (root / "job").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    for folder, value in ((root, None), (root / "job", limit)):
        if value is not None:
            (folder / "memory.max").write_text(value + "\n")
    (root / "memory.max").write_text(parent_limit + "\n") if parent_limit != "max" else None
    (root / "job" / "memory.current").write_text(f"{current}\n")
    (root / "job" / "memory.stat").write_text(f"anon 1\ninactive_file {inactive}\nactive_file 7\n")
    proc = root / "self_cgroup"
    proc.write_text("0::/job\n")
    return proc


def test_cgroup_v2_limit_less_usage_without_reclaimable_cache(tmp_path):
    proc = fake_cgroup_v2(tmp_path, str(800 * MIB), 300 * MIB, 100 * MIB)
    assert cgroup_available_bytes(tmp_path, proc) == 600 * MIB
    (tmp_path / "job" / "memory.max").write_text("max\n")
    assert cgroup_available_bytes(tmp_path, proc) is None          # no limit
    (tmp_path / "memory.max").write_text(f"{500 * MIB}\n")           # a limit on the parent (a SLURM job's)
    (tmp_path / "memory.current").write_text(f"{450 * MIB}\n")
    assert cgroup_available_bytes(tmp_path, proc) == 50 * MIB


def test_cgroup_v1_memory_controller(tmp_path):
    group = tmp_path / "memory" / "slurm" / "job_7"
    group.mkdir(parents=True)
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(f"{2 ** 63 - 4096}\n")   # v1's "no limit"
    (group / "memory.limit_in_bytes").write_text(f"{1024 * MIB}\n")
    (group / "memory.usage_in_bytes").write_text(f"{400 * MIB}\n")
    (group / "memory.stat").write_text(f"cache 5\ntotal_inactive_file {150 * MIB}\n")
    proc = tmp_path / "self_cgroup"
    proc.write_text("12:pids:/slurm/job_7\n4:memory:/slurm/job_7\n1:name=systemd:/x\n")
    assert cgroup_available_bytes(tmp_path, proc) == 774 * MIB
    proc.write_text("4:memory:/\n")        # a container's namespace: its own group is the mount
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(f"{256 * MIB}\n")
    assert cgroup_available_bytes(tmp_path, proc) == 256 * MIB      # no usage file there: nothing used
    assert cgroup_available_bytes(tmp_path / "nothing", proc) is None


def test_auto_budget_is_half_of_what_the_cgroup_still_allows(tmp_path, monkeypatch):
    proc = fake_cgroup_v2(tmp_path, str(800 * MIB), 300 * MIB, 100 * MIB)
    monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(memory, "PROC_SELF_CGROUP", proc)
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 64 * 2 ** 30)
    assert host_available_bytes() == 600 * MIB
    cfg = data_cfg("x.parquet", memory_budget="auto")
    assert memory.memory_budget(cfg, torch.device("cpu")) == 300 * MIB
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 100 * MIB)   # the host has less: the host's
    assert memory.memory_budget(cfg, torch.device("cpu")) == 50 * MIB
