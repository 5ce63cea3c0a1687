"""A resume checks the run's files and its data before it touches anything (#21 items 1 and 9).

The data's fingerprint (``run.json`` ``data_fingerprint``: schema, rows, each Parquet file's size,
time and footer hash) is compared with the data now: a change is refused with what changed (exit 3)
unless ``--allow-data-change``, which is recorded. A missing or damaged ``run.json``, ``config.json``
or ``preset.toml`` is a clear exit 3, not a traceback. And every refusal leaves every file of the
run byte-identical (``test_a_refused_resume_leaves_every_file_of_the_run_as_it_was``).
"""

import hashlib
import json
import os
import re
import shutil
import struct
from contextlib import contextmanager, nullcontext

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from engine.data import SynthConfig, generate, write_dataset
from engine.errors import ResumeRefused
from engine.run import NullReporter, resume_run, start_run
from engine.store import RunLock, read_metrics
from engine.store.meta import change_meta
from mmbal_cli.app import app

from runtools import InterruptAt, last_checkpoint, tiny_preset

runner = CliRunner()
PRESET = tiny_preset(name="refuse", epochs=1, data={"source": "parquet", "path": "data.parquet", "synthetic": None},
                     train={"threads": 1}, monitor={"enabled": False})


def write_data(path, samples=300, seed=3, classes=3, dims=(8, 6)):
    """The synthetic generator's data written as the run's Parquet file (``mmbal data synth``'s way)."""
    data = generate(SynthConfig(n_samples=samples, n_classes=classes, modalities=["a", "b"], dims=list(dims),
                                unique=[1.0, 0.4], noise=[0.5, 0.8], seed=seed))
    write_dataset(path, data.features, data.labels, data.split, data.classes, name="refuse")


@pytest.fixture(scope="module")
def made(tmp_path_factory, one_thread):
    """A finished one-epoch run on ``data.parquet`` (300 rows: 210 train, 45 val, 45 test, 3 classes)."""
    root = tmp_path_factory.mktemp("refusals")
    write_data(root / "data.parquet")
    (root / "refuse.toml").write_text(PRESET)
    run = start_run(root / "refuse.toml", runs_dir=root / "runs")
    assert run.state == "finished"
    return {"root": root, "run": run.run_dir, "data": root / "data.parquet"}


def copy_run(made, tmp_path):
    """A copy of the finished run alone in a fresh runs directory (its data stay the shared file)."""
    runs = tmp_path / "runs"
    shutil.copytree(made["run"], runs / made["run"].name)
    return runs, runs / made["run"].name


@contextmanager
def data_changed(made, **how):
    """The run's data file rewritten by ``write_data(**how)`` inside, restored (bytes and times) after."""
    path, saved = made["data"], made["data"].with_suffix(".saved")
    shutil.copy2(path, saved)
    try:
        write_data(path, **how)
        yield path
    finally:
        os.replace(saved, path)


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output  # no traceback
    return result


def edit_json(path, change):
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def footer_sha256(path) -> str:
    """The SHA-256 of a Parquet file's footer, read by hand from its last 8 bytes."""
    raw = path.read_bytes()
    length = struct.unpack("<I", raw[-8:-4])[0]
    assert raw[-4:] == b"PAR1"
    return hashlib.sha256(raw[-8 - length:-8]).hexdigest()


class Warnings(NullReporter):
    def __init__(self):
        self.seen = []

    def warn(self, message):
        self.seen.append(message)


# -- the fingerprint ----------------------------------------------------------------------------------
def test_the_run_records_its_data_fingerprint(made):
    fp = json.loads((made["run"] / "run.json").read_text())["data_fingerprint"]
    assert fp["source"] == "parquet" and fp["path"] == str(made["data"])
    assert fp["rows"] == 300 and fp["split_counts"] == {"train": 210, "val": 45, "test": 45} and fp["classes"] == 3
    assert fp["schema"] == {"a": "fixed_size_list<element: float>[8]", "b": "fixed_size_list<element: float>[6]",
                            "label": "int64", "split": "string"}
    [file] = fp["files"]
    assert file["name"] == "data.parquet" and file["size"] == made["data"].stat().st_size and file["rows"] == 300
    assert file["footer_sha256"] == footer_sha256(made["data"])


