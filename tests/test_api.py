"""The notebook API (``engine.load_run``): a run resolved as the CLI resolves it, its config, summary,
metrics as a table with the rows a resume superseded removed, events, checkpoints and the model."""

import json
import math
import shutil
import subprocess
import sys

import pytest
import torch

from engine.analysis.api import Run, load_run
from engine.errors import RunNotFound, UsageError
from engine.run import resume_run, start_run
from engine.store import MetricsWriter, read_metrics

from runtools import InterruptAt, tiny_preset

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
NAME = "nb-joint"   # the preset's name and its method


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, one_thread):
    """A tiny run of 2 epochs (7 steps each) interrupted after step 10 and resumed to its end: two segments."""
    folder = tmp_path_factory.mktemp("api")
    (folder / "p.toml").write_text(tiny_preset(epochs=2, name="nb"))
    cut = start_run(folder / "p.toml", runs_dir=folder / "runs", reporter=InterruptAt(10))
    assert cut.state == "interrupted"
    assert resume_run(cut.run_id, runs_dir=folder / "runs").state == "finished"
    return folder / "runs", cut.run_dir, cut.run_id


def log_lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_is_found_by_name_id_prefix_path_and_latest(resumed):
    runs, run_dir, run_id = resumed
    for ref in (NAME, run_id, run_id[:4], str(run_dir), "latest", run_dir.name):
        assert load_run(ref, runs_dir=runs).path == run_dir
    with pytest.raises(RunNotFound) as caught:
        load_run("nope", runs_dir=runs)
    assert caught.value.exit_code == 3 and "nope" in str(caught.value)


def test_config_summary_status_and_identity_are_the_files(resumed):
    runs, run_dir, run_id = resumed
    run = load_run(NAME, runs_dir=runs)
    assert run.config == json.loads((run_dir / "config.json").read_text())
    assert run.summary == json.loads((run_dir / "summary.json").read_text())
    assert run.status == "finished" and run.run_id == run_id and run.name == NAME
    assert run.flat_config()["train.lr"] == 0.05 and "base_dir" not in run.flat_config()
    assert run.modalities == ["a", "b"]


def test_metrics_are_the_logged_rows_one_per_record(resumed):
    runs, run_dir, _ = resumed
    table = load_run(NAME, runs_dir=runs).metrics()
    records = [r for r in log_lines(run_dir) if r["kind"] == "metrics"]
    assert table.column_names[:5] == ["step", "epoch", "split", "seg", "t"]
    assert table.num_rows == len(records)   # an interruption supersedes nothing
    assert table.column("step").to_pylist() == [r["step"] for r in records]
    assert table.column("seg").to_pylist() == [r["seg"] for r in records]
    assert set(table.column("seg").to_pylist()) == {0, 1}
    val = [r for r in records if r["split"] == "val"]
    rows = load_run(NAME, runs_dir=runs).metrics(split="val", keys=["val/acc/fused", "mi/a"]).to_pylist()
    assert [r["step"] for r in rows] == [7, 14]
    assert [r["val/acc/fused"] for r in rows] == [r["m"]["val/acc/fused"] for r in val]
    assert [r["mi/a"] for r in rows] == [r["m"]["mi/a"] for r in val]
    assert str(table.schema.field("val/acc/fused").type) == "double"


def test_rows_a_resume_superseded_are_removed(resumed, tmp_path):
    """A crash after step 10 resumed from the checkpoint of step 7: the first attempt's rows after step 7 and
    its test row are superseded; the table keeps each (split, step) once, from the segment that counts."""
    _, run_dir, _ = resumed
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    with MetricsWriter(copy / "metrics.jsonl") as writer:
        writer.resume(from_step=7, seg=2)
        writer.metrics(9, 1.2857, "train", {"train/acc/fused": 0.125})
    table = Run(copy).metrics()
    keys = list(zip(table.column("split").to_pylist(), table.column("step").to_pylist()))
    assert len(keys) == len(set(keys))
    assert max(s for sp, s in keys if sp != "train" or s != 9) == 7
    assert ("test", 14) not in keys and ("val", 14) not in keys
    last = table.to_pylist()[-1]
    assert (last["step"], last["seg"], last["train/acc/fused"]) == (9, 2, 0.125)
    assert table.num_rows == len(read_metrics(copy / "metrics.jsonl").metric_rows())


def test_a_nonfinite_value_is_nan_and_a_missing_one_null(resumed, tmp_path):
    _, run_dir, _ = resumed
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    with MetricsWriter(copy / "metrics.jsonl") as writer:
        writer.resume(from_step=14, seg=2)
        writer.metrics(15, 2.1, "train", {"train/loss/method": float("nan")})
    last = Run(copy).metrics().to_pylist()[-1]
    assert math.isnan(last["train/loss/method"]) and last["train/acc/fused"] is None


def test_pandas_frame_has_the_same_values(resumed):
    pytest.importorskip("pandas")
    runs, _, _ = resumed
    run = load_run(NAME, runs_dir=runs)
    frame = run.to_pandas(split="val")
    assert list(frame["step"]) == [7, 14]
    assert list(frame["val/acc/fused"]) == run.metrics(split="val").column("val/acc/fused").to_pylist()
    assert run.metrics(format="pandas").shape[0] == run.metrics().num_rows


def test_a_bad_format_or_checkpoint_name_is_a_usage_error(resumed):
    runs, _, _ = resumed
    run = load_run(NAME, runs_dir=runs)
    with pytest.raises(UsageError, match="format 'polars'"):
        run.metrics(format="polars")
    with pytest.raises(UsageError, match="checkpoint 'worst'"):
        run.checkpoint("worst")


def test_events_are_the_logged_events(resumed):
    runs, run_dir, _ = resumed
    events = load_run(NAME, runs_dir=runs).events()
    assert events == [r for r in log_lines(run_dir) if r["kind"] == "event"]
    assert [e["name"] for e in events].count("finished") == 1
    assert [e["step"] for e in load_run(NAME, runs_dir=runs).events("interrupted")] == [10]


def test_checkpoints_are_the_files_and_the_model_carries_their_weights(resumed):
    runs, run_dir, _ = resumed
    run = load_run(NAME, runs_dir=runs)
    best = run.checkpoint("best")
    assert best["step"] == run.summary["selected"]["step"]
    on_disk = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    model = run.load_model("best")
    assert not model.training
    state = model.state_dict()
    assert state.keys() == on_disk["model"].keys()
    assert all(torch.equal(state[k], on_disk["model"][k]) for k in state)
    out = model({"a": torch.zeros(4, 8), "b": torch.zeros(4, 6)})
    assert out.fused.shape == (4, 3)


def test_a_missing_checkpoint_says_why(resumed, tmp_path):
    _, run_dir, _ = resumed
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    (copy / "checkpoints" / "best.pt").unlink()
    with pytest.raises(UsageError, match="best.pt does not exist: no evaluation was selected") as caught:
        Run(copy).checkpoint("best")
    assert caught.value.exit_code == 2


def test_import_engine_stays_cheap_and_exports_load_run():
    code = ("import sys, engine; assert 'engine.analysis.api' not in sys.modules and 'torch' not in sys.modules; "
            "from engine import load_run, Run; assert load_run.__module__ == 'engine.analysis.api'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
