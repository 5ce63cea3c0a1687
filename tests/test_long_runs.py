"""Long runs (issue #9, item 7): memory stays flat, and reading a huge metrics.jsonl stays fast.

* Memory: a 1,000-epoch and a 10,000-step run of a tiny model, each in a fresh process, sample
  their resident memory (and ``torch.cuda.memory_allocated`` on CUDA) into preallocated arrays; after
  a warm-up the growth over the second half and the fitted slope must stay below a small bound. A
  structural test checks that nothing reachable from the trainer (recorder, method, monitors,
  writer) grows with the number of epochs or steps: no per-step Python lists.
* Reading: a ``metrics.jsonl`` of ``MMBAL_TEST_METRICS_BYTES`` (default 1 GB; written in a few
  seconds as a header, a repeated block of records and a fresh tail) is opened by the dashboard's
  reader: its first read is the header plus the window (not the whole file), a refresh after one
  appended record reads exactly that record (plus the 64-byte check of the previous end), fast;
  ``watch --once`` and ``ls`` of the run read a bounded number of bytes.

The figures are printed (``pytest -s``) for RELIABILITY.md. ``MMBAL_TEST_DEVICE=cuda`` runs the
memory test on the GPU.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.store import (MetricsLog, MetricsTail, MetricsWriter, create_run_dir, list_runs, write_status,
                          write_summary)
from engine.store.jsonl import read_metrics
from mmbal_cli.app import app
from mmbal_cli.tui.model import METRICS_WINDOW_BYTES, RunModel, RunReader

from runtools import tiny_preset

ROOT = Path(__file__).resolve().parents[1]
TEST_DEVICE = os.environ.get("MMBAL_TEST_DEVICE", "cpu")
BIG_BYTES = int(float(os.environ.get("MMBAL_TEST_METRICS_BYTES", "1e9")))
SIGNATURE = 64  # MetricsTail re-reads the last bytes it has seen to notice a rewritten file


def fast_dir(fallback: Path, need: int = 0) -> Path:
    """A fresh directory in /dev/shm when it has room (fsync costs nothing there), else ``fallback``."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > need + (1 << 30):
        return Path(tempfile.mkdtemp(dir=shm, prefix="mmbal-test-"))
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def bytes_read() -> int:
    """Bytes this process has read through read(2)/pread(2) so far (Linux ``/proc/self/io`` rchar)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


@pytest.fixture()
def fast_tmp(tmp_path):
    """A fresh directory, in /dev/shm when it has room; removed afterwards."""
    path = fast_dir(tmp_path / "fast")
    yield path
    if path != tmp_path / "fast":
        shutil.rmtree(path, ignore_errors=True)


needs_proc_io = pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")


# -- memory ----------------------------------------------------------------------------------------
def long_preset(name: str, n: int, epochs: int, batch: int, log_every: int = 1000, monitors: bool = False) -> str:
    """Joint on ``n`` synthetic samples of 4 features per modality, two MLPs [8] -> 8 without dropout, SGD,
    one thread, on MMBAL_TEST_DEVICE."""
    return tiny_preset(name=name, seed=1, epochs=epochs, encoder={"encoder": "mlp", "hidden": [8], "dim": 8},
                       data={"synthetic": {"n_samples": n, "dims": [4, 4], "unique": None, "noise": None}},
                       train={"batch_size": batch, "log_every": log_every, "threads": 1, "device": TEST_DEVICE},
                       monitor={"enabled": monitors})


# Runs in a fresh interpreter: samples go into preallocated arrays so that measuring adds no memory.
MEASURE = textwrap.dedent("""
    import array, json, os, sys, time
    from pathlib import Path
    import torch
    from engine.run import NullReporter, start_run

    PAGE = os.sysconf("SC_PAGE_SIZE")
    STATM = os.open("/proc/self/statm", os.O_RDONLY)

    def rss():
        return int(os.pread(STATM, 64, 0).split()[1]) * PAGE

    class Sampler(NullReporter):
        def __init__(self, every, cap=400):
            self.every, self.n = every, 0
            self.step, self.rss, self.cuda = (array.array("q", bytes(8 * cap)) for _ in range(3))
            self.cuda_on = torch.cuda.is_available()

        def progress(self, pos, n_batches, epochs, values):
            if pos.step % self.every == 0 and self.n < len(self.step):
                self.step[self.n], self.rss[self.n] = pos.step, rss()
                self.cuda[self.n] = torch.cuda.memory_allocated() if self.cuda_on else 0
                self.n += 1

    out = {}
    for preset, every in zip(sys.argv[2::2], sys.argv[3::2]):
        sampler = Sampler(int(every))
        started = time.perf_counter()
        result = start_run(preset, [], Path(sys.argv[1]), reporter=sampler)
        seconds = time.perf_counter() - started
        n = sampler.n
        out[Path(preset).stem] = {"steps": result.summary["steps"], "epochs": result.summary["epochs"],
                                  "seconds": seconds, "x": list(sampler.step[:n]), "rss": list(sampler.rss[:n]),
                                  "cuda": list(sampler.cuda[:n]) if sampler.cuda_on else None,
                                  "device": result.summary["device"]}
    print(json.dumps(out))
