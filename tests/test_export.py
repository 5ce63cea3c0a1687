"""``mmbal export``: a run exports to each backend and reads back (TensorBoard's EventAccumulator, W&B's
offline run file, MLflow's file store), runs again without doubling a point, and follows a live run."""

import json
import math
import shutil
import struct
import sys

import pytest
from typer.testing import CliRunner

from engine.analysis.api import Run
from engine.analysis.export import Sink, export_run, open_sink
from engine.analysis.export.sink import row_values, series_name
from engine.errors import UsageError
from engine.run import resume_run, start_run
from engine.store import MetricsWriter, write_status
from mmbal_cli.app import app

from runtools import InterruptAt, tiny_preset

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    """A tiny run of 2 epochs (7 steps each), interrupted after step 10 and resumed to its end."""
    folder = tmp_path_factory.mktemp("export")
    (folder / "p.toml").write_text(tiny_preset(epochs=2, name="ex"))
    cut = start_run(folder / "p.toml", runs_dir=folder / "runs", reporter=InterruptAt(10))
    resume_run(cut.run_id, runs_dir=folder / "runs")
    return Run(cut.run_dir)


def series(run, name):
    """``[(step, value)]`` of series ``name`` in the run's metric rows."""
    return [(r["step"], v) for r in run.log().metric_rows() for k, v in row_values(r).items() if k == name]


def test_series_names_carry_their_split():
    assert series_name("val", "val/acc/fused") == "val/acc/fused"
    assert series_name("val", "mi/a") == "val/mi/a"
    assert series_name("train", "lr") == "train/lr"


def test_csv_reads_back_as_the_metrics_table_and_a_second_export_rewrites_it(run, tmp_path):
    import pyarrow.csv as pacsv

    out = tmp_path / "m.csv"
    result = export_run(run, open_sink("csv", run, out))
    assert result.complete and result.rows == run.metrics().num_rows
    first = out.read_bytes()
    back = pacsv.read_csv(out)
    expected = run.metrics()
    assert back.column_names == expected.column_names
    assert back.column("val/acc/fused").to_pylist() == expected.column("val/acc/fused").to_pylist()
    assert back.column("step").to_pylist() == expected.column("step").to_pylist()
    export_run(run, open_sink("csv", run, out))
    assert out.read_bytes() == first
    assert not [p for p in tmp_path.iterdir() if p.name != "m.csv"]   # no temporary file left


def test_parquet_reads_back_equal_and_defaults_into_the_run(run):
    import pyarrow.parquet as pq

    result = export_run(run, open_sink("parquet", run))
    assert result.target == str(run.path / "exports" / "metrics.parquet")
    assert pq.read_table(run.path / "exports" / "metrics.parquet").equals(run.metrics())


def test_tensorboard_event_files_read_back(run, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for _ in range(2):   # the second export replaces the first's event file
        export_run(run, open_sink("tensorboard", run, tmp_path / "tb"))
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    for name in ("val/acc/fused", "val/mi/a", "train/coef/a", "test/acc/fused"):
        points = [(e.step, e.value) for e in acc.Scalars(name)]
        assert [s for s, _ in points] == [s for s, _ in series(run, name)], name
        assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(points, series(run, name)))
    assert "config" in " ".join(acc.Tags()["tensors"])