def test_a_dataset_directory_names_files_added_removed_rewritten_and_columns(tmp_path):
    """The comparison alone, on a directory of Parquet files (footers read, no rows)."""
    from engine.data.fingerprint import data_changes, data_fingerprint  # here: main had no such module

    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(3):
        write_data(folder / f"part{i}.parquet", samples=60, seed=i)
    config = {"data": {"source": "parquet", "path": "parts"}, "base_dir": str(tmp_path)}
    before = data_fingerprint(config)
    assert before["rows"] == 180 and [f["name"] for f in before["files"]] == ["part0.parquet", "part1.parquet",
                                                                               "part2.parquet"]
    os.utime(folder / "part0.parquet", (1.0e9, 1.0e9))
    assert data_changes(before, data_fingerprint(config)) == []  # a time alone is no change
    (folder / "part2.parquet").unlink()
    write_data(folder / "part1.parquet", samples=60, seed=9)
    write_data(folder / "part3.parquet", samples=30, seed=3, dims=(8, 7))
    changes = data_changes(before, data_fingerprint(config))
    assert changes[:2] == ["rows 180 -> 150", "file part2.parquet removed"]
    assert changes[2] == "file part3.parquet added"
    assert re.fullmatch(r"part1\.parquet rewritten \(size \d+ B -> \d+ B; modified \S+ -> \S+\)", changes[3]), changes
    write_data(folder / "part0.parquet", samples=60, seed=0, dims=(8, 5))  # the schema is the first file's
    assert "column 'b' is fixed_size_list<element: float>[5] instead of fixed_size_list<element: float>[6]" in \
        data_changes(before, data_fingerprint(config))


def test_other_values_of_the_same_size_change_the_footer_statistics(tmp_path):
    """Uncompressed, undictionaried floats: other values give a file of the same size; its footer's
    column statistics (min, max) still tell them apart."""
    from engine.data.fingerprint import data_changes, data_fingerprint  # here: main had no such module

    def write(seed):
        values = np.random.default_rng(seed).standard_normal(80, dtype=np.float32)
        table = pa.table({"a": pa.FixedSizeListArray.from_arrays(pa.array(values), 4), "label": np.arange(20) % 2})
        pq.write_table(table, tmp_path / "same.parquet", compression="none", use_dictionary=False)

    config = {"data": {"source": "parquet", "path": "same.parquet"}, "base_dir": str(tmp_path)}
    write(0)
    before = data_fingerprint(config)
    write(1)
    after = data_fingerprint(config)
    assert after["files"][0]["size"] == before["files"][0]["size"]
    [change] = data_changes(before, after)
    assert change.startswith("same.parquet rewritten (same size, other footer statistics; modified ")


def test_changed_data_is_refused_saying_what_changed(made, tmp_path):
    runs, run = copy_run(made, tmp_path)
    with data_changed(made, samples=500, seed=7):
        result = cli("resume", run.name, "--runs-dir", runs, "--set", "train.epochs=2")
    assert result.exit_code == 3, result.output
    text = " ".join(result.output.split())
    for said in ("its data changed since the run started", "rows 300 -> 500", "data.parquet rewritten",
                 "train rows 210 -> 350", "val rows 45 -> 75", "test rows 45 -> 75", "--allow-data-change"):
        assert said in text, said


def test_other_classes_are_named_in_the_refusal(made, tmp_path):
    runs, run = copy_run(made, tmp_path)
    with data_changed(made, classes=4):
        with pytest.raises(ResumeRefused, match="classes 3 -> 4"):
            resume_run(run.name, ["train.epochs=2"], runs_dir=runs)


def test_a_touched_or_copied_file_with_the_same_content_is_the_same_data(made, tmp_path):
    runs, run = copy_run(made, tmp_path)
    with data_changed(made, samples=300, seed=3):  # written again, byte for byte: only its time differs
        os.utime(made["data"], (1.0e9, 1.0e9))
        reporter = Warnings()
        assert resume_run(run.name, ["train.epochs=2"], runs_dir=runs, reporter=reporter).state == "finished"
    assert not any("data" in w for w in reporter.seen), reporter.seen
    assert "data_changed" not in json.loads((run / "run.json").read_text())["resumed"][-1]


