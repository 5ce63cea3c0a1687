"""Damaged run files: every reader reports them (with the file's name) and goes on; resume recovers.

Already covered elsewhere and not repeated here: a truncated or bit-flipped ``last.pt`` falls back to
``previous.pt`` bitwise and every checkpoint damaged refuses the resume (test_resume.py); bad and torn
lines in ``read_metrics`` and ``MetricsTail`` (test_store_jsonl.py) and in the dashboard model and
``watch --once`` (test_tui_model.py, test_tui_watch_cli.py); ``run.json`` damaged in ``ls``
(test_store_layout.py) and ``summary.json`` cut off in ``compare`` (test_compare.py).
"""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from engine import faults
from engine.analysis.build import build_comparison
from engine.analysis.load import load_runs
from engine.analysis.plot import skipped_lines
from engine.run import NullReporter, recovery, resume_run, start_run
from engine.store import MetricsTail, read_metrics, read_status, read_summary
from mmbal_cli.app import app
from mmbal_cli.tui.model import RunModel

from runtools import InterruptAt, tiny_preset

PRESET = tiny_preset('name = "joint"', name="damage", seed=3)
OVERRIDES = ["train.threads=1"]
runner = CliRunner()


@pytest.fixture(scope="module")
def made(tmp_path_factory, one_thread):
    """A finished run (the reference) and a run interrupted after step 10 (last.pt at step 10,
    previous.pt at step 7), both of the tiny preset."""
    root = tmp_path_factory.mktemp("damage")
    preset = root / "damage.toml"
    preset.write_text(PRESET)
    done = start_run(preset, OVERRIDES, runs_dir=root / "done").run_dir
    cut = start_run(preset, OVERRIDES, runs_dir=root / "cut", reporter=InterruptAt(10)).run_dir
    return {"done": done, "cut": cut}


def copy_run(run_dir, tmp_path):
    """A copy of ``run_dir`` alone in a fresh runs directory; returns (runs dir, run dir)."""
    runs = tmp_path / "runs"
    shutil.copytree(run_dir, runs / run_dir.name)
    return runs, runs / run_dir.name


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output  # no traceback
    return result


def rows(run_dir):
    got = read_metrics(run_dir / "metrics.jsonl").metric_rows()
    return [(r["step"], r["split"], r["m"]) for r in got]


def assert_same_run(run_dir, reference):
    a = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert rows(run_dir) == rows(reference)  # each step once, the same values, one test row
    assert read_summary(run_dir)["test"] == read_summary(reference)["test"]
    assert read_status(run_dir)["state"] == "finished"


def flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


class Warnings(NullReporter):
    def __init__(self):
        self.seen = []

    def warn(self, message):
        self.seen.append(message)


# -- checkpoints ----------------------------------------------------------------------------------
def test_resume_names_the_damaged_checkpoint_and_sets_it_aside(made, tmp_path):
    """The CLI names the damaged file; it is kept as last.pt.damaged, so the next save does not turn it
    into previous.pt over the good checkpoint (which a crash there would leave the run without)."""
    runs, run = copy_run(made["cut"], tmp_path)
    flip_a_bit(run / "checkpoints" / "last.pt")
    with faults.inject("checkpoint_rename:1:EIO"):  # the resumed run's first save dies where the old one is kept
        first = cli("resume", run.name, "--runs-dir", runs)
    assert f"checkpoint {run / 'checkpoints' / 'last.pt'}: " in first.output
    assert "falling back to the previous one" in first.output
    assert (run / "checkpoints" / "last.pt.damaged").exists()
    if read_status(run)["state"] != "finished":
        assert cli("resume", run.name, "--runs-dir", runs).exit_code == 0
    assert_same_run(run, made["done"])


def test_damaged_best_checkpoint_is_reported_and_selected_again(made, tmp_path):
    runs, run = copy_run(made["cut"], tmp_path)
    flip_a_bit(run / "checkpoints" / "best.pt")
    reporter = Warnings()
    resume_run(run.name, runs_dir=runs, reporter=reporter)
    assert any(str(run / "checkpoints" / "best.pt") in w and "re-selected" in w for w in reporter.seen), reporter.seen
    assert read_summary(run)["selected"]["epoch"] >= 1  # selected among the epochs after the resume point


def test_every_checkpoint_damaged_says_what_to_do_and_doing_it_trains_again_from_step_0(made, tmp_path):
    runs, run = copy_run(made["cut"], tmp_path)
    for name in ("last.pt", "previous.pt"):
        (run / "checkpoints" / name).write_bytes(b"PK\x03\x04 not a checkpoint")
    refused = cli("resume", run.name, "--runs-dir", runs)
    assert refused.exit_code == 3 and "every checkpoint is damaged" in refused.output
    assert "last.pt" in refused.output and "previous.pt" in refused.output and "Move them out of" in refused.output
    for name in ("last.pt", "previous.pt"):
        (run / "checkpoints" / name).rename(tmp_path / name)
    done = cli("resume", run.name, "--runs-dir", runs)
    assert done.exit_code == 0 and "starts again from step 0" in done.output
    assert_same_run(run, made["done"])