""")


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


@pytest.fixture(scope="module")
def long_runs(tmp_path_factory):
    """The two long runs, each measured in its own fresh process (side by side): {preset stem: figures}."""
    base = tmp_path_factory.mktemp("long")
    work = fast_dir(base / "work")
    procs = []
    try:
        # 200 samples -> 140 training rows, 3 steps an epoch: 1,000 evaluations and checkpoints;
        # 2,000 samples -> 1,400 training rows in batches of 8: 175 steps an epoch, 10,150 steps
        for name, n, epochs, batch, every in (("epochs1000", 200, 1000, 64, 30), ("steps10000", 2000, 58, 8, 100)):
            path = base / f"{name}.toml"
            path.write_text(long_preset(name, n, epochs, batch))
            procs.append(subprocess.Popen([sys.executable, "-c", MEASURE, str(work / name), str(path), str(every)],
                                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        figures = {}
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
            figures.update(json.loads(out.strip().splitlines()[-1]))
        return figures
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if work != base / "work":
            shutil.rmtree(work, ignore_errors=True)


# Growth allowed over the second half of a run: far below what one leaked list entry per step or
# epoch, or one leaked tensor per evaluation, would add (and well above page-granular noise).
GROWTH_BOUND = 512 * 1024


@pytest.mark.parametrize("name, unit", [("epochs1000", "epoch"), ("steps10000", "step")])
def test_long_run_memory_stays_flat(long_runs, name, unit):
    run = long_runs[name]
    assert run["steps"] >= (10_000 if unit == "step" else 3_000) and len(run["x"]) >= 50
    keep = len(run["x"]) // 5  # warm-up: allocator pools, first checkpoint and summary
    xs, rss = run["x"][keep:], run["rss"][keep:]
    half = len(xs) // 2
    growth = rss[-1] - rss[half]
    per_step = slope(xs, rss)
    second_half = per_step * (xs[-1] - xs[half])
    print(f"\n{name} on {run['device']}: {run['steps']} steps, {run['epochs']} epochs in {run['seconds']:.1f} s "
          f"({run['steps'] / run['seconds']:.0f} steps/s); RSS {run['rss'][0] / 2**20:.1f} MiB at step {run['x'][0]}, "
          f"{rss[half] / 2**20:.2f} MiB at step {xs[half]}, {rss[-1] / 2**20:.2f} MiB at step {xs[-1]}; "
          f"growth over the second half {growth / 1024:.0f} KiB, fitted slope {per_step:.2f} B/step "
          f"({second_half / 1024:.0f} KiB over the second half)")
    assert growth < GROWTH_BOUND
    assert second_half < GROWTH_BOUND
    if run["cuda"] is not None:
        cuda = run["cuda"][keep:]
        print(f"  cuda allocated {cuda[half]} B at step {xs[half]}, {cuda[-1]} B at step {xs[-1]}")
        assert cuda[-1] - cuda[half] <= 64 * 1024


def _sizes(obj, path="trainer", seen=None, depth=0, out=None) -> dict[str, int]:
    """Lengths of every list/dict/set/tuple reachable from ``obj`` through attributes and items
    (modules, tensors and data excluded: their sizes are fixed by the config)."""
    import torch

    seen = set() if seen is None else seen
    out = {} if out is None else out
    if id(obj) in seen or depth > 8 or isinstance(obj, (torch.Tensor, torch.nn.Module, str, bytes, int, float)):
        return out
    seen.add(id(obj))
    if isinstance(obj, (list, tuple, set, frozenset, dict)):
        out[path] = len(obj)
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for key, value in list(items)[:64]:
            _sizes(value, f"{path}[{key!r}]" if isinstance(obj, dict) else f"{path}[i]", seen, depth + 1, out)
        return out
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict) and (depth == 0 or type(obj).__module__.startswith("engine")):
        for key, value in attrs.items():
            if key not in ("data", "cfg", "ctx"):
                _sizes(value, f"{path}.{key}", seen, depth + 1, out)
    return out


def test_trainer_and_recorder_keep_no_per_step_or_per_epoch_lists(tmp_path, fast_tmp, monkeypatch):
    import engine.run.lifecycle

    trainers = []

    class Spy(engine.run.lifecycle.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    monkeypatch.setattr(engine.run.lifecycle, "Trainer", Spy)
    sizes = []
    for epochs in (4, 16):
        preset = tmp_path / f"e{epochs}.toml"
        # every step logged, every monitor on: whatever they keep would grow with the run
        preset.write_text(long_preset(f"e{epochs}", 200, epochs, 16, log_every=1, monitors=True))
        engine.run.lifecycle.start_run(preset, [], fast_tmp / f"runs{epochs}")
        sizes.append(_sizes(trainers[-1]))
    reached = {"trainer.recorder.latest", "trainer.recorder.heartbeat._fields", "trainer.interval.sums",
               "trainer.monitors.last"}
    assert reached <= set(sizes[1]) and len(sizes[1]) > 15  # the walk reaches recorder, monitors, sums
    # the selection's metrics, one dict shared by the trainer and the recorder's copy of best.pt's state
    assert {"trainer.best.metrics", "trainer.recorder.best_state['metrics']"} & set(sizes[1])
    grown = {path: (sizes[0].get(path), n) for path, n in sizes[1].items() if n > sizes[0].get(path, 0)}
    assert grown == {}


# -- reading a huge metrics.jsonl ------------------------------------------------------------------
TRAIN = ('{"kind":"metrics","t":%.6f,"step":%d,"epoch":%.4f,"split":"train","seg":0,"m":{"train/loss/method":'
         '1.1039962371190388,"train/acc/fused":0.3125,"train/acc/a":0.3645833333333333,"train/acc/b":'
         '0.3645833333333333,"coef/a":1.0,"coef/b":1.0,"mi/a":0.022009352877093935,"mi/b":9.937520184521986e-08,'
         '"mi/a;b":0.0,"grad/a":0.1533876657485962,"grad/b":0.11068613082170486,"lr":0.05}}\n')
VAL = ('{"kind":"metrics","t":%.6f,"step":%d,"epoch":%d,"split":"val","seg":0,"m":{"val/acc/fused":0.4,'
       '"val/f1/fused":0.39601139601139596,"val/loss/fused":1.0949225531684028,"val/acc/a":0.24444444,'
       '"val/acc/b":0.3333,"val/f1/a":0.2,"val/f1/b":0.3,"val/loss/a":1.1,"val/loss/b":1.09}}\n')
SPE, LOG_EVERY, TAIL_FIRST_STEP = 100, 25, 10**8


def _records(step: int, t: float, nbytes: int) -> tuple[bytes, int]:
    """Realistic train records every LOG_EVERY steps (a val record every epoch) from ``step`` on."""
    out, n = [], 0
    while n < nbytes:
        step += LOG_EVERY
        t += 0.01
        line = TRAIN % (t, step, step / SPE) + (VAL % (t, step, step // SPE) if step % SPE == 0 else "")
        out.append(line)
        n += len(line)
    return "".join(out).encode(), step


def write_big_metrics(path: Path, size: int, tail_bytes: int = 2 * METRICS_WINDOW_BYTES) -> int:
    """A ``size``-byte metrics.jsonl in seconds: the header, a 4 MiB block of valid records repeated
    (steps repeat there; nothing reads it), and ``tail_bytes`` of records with fresh, increasing steps
    from TAIL_FIRST_STEP on. Returns the last step."""
    header = json.dumps({"kind": "header", "t": 1.0, "schema": 1, "run_id": "bigrun01", "name": "big",
                         "method": "joint", "modalities": ["a", "b"], "epochs": 10**9, "steps_per_epoch": SPE})
    block, _ = _records(0, 1.7e9, 4 << 20)
    with open(path, "wb") as f:
        f.write(header.encode() + b"\n")
        for _ in range(max(size - tail_bytes, 0) // len(block)):
            f.write(block)
        tail, last = _records(TAIL_FIRST_STEP, 1.8e9, size - f.tell())
        f.write(tail)
    return last


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    """A finished run whose metrics.jsonl has BIG_BYTES bytes: (run dir, last step, seconds to write)."""
    base = fast_dir(tmp_path_factory.mktemp("big"), need=BIG_BYTES)
    try:
        info = {"schema": 1, "run_id": "bigrun01", "name": "big", "method": "joint", "dataset": "synthetic",
                "modalities": ["a", "b"]}
        config = {"train": {"epochs": 10**9}, "method": {"name": "joint"}, "modalities": {"a": {}, "b": {}}}
        run_dir = create_run_dir(base / "runs", "big", "bigrun01",
                                 {"run.json": json.dumps(info).encode(), "config.json": json.dumps(config).encode()})
        started = time.perf_counter()
        last = write_big_metrics(run_dir / "metrics.jsonl", BIG_BYTES)
        seconds = time.perf_counter() - started
        write_summary(run_dir, {"status": "finished", "run_id": "bigrun01", "name": "big", "steps": last})
        write_status(run_dir, "finished", step=last, epoch=last // SPE)
        print(f"\nwrote a {BIG_BYTES / 1e9:.2f} GB metrics.jsonl in {seconds:.1f} s")
        yield run_dir, last
    finally:
        shutil.rmtree(base, ignore_errors=True)


def w_size(run_dir: Path) -> int:
    return (run_dir / "metrics.jsonl").stat().st_size


@needs_proc_io
def test_first_read_of_a_huge_log_is_its_header_and_window(big_run):
    run_dir, last = big_run
    size = w_size(run_dir)
    # without a window the read below would take minutes and gigabytes: fail at once instead
    assert (RunReader(run_dir).tail.start_window or float("inf")) <= 64 << 20
    before, started = bytes_read(), time.perf_counter()
    model = RunModel(run_dir).load()
    seconds, read = time.perf_counter() - started, bytes_read() - before
    rows = model.log.metric_rows()
    print(f"\nfirst read of a {size / 1e9:.2f} GB log: {read / 2**20:.1f} MiB read in {seconds * 1000:.0f} ms, "
          f"{len(model.log.records)} records from step {rows[0]['step']}")
    assert read < METRICS_WINDOW_BYTES + (1 << 20)  # the window, the header line, the small JSON files
    assert model.run_id == "bigrun01" and model._header()["name"] == "big"  # the header is kept
    assert rows[0]["step"] > TAIL_FIRST_STEP and rows[-1]["step"] == last  # a clean cut at a line start
    assert model.warnings == [] and model.pending_bytes == 0
    assert model.value("train/acc/fused") == 0.3125
    notice = [n.text for n in model.notices() if "is long" in n.text]
    assert notice and f"from step {rows[0]['step']}" in notice[0]


@needs_proc_io
def test_a_refresh_reads_only_the_appended_record_and_is_fast(big_run):
    run_dir, last = big_run
    reader, model = RunReader(run_dir), RunModel(run_dir)
    model.apply(reader.read())
    views = (model.modality_rows, lambda: model.chart("acc"), lambda: model.chart("loss"), model.notices,
             model.event_rows, model.elapsed, lambda: model.progress)
    for view in views:
        view()
    timings = []
    for i in range(1, 4):
        size = w_size(run_dir)
        with MetricsWriter(run_dir / "metrics.jsonl") as w:
            w.metrics(last + i * LOG_EVERY, (last + i * LOG_EVERY) / SPE, "train", {"train/acc/fused": 0.5})
        appended = w_size(run_dir) - size
        tail_before = reader.tail.offset
        before, started = bytes_read(), time.perf_counter()
        assert model.apply(reader.read())
        for view in views:
            view()
        seconds, read = time.perf_counter() - started, bytes_read() - before
        timings.append(seconds)
        assert reader.tail.offset - tail_before == appended  # the tail moved by exactly the new record
        assert read < appended + SIGNATURE + 16 * 1024  # that record, the check bytes and the small JSON files
        assert model.value("train/acc/fused") == 0.5 and model.step == last + i * LOG_EVERY
    print(f"\nrefresh after one appended record: {', '.join(f'{t * 1000:.1f}' for t in timings)} ms "
          f"(read + apply + the dashboard's views)")
    assert min(timings) < 0.05


def test_the_tail_alone_reads_the_new_bytes_plus_its_check(big_run, monkeypatch):
    run_dir, last = big_run
    tail = MetricsTail(run_dir / "metrics.jsonl", start_window=METRICS_WINDOW_BYTES)
    tail.poll()
    size = w_size(run_dir)
    with MetricsWriter(run_dir / "metrics.jsonl") as w:
        w.metrics(last + 10**6, 0.0, "train", {"train/acc/fused": 0.125})
    counted, real_pread = [], os.pread

    def counting_pread(fd, n, at):
        data = real_pread(fd, n, at)
        counted.append(len(data))
        return data

    monkeypatch.setattr(os, "pread", counting_pread)
    records = tail.poll()
    monkeypatch.setattr(os, "pread", real_pread)
    assert [r["m"] for r in records] == [{"train/acc/fused": 0.125}]
    assert sum(counted) == (w_size(run_dir) - size) + SIGNATURE


@needs_proc_io
def test_watch_once_and_ls_of_a_huge_run_read_a_bounded_amount(big_run):
    run_dir, _ = big_run
    assert (RunReader(run_dir).tail.start_window or float("inf")) <= 64 << 20
    for _ in range(2):  # the first one also reads the modules the snapshot imports
        before, started = bytes_read(), time.perf_counter()
        res = CliRunner().invoke(app, ["watch", str(run_dir), "--once"], env={"COLUMNS": "120"})
        seconds, read = time.perf_counter() - started, bytes_read() - before
        assert res.exit_code == 0, res.output
    assert "is long" in res.output and "bigrun01" in res.output
    before = bytes_read()
    runs = list_runs(run_dir.parent)
    ls_read = bytes_read() - before
    print(f"\nwatch --once of a {w_size(run_dir) / 1e9:.2f} GB log: {read / 2**20:.1f} MiB read, {seconds:.2f} s; "
          f"ls: {ls_read} bytes read")
    assert read < METRICS_WINDOW_BYTES + (2 << 20)
    assert [r.state for r in runs] == ["finished"] and ls_read < 256 * 1024


# -- the window and the incremental views agree with a full read -------------------------------------
def _random_log(rng: random.Random, n: int) -> list[dict]:
    """Records of a run resumed a few times: metrics, events, resumes (steps rewind), test rows."""
    out, step, seg = [{"kind": "header", "t": 0.0, "run_id": "r", "name": "n"}], 0, 0
    for i in range(n):
        roll = rng.random()
        if roll < 0.05 and step > 10:
            step = rng.randrange(step)
            seg += 1
            out.append({"kind": "resume", "t": float(i), "from_step": step, "seg": seg})
        elif roll < 0.15:
            name = rng.choice(["checkpoint", "best"])
            out.append({"kind": "event", "t": float(i), "step": step, "seg": seg, "name": name})
        else:
            step += rng.randrange(1, 4)
            split = rng.choice(["train", "train", "val", "test"])
            out.append({"kind": "metrics", "t": float(i), "step": step, "epoch": step / 10, "split": split, "seg": seg,
                        "m": {f"{split}/acc/fused": rng.random(), f"{split}/acc/a": rng.random()}})
    return out


@pytest.mark.parametrize("seed", range(6))
def test_incremental_views_equal_a_fresh_read(tmp_path, seed):
    rng = random.Random(seed)
    records = _random_log(rng, 400)
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"")
    reader, model = RunReader(tmp_path), RunModel(tmp_path)
    done = 0
    while done < len(records):
        chunk = records[done:done + rng.randrange(1, 40)]
        with open(path, "ab") as f:
            f.write("".join(json.dumps(r) + "\n" for r in chunk).encode())
        done += len(chunk)
        model.apply(reader.read())
        fresh = RunModel(tmp_path).load()
        assert model.log.metric_rows() == fresh.log.metric_rows() == read_metrics(path).metric_rows()
        assert model.event_rows() == fresh.event_rows()
        assert model._segments() == fresh._segments()
        assert model.notices() == fresh.notices()
        for key in fresh.keys():
            for axis in ("step", "epoch"):
                assert model.points(key, x_axis=axis) == fresh.points(key, x_axis=axis), key


def test_metric_rows_folded_in_pieces_equal_one_pass():
    rng = random.Random(7)
    records = _random_log(rng, 600)
    log = MetricsLog()
    for start in range(0, len(records), 17):
        log.records.extend(records[start:start + 17])
        assert log.metric_rows() == MetricsLog(records=list(log.records)).metric_rows()


def test_window_keeps_segment_semantics_when_the_resume_is_before_it(tmp_path):
    """Rows after a resume all belong to its segment: cutting the resume off changes no surviving row."""
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        w.header("r")
        for step in range(1, 400):
            w.metrics(step, step / 10, "train", {"train/acc/fused": step / 1000})
        w.resume(from_step=200, seg=1)
        for step in range(201, 1200):
            w.metrics(step, step / 10, "train", {"train/acc/fused": step / 1000 + 1})
    full = read_metrics(path).metric_rows()
    tail = MetricsTail(path, start_window=20_000)
    records = tail.poll()
    assert records[0]["kind"] == "header" and tail.skipped_bytes > 0
    window_rows = [r for r in records if r["kind"] == "metrics"]
    assert "resume" not in {r["kind"] for r in records}  # it lies before the window
    assert window_rows == full[-len(window_rows):]
    assert tail.offset == path.stat().st_size and tail.warnings == []


def test_window_restarts_after_a_rewrite_and_small_files_are_read_whole(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        w.header("r")
        for step in range(1, 50):
            w.metrics(step, 0, "train", {"x": step})
    small = MetricsTail(path, start_window=1 << 20)
    assert len(small.poll()) == 50 and small.skipped_bytes == 0
    tail = MetricsTail(path, start_window=600)
    first = tail.poll()
    assert first[0]["kind"] == "header" and 1 < len(first) < 50 and tail.skipped_bytes > 0
    assert first[-1]["m"] == {"x": 49}
    with MetricsWriter(path) as w:  # a resume truncating to an earlier offset, then appending
        w.truncate_to(len(b"".join(path.read_bytes().splitlines(keepends=True)[:20])))
        w.metrics(999, 0, "train", {"x": 999})
    again = tail.poll()
    assert tail.reset and again[0]["kind"] == "header" and again[-1]["m"] == {"x": 999}


def test_resume_of_a_run_with_a_long_log_reads_a_bounded_part_of_it(tmp_path, monkeypatch):
    """A resume needs the log's header and latest values: it parses the header and the last
    WINDOW_BYTES, not a 1 GB log (which took minutes and gigabytes when read whole)."""
    from engine.run import resume_run, start_run
    from engine.store import jsonl

    preset = tmp_path / "p.toml"
    preset.write_text(tiny_preset('name = "joint"', epochs=2))
    run = start_run(preset, [], tmp_path / "runs")
    log = run.run_dir / "metrics.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    filler = lines[1] * (3 * jsonl.WINDOW_BYTES // len(lines[1]))  # old train rows of segment 0, step <= 3
    log.write_bytes(lines[0] + filler + b"".join(lines[1:]))
    fed = []
    original = jsonl._LineParser.feed

    def counting_feed(self, data):
        fed.append(len(data))
        return original(self, data)
    monkeypatch.setattr(jsonl._LineParser, "feed", counting_feed)
    done = resume_run(run.run_dir.name.rsplit("_", 1)[-1], ["train.epochs=3"], tmp_path / "runs")
    assert done.state == "finished"
    assert log.stat().st_size > 3 * jsonl.WINDOW_BYTES and sum(fed) < 3 * jsonl.WINDOW_BYTES
