"""Links, nesting and clocks (issue #21, items 4, 6, 8 and the byte-order mark of 10).

* a symbolic link where a run's file should be is never written through: the metrics writer and every
  atomic write refuse it (exit 3, the file named), and ``resume`` refuses such a run before writing
  anything; the link's target keeps its bytes;
* a JSON line or file nested too deeply for the parser is a bad line / a damaged file for every reader
  (``read_metrics``, the tail, ``watch --once``, ``compare --plot``, ``resume``, ``ls``, the dashboard's
  reader), never a ``RecursionError``; presets and ``--set`` values nested 5000 deep exit 2 naming the key;
* a heartbeat more than 5 minutes in the future is ``unknown`` with a reason, not ``running``;
* a preset that starts with a UTF-8 byte-order mark is read as if it had none.
"""

import json
import shutil
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.config import load_preset, parse_override, parse_toml
from engine.config_text import MAX_NESTING, deep_nesting_in_text, too_deep_path
from engine.errors import PresetError
from engine.run import resume_run, start_run
from engine.store import (MetricsTail, MetricsWriter, read_json, read_metrics, read_status, run_info,
                          write_checkpoint, write_status, write_summary)
from engine.store.links import LinkedFileRefused, linked_run_files
from engine.store.meta import change_meta
from engine.store.paths import temp_path_for
from engine.store.status import FUTURE_TOLERANCE
from engine.sweep.attempts import decide, read_attempt
from mmbal_cli.app import app
from mmbal_cli.tui.reader import RunReader

from runtools import InterruptAt, tiny_preset

PRESET = tiny_preset('name = "joint"', name="links", seed=3, epochs=2)
OVERRIDES = ["train.threads=1"]
DEEP = b"[" * 200_000 + b"]" * 200_000
runner = CliRunner()


@pytest.fixture(scope="module")
def cut(tmp_path_factory, one_thread):
    """A run interrupted after step 10 of 14 (last.pt at step 10, previous.pt at step 7)."""
    root = tmp_path_factory.mktemp("links")
    preset = root / "links.toml"
    preset.write_text(PRESET)
    return start_run(preset, OVERRIDES, runs_dir=root / "runs", reporter=InterruptAt(10)).run_dir