def test_temporary_files_of_a_dead_writer_are_removed_by_resume(made, tmp_path):
    runs, run = copy_run(made["cut"], tmp_path)
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    for rel in (f"checkpoints/.last.pt.tmp-{dead}", f".summary.json.tmp-{dead}"):
        (run / rel).write_bytes(b"half a file")
    alive = run / "checkpoints" / f".last.pt.tmp-{1}"  # pid 1 exists: not touched
    alive.write_bytes(b"in use")
    assert recovery.remove_dead_temps(run) == [f".summary.json.tmp-{dead}", f"checkpoints/.last.pt.tmp-{dead}"]
    assert alive.exists() and not (run / f".summary.json.tmp-{dead}").exists()


# -- metrics.jsonl: a torn or garbage line ---------------------------------------------------------
def damage_log(run_dir):
    """A garbage line after the 4th line and a torn last line; returns the garbage line's number."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:4]) + b"\x00\xffnot json\n" + b"".join(lines[4:]) + b'{"kind":"metrics","st')
    return 5


def test_every_reader_skips_a_bad_line_with_a_warning(made, tmp_path):
    runs, run = copy_run(made["done"], tmp_path)
    line = damage_log(run)
    bad = f"metrics.jsonl line {line}: not valid JSON, skipped"
    log = read_metrics(run / "metrics.jsonl")
    assert bad in log.warnings and log.torn_tail
    assert rows(run) == rows(made["done"])  # nothing else lost
    tail = MetricsTail(run / "metrics.jsonl")
    assert len(tail.poll()) == len(log.records) and bad in tail.warnings and tail.pending_bytes > 0
    notices = [n.text for n in RunModel(run).load().notices()]
    assert any(bad in t for t in notices) and any("incomplete line" in t for t in notices)
    comp = build_comparison(load_runs(runs, [run.name]))
    assert f"{run.name}/{bad}" in skipped_lines(comp)
    assert bad in recovery.file_warnings(run, has_checkpoint=True)


def test_compare_plot_warns_about_skipped_lines(made, tmp_path):
    pytest.importorskip("matplotlib")
    runs, run = copy_run(made["done"], tmp_path)
    damage_log(run)
    result = cli("compare", run.name, "--runs-dir", runs, "--plot", tmp_path / "curves.png")
    assert result.exit_code == 0, result.output
    assert f"warning: {run.name}/metrics.jsonl line 5: not valid JSON, skipped" in result.output
    assert "incomplete last line" in result.output and (tmp_path / "curves.png").stat().st_size > 0


def test_resume_warns_about_bad_lines_and_ends_as_the_uninterrupted_run(made, tmp_path):
    runs, run = copy_run(made["cut"], tmp_path)
    damage_log(run)
    done = cli("resume", run.name, "--runs-dir", runs)
    assert done.exit_code == 0, done.output
    assert "warning: metrics.jsonl line 5: not valid JSON, skipped" in done.output
    assert "incomplete last line" in done.output
    assert_same_run(run, made["done"])  # the bad line skipped, the torn tail cut by the writer


# -- status.json and summary.json: missing or invalid ------------------------------------------------
DAMAGES = {
    "status missing": ("status.json", None),
    "status invalid": ("status.json", '{"state": "runn'),
    "summary missing": ("summary.json", None),
    "summary invalid": ("summary.json", "[1, 2]"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_ls_watch_compare_and_resume_report_a_damaged_status_or_summary(damage, made, tmp_path):
    name, content = DAMAGES[damage]
    runs, run = copy_run(made["done"], tmp_path)
    if content is None:
        (run / name).unlink()
    else:
        (run / name).write_text(content)
    listed = json.loads(cli("ls", "--json", "--runs-dir", runs).output)
    assert listed[0]["state"] == "damaged" and listed[0]["error"].startswith(name), listed
    table = cli("ls", "--runs-dir", runs)
    assert table.exit_code == 0 and "damaged" in table.output and name in table.output
    shown = cli("watch", run.name, "--once", "--runs-dir", runs)
    assert shown.exit_code == 0 and "▲" in shown.output
    assert any(name in line for line in shown.output.splitlines() if "▲" in line), shown.output
    compared = cli("compare", run.name, "--runs-dir", runs)
    assert compared.exit_code == 0 and f"damaged: {name}" in compared.output
    resumed = cli("resume", run.name, "--runs-dir", runs)  # the end is done again, the file written again
    assert resumed.exit_code == 0, resumed.output
    assert any(line.startswith("warning:") and name in line for line in resumed.output.splitlines()), resumed.output
    assert_same_run(run, made["done"])
    assert json.loads(cli("ls", "--json", "--runs-dir", runs).output)[0]["state"] == "finished"