def wandb_records(path):
    """The protobuf records of a W&B transaction log (``run-<id>.wandb``: a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, part = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        part += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):   # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(part)
            part = b""
            yield record


def test_wandb_offline_run_reads_back(run, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    export_run(run, open_sink("wandb", run, tmp_path / "wb", project="mmbal-test"))
    [log] = (tmp_path / "wb").glob(f"wandb/offline-run-*-{run.run_id}/run-{run.run_id}.wandb")
    history, config, summary = {}, {}, {}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            history[items["_step"]] = items
        elif kind == "run":
            config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
            assert (record.run.run_id, record.run.display_name) == (run.run_id, run.name)
        elif kind == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in record.summary.update if i.key})
    assert sorted(history) == sorted({r["step"] for r in run.log().metric_rows()})
    for name in ("val/acc/fused", "train/acc/fused", "test/imbalance"):
        assert [(s, history[s][name]) for s, _ in series(run, name)] == series(run, name)
    lr = config["train.lr"]
    assert (lr["value"] if isinstance(lr, dict) else lr) == 0.05   # older W&B wraps it in {"value": ...}
    assert summary["test/acc/fused"] == run.summary["test"]["test/acc/fused"]


def test_mlflow_file_store_reads_back_and_a_second_export_replaces_the_run(run, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    store = tmp_path / "mlruns"
    for _ in range(2):
        export_run(run, open_sink("mlflow", run, store))
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("mmbal")
    [active] = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ACTIVE_ONLY)
    assert len(client.search_runs([experiment.experiment_id], run_view_type=ViewType.DELETED_ONLY)) == 1
    mid = active.info.run_id
    for name in ("val/acc/fused", "train/acc/fused", "test/acc/fused"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(mid, name))
        assert history == series(run, name), name
    assert [m.step for m in client.get_metric_history(mid, "val/mi/a_b")] == [7, 14]   # "mi/a;b": ';' is not allowed
    assert active.data.params["train.lr"] == "0.05"
    assert active.data.tags["mmbal.run_id"] == run.run_id and active.info.status == "FINISHED"


class Recorder(Sink):
    """A sink that records what the feed asks of it."""

    name = "recorder"
    target = "memory"

    def __init__(self, run):
        super().__init__(run)
        self.calls, self.rows = [], []

    def start(self, params):
        self.calls.append("start")

    def write(self, rows):
        self.calls.append(("write", len(rows)))
        self.rows += rows

    def rewind(self):
        self.calls.append("rewind")
        self.rows = []

    def finish(self, summary, complete):
        self.calls.append(("finish", complete))


def live_copy(run, tmp_path, keep_lines):
    """A copy of the run that looks live (status running, this process) with only its first lines logged;
    returns it and the lines still to come."""
    copy = tmp_path / run.path.name
    shutil.copytree(run.path, copy)
    lines = (copy / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    (copy / "metrics.jsonl").write_bytes(b"".join(lines[:keep_lines]))
    write_status(copy, "running")
    return Run(copy), lines[keep_lines:]


def test_follow_exports_records_as_they_come_until_the_run_ends(run, tmp_path):
    live, rest = live_copy(run, tmp_path, keep_lines=4)
    sink = Recorder(live)

    def more(_seconds):   # the run logs a few more lines between polls, then finishes
        chunk = [rest.pop(0) for _ in range(min(5, len(rest)))]
        with open(live.paths.metrics, "ab") as f:
            f.write(b"".join(chunk))
        if not rest:
            write_status(live.path, "finished")

    result = export_run(live, sink, follow=True, sleep=more)
    writes = [c for c in sink.calls if c[0] == "write"]
    assert len(writes) > 2 and sink.calls[0] == "start" and sink.calls[-1] == ("finish", True)
    assert sink.rows == run.log().metric_rows() and result.rows == len(sink.rows) and result.complete


def test_follow_rewinds_when_a_resume_supersedes_rows_already_sent(run, tmp_path):
    live, _ = live_copy(run, tmp_path, keep_lines=10**6)
    sink = Recorder(live)

    def crash_and_resume(_seconds):
        with MetricsWriter(live.paths.metrics) as writer:
            writer.resume(from_step=7, seg=5)
            writer.metrics(8, 1.1, "train", {"train/acc/fused": 0.5})
        write_status(live.path, "finished")

    export_run(live, sink, follow=True, sleep=crash_and_resume)
    assert "rewind" in sink.calls
    assert max(r["step"] for r in sink.rows) == 8 and sink.rows == live.log().metric_rows()


def test_cli_exports_and_refuses_bad_input(run, tmp_path, monkeypatch):
    runs = str(run.path.parent)
    ok = runner.invoke(app, ["export", run.run_id, "--to", "csv", "--out", str(tmp_path / "x.csv"), "--runs-dir", runs])
    assert ok.exit_code == 0, ok.output
    assert f"exported {run.metrics().num_rows} row(s) of {run.name} to {tmp_path / 'x.csv'}" in ok.output
    bad = runner.invoke(app, ["export", run.run_id, "--to", "excel", "--runs-dir", runs])
    assert bad.exit_code == 2 and "csv, parquet, tensorboard, wandb, mlflow" in bad.output
    missing = runner.invoke(app, ["export", "nope", "--to", "csv", "--runs-dir", runs])
    assert missing.exit_code == 3
    for to, name in (("parquet", "m.csv"), ("csv", "m.parquet")):   # a file named for the other format
        crossed = runner.invoke(app, ["export", run.run_id, "--to", to, "--out", str(tmp_path / name), "--runs-dir", runs])
        assert crossed.exit_code == 2 and "its suffix names" in crossed.output and f"--to is {to}" in crossed.output
        assert not (tmp_path / name).exists()
    monkeypatch.setitem(sys.modules, "tensorboard", None)   # as if not installed
    with pytest.raises(UsageError, match=r'pip install "mmbal\[tensorboard\]"'):
        open_sink("tensorboard", run)
    absent = runner.invoke(app, ["export", run.run_id, "--to", "tensorboard", "--runs-dir", runs])
    assert absent.exit_code == 2 and not (run.path / "exports" / "tensorboard").exists()


def test_a_failed_write_is_exit_1_naming_the_file_and_the_run_is_untouched(run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    before = {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}
    result = runner.invoke(app, ["export", run.run_id, "--to", "csv", "--out", str(blocker / "m.csv"),
                                 "--runs-dir", str(run.path.parent)])
    assert result.exit_code == 1 and f"export to csv failed writing {blocker}" in result.output
    assert "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()} == before