def copy_run(run_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    runs = tmp_path / "runs"
    shutil.copytree(run_dir, runs / run_dir.name)
    return runs, runs / run_dir.name


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output  # no traceback
    return result


def tree(root: Path) -> dict[str, tuple[bool, bytes]]:
    """Every entry under ``root`` except ``.lock``: relative path -> (is a link, the bytes it reads)."""
    return {str(p.relative_to(root)): (p.is_symlink(), p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*")) if p.name != ".lock"}


def link_out(run: Path, rel: str, outside: Path, extra: bytes = b"") -> bytes:
    """Move the run's file ``rel`` to ``outside`` (plus ``extra``) and leave a symbolic link to it; returns
    the bytes ``outside`` then holds."""
    data = (run / rel).read_bytes() + extra
    outside.write_bytes(data)
    (run / rel).unlink()
    (run / rel).symlink_to(outside)
    return data


# -- 4. symbolic links -------------------------------------------------------------------------------
def test_the_metrics_writer_refuses_a_link_and_leaves_its_target_alone(tmp_path):
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_bytes(b'{"kind":"header"}\n{"kind":"metr')  # a torn last line the writer would cut
    link = tmp_path / "metrics.jsonl"
    link.symlink_to(outside)
    with pytest.raises(LinkedFileRefused, match="symbolic link") as info:
        MetricsWriter(link)
    assert info.value.exit_code == 3 and str(link) in str(info.value) and str(outside) in str(info.value)
    assert outside.read_bytes() == b'{"kind":"header"}\n{"kind":"metr'


WRITERS = {
    "status.json": lambda d: write_status(d, "running"),
    "summary.json": lambda d: write_summary(d, {"state": "finished"}),
    "meta.json": lambda d: change_meta(d, add_tags=["x"]),
    "checkpoints/last.pt": lambda d: write_checkpoint(d / "checkpoints" / "last.pt", {"a": 1},
                                                      keep_previous=d / "checkpoints" / "previous.pt"),
}


@pytest.mark.parametrize("rel", list(WRITERS))
def test_atomic_writes_refuse_a_link_at_the_file(tmp_path, rel):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious\n")
    (run / rel).symlink_to(outside)
    with pytest.raises(LinkedFileRefused, match=rel.split("/")[-1]):
        WRITERS[rel](run)
    assert outside.read_bytes() == b"precious\n" and (run / rel).is_symlink()
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]


def test_a_link_at_the_temporary_name_is_not_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious\n")
    temp_path_for(tmp_path / "status.json").symlink_to(outside)
    with pytest.raises(LinkedFileRefused):
        write_status(tmp_path, "running")
    assert outside.read_bytes() == b"precious\n"
    assert write_status(tmp_path, "running")["state"] == "running"  # the stray link was removed: writes go on
    assert read_json(tmp_path / "status.json")["state"] == "running" and outside.read_bytes() == b"precious\n"


@pytest.mark.parametrize("rel", ["metrics.jsonl", "status.json", "run.json", "checkpoints/last.pt"])
def test_resume_refuses_a_run_with_a_linked_file_and_writes_nothing(cut, tmp_path, rel):
    runs, run = copy_run(cut, tmp_path)
    outside = tmp_path / "outside"
    held = link_out(run, rel, outside, extra=b'{"kind":"metr' if rel == "metrics.jsonl" else b"")
    before = tree(run)
    refused = cli("resume", run.name, "--runs-dir", runs)
    assert refused.exit_code == 3, refused.output
    text = " ".join(refused.output.split())
    assert rel.split("/")[-1] in text and "symbolic link" in text and "cp --remove-destination" in text
    assert outside.read_bytes() == held  # nothing cut off, nothing appended
    assert tree(run) == before
    assert linked_run_files(run) == [run / rel]


def test_mmbal_tag_refuses_a_linked_meta_json(cut, tmp_path):
    runs, run = copy_run(cut, tmp_path)
    outside = tmp_path / "meta.json"
    outside.write_text('{"tags": ["theirs"]}\n')
    (run / "meta.json").symlink_to(outside)
    result = cli("tag", run.name, "mine", "--runs-dir", runs)
    assert result.exit_code == 3 and "symbolic link" in result.output
    assert outside.read_text() == '{"tags": ["theirs"]}\n'


# -- 6. nesting ----------------------------------------------------------------------------------------
def insert_deep_line(run: Path) -> int:
    """A line nested 200,000 deep after the 4th line of the run's log; returns its line number."""
    path = run / "metrics.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:4]) + DEEP + b"\n" + b"".join(lines[4:]))
    return 5


SKIPPED = "metrics.jsonl line 5: arrays or objects nested too deeply to read, skipped"


def test_every_reader_skips_a_deeply_nested_line(cut, tmp_path):
    runs, run = copy_run(cut, tmp_path)
    clean = read_metrics(run / "metrics.jsonl").records
    insert_deep_line(run)
    log = read_metrics(run / "metrics.jsonl")
    assert log.records == clean and log.warnings == [SKIPPED]
    tail = MetricsTail(run / "metrics.jsonl")
    assert tail.poll() == clean and tail.warnings == [SKIPPED]
    watched = cli("watch", run.name, "--once", "--runs-dir", runs)
    assert watched.exit_code == 0 and "nested too deeply" in watched.output, watched.output


def test_resume_and_compare_plot_skip_a_deeply_nested_line(cut, tmp_path):
    runs, run = copy_run(cut, tmp_path)
    insert_deep_line(run)
    done = cli("resume", run.name, "--runs-dir", runs)
    assert done.exit_code == 0, done.output
    assert SKIPPED in " ".join(done.output.split())
    assert read_status(run)["state"] == "finished"
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl").metric_rows() if r["split"] == "test"] == [14]
    pytest.importorskip("matplotlib")
    result = cli("compare", run.name, "--runs-dir", runs, "--plot", tmp_path / "curves.png")  # the line is still there
    assert result.exit_code == 0, result.output
    assert f"{run.name}/{SKIPPED}" in " ".join(result.output.split())
    assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.parametrize("name", ["status.json", "run.json", "summary.json"])
def test_a_deeply_nested_json_file_is_reported_as_damaged(cut, tmp_path, name):
    runs, run = copy_run(cut, tmp_path)
    (run / name).write_bytes(DEEP)
    with pytest.raises(ValueError, match=f"{name}: not valid JSON for mmbal .*nested too deeply"):
        read_json(run / name)
    info = run_info(run)
    assert info.state == "damaged" and name in info.error
    delta = RunReader(run).read()
    if name == "status.json":
        assert delta.status["effective_state"] == "unknown" and "nested too deeply" in delta.status["reason"]
    else:
        assert "nested too deeply" in delta.problems[name]
    listed = cli("ls", "--json", "--runs-dir", runs)
    assert listed.exit_code == 0 and json.loads(listed.output)[0]["state"] == "damaged"


def test_presets_and_set_values_nested_too_deep_exit_2_naming_the_key(tmp_path):
    runs = tmp_path / "runs"
    deep_array = tmp_path / "deep.toml"
    deep_array.write_text(PRESET + "\n[model]\nweights = " + "[" * 5000 + "]" * 5000 + "\n")
    line = deep_array.read_text().count("\n")
    dotted = tmp_path / "dotted.toml"
    dotted.write_text(PRESET + "\n[model]\n" + ".".join(["k"] * 5000) + " = 1\n")
    plain = tmp_path / "plain.toml"
    plain.write_text(PRESET)
    cases = [
        ([deep_array], f"model.weights (line {line}): nested more than {MAX_NESTING} levels deep"),
        ([dotted], "model.k.k.k"),
        ([plain, "--set", "train.x=" + "[" * 5000 + "]" * 5000], f"train.x: nested more than {MAX_NESTING}"),
        ([plain, "--set", "method.w={a = " * 3000 + "1" + "}" * 3000], "method.w: nested more than"),
        ([plain, "--set", ".".join(["train"] * 5000) + "=1"], "train.train.train"),
    ]
    for args, expected in cases:
        result = cli("run", *args, "--runs-dir", runs)
        assert result.exit_code == 2, result.output
        assert expected in " ".join(result.output.split()), result.output
    assert not runs.exists()


def test_nesting_limits_where_presets_are_parsed():
    assert deep_nesting_in_text('s = "[[[[[["\n# {{{{{{\nx = [[1]]\n[[a.b]]\ny = {z = [[1]]}', limit=3) is None
    assert deep_nesting_in_text('x = 1\n[a . b]\ny = {z = [[[1]]]}', limit=3) == ("a.b.y", 3)
    assert too_deep_path({"a": {"b": [[1]]}}, limit=3) == "a.b[0][0]"
    assert too_deep_path({"a": {"b": [[1]]}}, limit=4) is None
    ok = "v = " + "[" * MAX_NESTING + "]" * MAX_NESTING
    assert parse_toml(ok, "p.toml")["v"] is not None
    with pytest.raises(PresetError, match="v \\(line 1\\): nested more than"):
        parse_toml("v = " + "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1), "p.toml")
    assert parse_override("train.lr=[[1]]") == (["train", "lr"], [[1]])


# -- 8. a heartbeat from the future --------------------------------------------------------------------
def beat_ahead(run: Path, seconds: float, host: str = "other-host.example") -> None:
    write_status(run, "running", heartbeat_interval=5.0, step=3)
    data = read_json(run / "status.json")
    data.update(heartbeat=data["heartbeat"] + seconds, host=host, pid=123456)
    (run / "status.json").write_text(json.dumps(data))


def test_a_heartbeat_from_the_future_is_unknown_with_a_reason(tmp_path):
    beat_ahead(tmp_path, 3 * 3600)
    s = read_status(tmp_path)
    assert s["effective_state"] == "unknown" and s["state"] == "running"
    assert s["reason"] == ("the last heartbeat is 3.0 h in the future (process 123456 on host other-host.example): "
                           "its clock differs from this host's, so whether the run is alive is unknown; `mmbal "
                           "resume` continues it if it is not running")
    assert 3 * 3600 - 5 < s["clock_ahead"] <= 3 * 3600
    beat_ahead(tmp_path, FUTURE_TOLERANCE - 30)  # within the tolerance: clocks differ a little, it is alive
    assert read_status(tmp_path)["effective_state"] == "running"


def test_ls_watch_and_the_sweep_do_not_take_a_future_heartbeat_for_a_live_run(cut, tmp_path):
    runs, run = copy_run(cut, tmp_path)
    beat_ahead(run, 3 * 86400, host=socket.gethostname() + "-copied")
    listed = json.loads(cli("ls", "--json", "--runs-dir", runs).output)[0]
    assert listed["state"] == "unknown" and "3 days in the future" in listed["error"]
    table = cli("ls", "--runs-dir", runs)
    assert "unknown (the last heartbeat" in table.output and " running " not in table.output
    watched = cli("watch", run.name, "--once", "--runs-dir", runs)
    assert watched.exit_code == 0 and "in the future" in " ".join(watched.output.split()), watched.output
    attempt = read_attempt(run, None)
    assert attempt.state == "unknown"
    assert decide(None, [attempt]).action not in ("running", "stale")  # not left alone as if it were alive


# -- 10. a byte-order mark -----------------------------------------------------------------------------
def test_a_preset_starting_with_a_byte_order_mark_is_read_and_resumed(tmp_path, one_thread):
    plain = tmp_path / "plain.toml"
    plain.write_text(tiny_preset('name = "joint"', name="bom", epochs=1))
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert load_preset(bom, OVERRIDES)[0].to_dict() == {**load_preset(plain, OVERRIDES)[0].to_dict()}
    result = start_run(bom, OVERRIDES, runs_dir=tmp_path / "runs")
    assert result.state == "finished"
    assert (result.run_dir / "preset.toml").read_bytes() == bom.read_bytes()  # kept verbatim
    again = resume_run(result.run_id, ["train.epochs=2"], runs_dir=tmp_path / "runs")
    assert again.state == "finished" and read_status(result.run_dir)["step"] == 14


def test_linked_run_files_lists_links_among_files_folders_and_checkpoints(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "kept").mkdir(parents=True)
    (run / "status.json").write_text("{}")
    (run / "checkpoints" / "best.pt").write_bytes(b"x")
    assert linked_run_files(run) == []
    (run / "checkpoints" / "kept" / "teacher.pt").symlink_to(tmp_path / "teacher.pt")
    (run / "summary.json").symlink_to(tmp_path / "summary.json")
    assert linked_run_files(run) == [run / "summary.json", run / "checkpoints" / "kept" / "teacher.pt"]
    other = tmp_path / "elsewhere"
    (run / "checkpoints").rename(other)
    (run / "checkpoints").symlink_to(other)
    assert linked_run_files(run) == [run / "summary.json", run / "checkpoints"]


def test_a_deeply_nested_lock_file_or_start_announcement_is_no_traceback(tmp_path):
    import os

    from engine.store.lock import _read_holder
    from engine.store.starting import STARTING_DIR, starting_runs
    deep = b"[" * 4096
    lock = tmp_path / ".lock"
    lock.write_bytes(deep)
    fd = os.open(lock, os.O_RDONLY)
    try:
        assert _read_holder(fd) == {}
    finally:
        os.close(fd)
    (tmp_path / STARTING_DIR).mkdir()
    (tmp_path / STARTING_DIR / "123.json").write_bytes(deep)
    assert starting_runs(tmp_path) == []
