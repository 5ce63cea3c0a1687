"""summary.json and run.json helpers (engine.store.runs) and the package's public names."""

import json

import pytest

import engine.store as store
from engine.errors import RunNotFound
from engine.store.runs import read_run_json, read_summary, write_summary


def test_summary_round_trip_with_schema_first(tmp_path):
    assert read_summary(tmp_path) is None
    write_summary(tmp_path, {"run_id": "abc", "final": {"val/acc/fused": 0.75, "test/acc/audio": float("nan")},
                             "best": {"val/acc/fused": {"value": 0.8, "step": 120}}})
    text = (tmp_path / "summary.json").read_text()
    assert text.startswith('{\n  "schema": 1,\n  "run_id": "abc"')
    assert read_summary(tmp_path) == {
        "schema": 1, "run_id": "abc",
        "final": {"val/acc/fused": 0.75, "test/acc/audio": None},
        "best": {"val/acc/fused": {"value": 0.8, "step": 120}},
    }


def test_invalid_summary_names_the_file(tmp_path):
    (tmp_path / "summary.json").write_text('{"final": ')
    with pytest.raises(ValueError, match=r"summary\.json: not valid JSON"):
        read_summary(tmp_path)


def test_read_run_json(tmp_path):
    with pytest.raises(RunNotFound, match="run.json is missing"):
        read_run_json(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "abc", "name": "x"}))
    assert read_run_json(tmp_path) == {"run_id": "abc", "name": "x"}
    (tmp_path / "run.json").write_text("nope")
    with pytest.raises(ValueError, match=r"run\.json: not valid JSON"):
        read_run_json(tmp_path)


def test_package_exports_every_public_name():
    for name in store.__all__:
        assert hasattr(store, name), name
    for name in ["MetricsWriter", "read_metrics", "MetricsTail", "Heartbeat", "RunLock", "resolve_run",
                 "list_runs", "create_run_dir", "write_summary", "atomic_write_json"]:
        assert name in store.__all__
