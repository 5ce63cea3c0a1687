"""Run directory names, creation, RUN resolution and listing (engine.store.layout)."""

import json
import os
from datetime import datetime

import pytest

from engine.errors import RunNotFound
from engine.store import layout
from engine.store.layout import (
    create_run_dir,
    default_runs_dir,
    list_runs,
    new_run_id,
    resolve_run,
    run_dir_name,
    slugify,
)
from engine.store.paths import RUN_FILES
from engine.store.status import write_status

WHEN = datetime(2026, 5, 1, 12, 30, 5)


def make_run(runs_dir, name, run_id, when, *, method="joint", status="finished"):
    run_json = {"run_id": run_id, "name": name, "created": when.isoformat(), "method": method,
                "dataset": "avdigits.parquet"}
    path = create_run_dir(runs_dir, name, run_id, {"run.json": json.dumps(run_json).encode()}, when=when)
    if status:
        write_status(path, status, step=10, epoch=2)
    if status == "finished":  # a finished run has its summary (ls reports one missing)
        (path / "summary.json").write_text('{"schema": 1, "status": "finished"}')
    return path


def test_default_runs_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("MMBAL_RUNS_DIR", str(tmp_path / "env"))
    assert default_runs_dir(tmp_path / "flag") == tmp_path / "flag"
    assert default_runs_dir() == tmp_path / "env"
    monkeypatch.delenv("MMBAL_RUNS_DIR")
    assert default_runs_dir().parts[-2:] == ("mmbal", "runs")


def test_new_run_id_shape_and_randomness():
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 8 and set(i) <= set("0123456789abcdefghijklmnopqrstuvwxyz") for i in ids)


@pytest.mark.parametrize(
    "name, slug",
    [
        ("avdigits-ogm_ge", "avdigits-ogm_ge"),
        ("My Run / v2", "my-run-v2"),
        ("../../etc/passwd", "etc-passwd"),
        ("Café Über", "cafe-uber"),
        ("...", "run"),
        ("", "run"),
        ("a" * 80, "a" * 60),
    ],
)
def test_slugify(name, slug):
    assert slugify(name) == slug


def test_run_dir_name():
    assert run_dir_name("AV ogm", "k3f9a2x1", WHEN) == "20260501-123005_av-ogm_k3f9a2x1"


def test_create_run_dir_writes_every_file_and_checkpoints(tmp_path):
    files = {"run.json": b'{"name": "x"}', "preset.toml": b"seed = 0\n", "config.json": "{}"}
    path = create_run_dir(tmp_path / "runs", "x", "abcd1234", files, when=WHEN)
    assert path == tmp_path / "runs" / "20260501-123005_x_abcd1234"
    assert (path / "run.json").read_bytes() == b'{"name": "x"}'
    assert (path / "preset.toml").read_text() == "seed = 0\n"
    assert (path / "config.json").read_text() == "{}"
    assert (path / "checkpoints").is_dir()
    status = json.loads((path / "status.json").read_text())
    assert (status["state"], status["pid"]) == ("created", os.getpid())
    assert sorted(os.listdir(tmp_path / "runs")) == ["20260501-123005_x_abcd1234"]
    assert "checkpoints" in RUN_FILES and "metrics.jsonl" in RUN_FILES