def test_allowed_data_change_is_recorded_and_becomes_the_new_reference(made, tmp_path):
    runs, run = copy_run(made, tmp_path)
    with data_changed(made, samples=500, seed=7):
        result = cli("resume", run.name, "--runs-dir", runs, "--set", "train.epochs=2", "--allow-data-change")
        assert result.exit_code == 0, result.output
        assert "the data changed since the run started" in " ".join(result.output.split())
        info = json.loads((run / "run.json").read_text())
        changed = info["resumed"][-1]["data_changed"]
        assert "rows 300 -> 500" in changed and "train rows 210 -> 350" in changed
        assert info["data_fingerprint"]["rows"] == 500
        assert info["data_fingerprint"]["split_counts"] == {"train": 350, "val": 75, "test": 75}
        [event] = read_metrics(run / "metrics.jsonl").events("data_changed")
        assert event["changes"] == changed and event["seg"] == 1 and event["step"] == 7
        steps = json.loads((run / "status.json").read_text())
        assert steps["steps_per_epoch"] == 11 and steps["step"] == 7 + 11  # 350 rows / 32: trained on the new rows
        # the changed data are now the run's: the next resume goes on without the flag
        assert resume_run(run.name, ["train.epochs=3"], runs_dir=runs).state == "finished"


def test_allowed_change_of_shapes_is_refused_before_any_file_is_rewritten(made, tmp_path):
    runs, run = copy_run(made, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with data_changed(made, dims=(10, 6)):
        with pytest.raises(ResumeRefused, match=r"does not fit the checkpoint \(encoders\.a\..* is \[16, 8\] in the "
                                                r"checkpoint, \[16, 10\] now"):
            resume_run(run.name, ["train.epochs=2"], runs_dir=runs, allow_data_change=True)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_crash_left_behind_is_tidied_only_after_every_check_passed(made, tmp_path):
    """A dead writer's temporary file and a damaged checkpoint (what a resume tidies) stay as they were
    when the resume is then refused for the checkpoint's shapes."""
    runs, run = copy_run(made, tmp_path)
    (run / "checkpoints" / ".last.pt.tmp-4194000").write_bytes(b"half a checkpoint")
    (run / "checkpoints" / "previous.pt").write_bytes(b"not a checkpoint")
    before = snapshot(run)
    with data_changed(made, dims=(10, 6)):
        with pytest.raises(ResumeRefused, match="does not fit the checkpoint"):
            resume_run(run.name, ["train.epochs=2"], runs_dir=runs, allow_data_change=True)
    assert snapshot(run) == before


def test_allowed_change_refuses_a_mid_epoch_plan_over_rows_the_data_no_longer_has(made, tmp_path):
    """A method's epoch plan (here valuation's re-sampled rows) saved mid-epoch names rows of the old
    training split: on fewer rows it cannot go on, refused before any file is rewritten."""
    preset = tmp_path / "valuation.toml"
    preset.write_text(PRESET.replace('name = "joint"', 'name = "valuation"\nwarmup_epochs = 0')
                      .replace('path = "data.parquet"', f'path = "{made["data"]}"'))
    cut = start_run(preset, ["train.epochs=2"], runs_dir=tmp_path / "runs", reporter=InterruptAt(3))
    assert cut.state == "interrupted"
    assert last_checkpoint(cut.run_dir)["plan"] is not None
    before = {p.name: p.read_bytes() for p in cut.run_dir.iterdir() if p.is_file()}
    with data_changed(made, samples=200):
        with pytest.raises(ResumeRefused, match="stopped inside an epoch.* now has 140 rows"):
            resume_run(cut.run_id, runs_dir=tmp_path / "runs", allow_data_change=True)
    assert {p.name: p.read_bytes() for p in cut.run_dir.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("edit, notice", [
    (lambda info: info.pop("data_fingerprint"), "started before mmbal recorded its data's fingerprint"),
    (lambda info: info["data_fingerprint"].update(files=[1]), "has a damaged 'data_fingerprint' in run.json"),
    (lambda info: info["data_fingerprint"].update(schema=["a"]), "has a damaged 'data_fingerprint' in run.json"),
], ids=["absent", "files edited", "schema edited"])
def test_a_run_without_a_usable_fingerprint_resumes_with_a_notice_and_records_one(edit, notice, made, tmp_path):
    runs, run = copy_run(made, tmp_path)
    edit_json(run / "run.json", edit)
    reporter = Warnings()
    assert resume_run(run.name, ["train.epochs=2"], runs_dir=runs, reporter=reporter).state == "finished"
    assert [w for w in reporter.seen if notice in w], reporter.seen
    assert json.loads((run / "run.json").read_text())["data_fingerprint"]["rows"] == 300


# -- a refused resume changes nothing --------------------------------------------------------------
def snapshot(run_dir):
    """Every file under the run directory: its bytes and modification time (``.lock``: its bytes only,
    the lock holder's record is rewritten by every attempt to take it)."""
    found = {}
    for path in sorted(run_dir.rglob("*")):
        if path.is_file():
            rel = path.relative_to(run_dir).as_posix()
            found[rel] = (path.read_bytes(), None if rel == ".lock" else path.stat().st_mtime_ns)
    return found


def _damage_checkpoints(run):
    for name in ("last.pt", "previous.pt"):
        path = run / "checkpoints" / name
        if path.exists():
            path.write_bytes(path.read_bytes()[:100])


REFUSALS = {  # reason: (what to do to the run, arguments of `mmbal resume` after RUN, exit code, words of the message)
    "changed data": (None, ["--set", "train.epochs=2"], 3, "rows 300 -> 500"),
    "invalid config.json": (lambda run: (run / "config.json").write_text('{"data": '), [], 3, "config.json is damaged"),
    "config.json without data.path": (lambda run: edit_json(run / "config.json", lambda c: c["data"].pop("path")),
                                      [], 3, "its [data] table does not say where the data come from"),
    "run.json a list": (lambda run: (run / "run.json").write_text("[1, 2]"), [], 3, "run.json is damaged"),
    "run.json without run_id": (lambda run: edit_json(run / "run.json", lambda i: i.pop("run_id")), [], 3,
                                "'run_id' missing"),
    "missing config.json": (lambda run: (run / "config.json").unlink(), [], 3, "config.json is missing"),
    "missing preset.toml": (lambda run: (run / "preset.toml").unlink(), [], 3, "preset.toml is missing"),
    "preset.toml not UTF-8": (lambda run: (run / "preset.toml").write_bytes(b"name = \"\xff\"\n"), [], 3,
                              "preset.toml is not valid UTF-8"),
    "locked key changed": (None, ["--set", "seed=4", "--set", "train.epochs=2"], 3, "seed: 3 -> 4"),
    "nothing left to train": (None, [], 3, "already trained 1"),
    "every checkpoint damaged": (_damage_checkpoints, ["--set", "train.epochs=2"], 3, "every checkpoint is damaged"),
    "checkpoints removed by gc": (lambda run: change_meta(run, gc={"removed": ["checkpoints/last.pt"], "bytes": 1}),
                                  ["--set", "train.epochs=2"], 3, "removed its resume checkpoints"),
    "locked run": (None, ["--set", "train.epochs=2"], 3, "is in use by"),
    "data missing": (None, ["--set", "train.epochs=2"], 2, "no such file or directory"),
}


@pytest.mark.parametrize("reason", list(REFUSALS))
def test_a_refused_resume_leaves_every_file_of_the_run_as_it_was(reason, made, tmp_path):
    damage, args, code, said = REFUSALS[reason]
    runs, run = copy_run(made, tmp_path)
    if damage is not None:
        damage(run)
    lock = RunLock(run).acquire() if reason == "locked run" else None
    moved = made["data"].with_suffix(".away")
    before = snapshot(run)
    try:
        if reason == "data missing":
            os.replace(made["data"], moved)
        with data_changed(made, samples=500, seed=7) if reason == "changed data" else nullcontext():
            result = cli("resume", run, "--runs-dir", runs, *args)
        after = snapshot(run)
    finally:
        if reason == "data missing":
            os.replace(moved, made["data"])
        if lock is not None:
            lock.release()
    assert result.exit_code == code, result.output
    assert said in " ".join(result.output.split()), result.output
    assert sorted(after) == sorted(before)
    for name in before:
        assert after[name] == before[name], f"{reason}: {name} changed"