def test_create_run_dir_failure_midway_leaves_nothing(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(TypeError, match="config.json"):
        create_run_dir(runs, "x", "abcd1234", {"run.json": b"{}", "config.json": 42}, when=WHEN)
    assert os.listdir(runs) == []


def test_create_run_dir_failed_rename_leaves_nothing(tmp_path, monkeypatch):
    runs = tmp_path / "runs"

    def no_rename(src, dst):
        raise OSError("simulated rename failure")

    monkeypatch.setattr(layout.os, "rename", no_rename)
    with pytest.raises(OSError, match="simulated"):
        create_run_dir(runs, "x", "abcd1234", {"run.json": b"{}"}, when=WHEN)
    assert os.listdir(runs) == []


def test_create_run_dir_rejects_escaping_names_before_touching_disk(tmp_path):
    with pytest.raises(ValueError, match="relative path"):
        create_run_dir(tmp_path, "x", "abcd1234", {"../evil": b""}, when=WHEN)
    assert os.listdir(tmp_path) == []


@pytest.fixture
def three_runs(tmp_path):
    runs = tmp_path / "runs"
    a = make_run(runs, "alpha", "ab12cd34", datetime(2026, 1, 1, 10, 0, 0))
    b = make_run(runs, "beta", "ab99zz00", datetime(2026, 1, 2, 10, 0, 0))
    c = make_run(runs, "shared", "q1w2e3r4", datetime(2026, 1, 3, 10, 0, 0))
    d = make_run(runs, "shared", "x9y8z7w6", datetime(2026, 1, 4, 10, 0, 0))
    (runs / ".20260105-100000_new_zzzzzzzz.creating").mkdir()  # in-flight creation: invisible
    return runs, a, b, c, d


def test_resolve_by_id_prefix_name_dirname_path_latest(three_runs, monkeypatch):
    runs, a, b, c, d = three_runs
    assert resolve_run(runs, "ab12cd34") == a
    assert resolve_run(runs, "ab1") == a
    assert resolve_run(runs, "q1") == c
    assert resolve_run(runs, "beta") == b
    assert resolve_run(runs, a.name) == a
    assert resolve_run(runs, str(b)) == b.resolve()
    assert resolve_run(runs, "latest") == d


def test_resolve_paths_relative_to_the_working_directory(three_runs, monkeypatch):
    runs, _, _, c, _ = three_runs
    monkeypatch.chdir(runs.parent)
    other_store = runs.parent / "other"
    assert resolve_run(other_store, f"./runs/{c.name}") == c.resolve()
    monkeypatch.chdir(runs)
    assert resolve_run(other_store, c.name) == c.resolve()


def test_resolve_ambiguous_prefix_lists_candidates(three_runs):
    runs, a, b, *_ = three_runs
    with pytest.raises(RunNotFound) as info:
        resolve_run(runs, "ab")
    msg = str(info.value)
    assert "'ab' is ambiguous" in msg and "id prefix of 2 runs" in msg
    assert a.name in msg and b.name in msg


def test_resolve_ambiguous_name_lists_candidates(three_runs):
    runs, _, _, c, d = three_runs
    with pytest.raises(RunNotFound) as info:
        resolve_run(runs, "shared")
    msg = str(info.value)
    assert "name of 2 runs" in msg and c.name in msg and d.name in msg


def test_resolve_not_found_suggests_close_match(three_runs):
    runs, *_ = three_runs
    with pytest.raises(RunNotFound) as info:
        resolve_run(runs, "alpah")
    msg = str(info.value)
    assert "no run 'alpah'" in msg and "(did you mean 'alpha'?)" in msg and str(runs) in msg
    assert info.value.exit_code == 3


def test_resolve_not_found_names_the_runs_a_preset_name_started(tmp_path):
    """A run's name is the preset's name plus ``-<method>``: the preset's name alone suggests those runs,
    newest first, three of them and how to list the rest."""
    runs = tmp_path / "runs"
    for day, method in enumerate(("joint", "mcr", "aug", "ogm_ge"), start=1):
        make_run(runs, f"iris-{method}", f"r{day:07d}", datetime(2026, 1, day, 10, 0, 0))
    make_run(runs, "wine-joint", "w0000001", datetime(2026, 1, 9, 10, 0, 0))
    with pytest.raises(RunNotFound) as info:
        resolve_run(runs, "iris")
    assert "(did you mean 'iris-ogm_ge', 'iris-aug' or 'iris-mcr'? 1 more name starts with 'iris': " \
           "`mmbal ls --filter 'name=iris*'`)" in str(info.value)
    with pytest.raises(RunNotFound, match=r"\(did you mean 'wine-joint'\?\)"):
        resolve_run(runs, "wine")


def test_resolve_single_char_prefix_is_not_enough(three_runs):
    runs, *_ = three_runs
    with pytest.raises(RunNotFound, match="at least 2 characters"):
        resolve_run(runs, "q")


def test_resolve_errors_for_paths_and_empty_store(tmp_path):
    with pytest.raises(RunNotFound, match="does not exist"):
        resolve_run(tmp_path, str(tmp_path / "nope"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(RunNotFound, match="not an mmbal run directory"):
        resolve_run(tmp_path, str(tmp_path / "plain"))
    with pytest.raises(RunNotFound, match="no run in .* yet"):
        resolve_run(tmp_path / "empty", "latest")
    with pytest.raises(RunNotFound, match="runs directory .* does not exist"):
        resolve_run(tmp_path / "empty", "abc")


def test_list_runs_newest_first_with_state(three_runs):
    runs, a, b, c, d = three_runs
    infos = list_runs(runs)
    assert [i.path for i in infos] == [d, c, b, a]
    first = infos[-1]
    assert (first.run_id, first.name, first.method, first.dataset) == ("ab12cd34", "alpha", "joint", "avdigits.parquet")
    assert (first.state, first.step, first.epoch, first.error) == ("finished", 10, 2, None)
    assert first.created == "2026-01-01T10:00:00"


def test_list_runs_shows_damaged_runs_without_raising(three_runs):
    runs, a, b, c, d = three_runs
    (b / "run.json").write_text("{not json")
    (c / "status.json").unlink()
    (a / "run.json").unlink()
    (a / "config.json").write_text(json.dumps({"method": {"name": "ogm_ge"}, "data": {"path": "../d/x.parquet"}}))
    infos = {i.path: i for i in list_runs(runs)}
    assert infos[b].state == "damaged" and infos[b].error.startswith("run.json unreadable:")
    assert infos[b].run_id == "ab99zz00" and infos[b].name == "beta"
    assert infos[c].state == "damaged" and infos[c].error == "status.json is missing"
    assert infos[a].state == "damaged" and infos[a].error == "run.json is missing"
    assert (infos[a].method, infos[a].dataset, infos[a].created) == ("ogm_ge", "x.parquet", "2026-01-01 10:00:00")
    assert infos[d].state == "finished" and infos[d].error is None


def test_fresh_run_lists_as_created_until_its_creator_is_gone(tmp_path):
    path = create_run_dir(tmp_path, "fresh", "abcd1234", {"run.json": b'{"name": "fresh"}'}, when=WHEN)
    assert list_runs(tmp_path)[0].state == "created"
    status = json.loads((path / "status.json").read_text())
    status["heartbeat"] -= 3600
    (path / "status.json").write_text(json.dumps(status))
    assert list_runs(tmp_path)[0].state == "stale"


def test_list_runs_of_missing_dir_is_empty(tmp_path):
    assert list_runs(tmp_path / "nope") == []
