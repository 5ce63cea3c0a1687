"""Multi-process (data-parallel) training: two CPU processes with the gloo backend.

* For every registered method: (a) every rank applies the same coefficients and
  ends with the same weights, and (b) two ranks with batches of B/2 give the weights (and the logged
  values) of one process with batches of B. One ``torch.multiprocessing.spawn`` of two processes
  trains them all; the single-process references train in the test process.
* Resume across process counts: a run of one process resumed by the spawned group of two (rank 0
  hands the run over), and end to end ``mmbal run --nproc 2`` resumed by one process; only rank 0
  wrote the run directory.
* The pieces without processes: sharding, exit codes, the checks made before processes start.
"""

import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine.methods import METHODS as REGISTRY

from methodkit import method_table
from runtools import tiny_preset

# Options that keep a method's test cheap or exercise more of it; every other registered method runs
# with the options it cannot run without (tests/methodkit.py).
OPTIONS = {
    "ogm_ge": {"alpha": 0.5},
    "aug": {"hidden": 16, "check_every": 1, "max_heads": 2},
    "mcr": {"n_permutations": 4, "contrastive_weight": 0.5, "bottleneck_weight": 0.5, "game_weight": 0.5},
    # a re-sampled epoch has more steps than 2, and its last batch may be odd (padded by the ranks): the two
    # epochs here are its warm-up (the per-epoch valuation and its broadcast still run)
    "valuation": {"warmup_epochs": 2},
    # 10 of the 140 train rows held out for the weight estimate: epochs of 70 + 60 rows, split evenly by 2 ranks
    "gblending": {"super_epoch": 1, "estimate_epochs": 1, "v_rate": 0.07},
}
METHODS = {m: method_table(m, OPTIONS.get(m)) for m in REGISTRY.names()}   # method -> its [method] table


def exact_preset(method: str) -> str:
    """200 synthetic samples (140 train), batches of 70: 2 steps per epoch, 2 epochs; no dropout (its masks
    depend on the shard shape), Adam; the monitors on for ``joint`` (probes and critics every step)."""
    monitor = {"update_every": 1, "eval_max_samples": 30} if method == "joint" else {"enabled": False}
    return tiny_preset(METHODS[method], name=f"ddp-{method}", seed=5, epochs=2, optimizer="adam", lr=0.01,
                       encoder={"encoder": "mlp", "hidden": [16], "dim": 8},
                       data={"synthetic": {"n_samples": 200, "noise": None}},
                       train={"batch_size": 70, "log_every": 1, "threads": 1}, monitor=monitor)


class ListRecorder:
    def __init__(self):
        self.records, self.events = [], []

    def metrics(self, step, epoch, split, values):
        self.records.append((step, split, dict(values)))

    def event(self, name, step, **fields):
        self.events.append((name, step, fields))

    def save_checkpoint(self, state, kind):
        pass

    def save_monitors(self, state):
        pass

    def progress(self, position, n_batches, values):
        pass


def train(preset_path: Path) -> dict:
    """Train the preset in this process (one rank of a group, or alone) and return what the tests compare."""
    from engine.config import load_preset
    from engine.run import build_parts
    from engine.train.trainer import Trainer
    cfg, _ = load_preset(preset_path, [])
    dev = torch.device("cpu")
    data, model, method = build_parts(cfg, dev, source=str(preset_path))
    recorder = ListRecorder()
    trainer = Trainer(cfg.train, data, model, method, dev, cfg.seed, recorder, cfg.monitor)
    lives, step = [], method.train_step

    def recording_step(x, y, ctx):
        result = step(x, y, ctx)
        lives.append({k: float(v) for k, v in result.live.items()} | {"rows": int(y.shape[0])})
        return result
    method.train_step = recording_step
    trainer.fit()
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    state.update({f"method.{k}": v.clone() for k, v in method.modules.state_dict().items()})
    return {"weights": state, "lives": lives, "records": recorder.records, "events": recorder.events}


def _rank_main(rank: int, world: int, port: int, folder: str) -> None:
    """One rank of the spawned group: train every method's preset, then resume (to 2 epochs) the run
    that one process started in ``folder/runs``; save the results for the test."""
    import torch.distributed as dist

    from engine.run import resume_run
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    try:
        results = {m: train(Path(folder) / f"{m}.toml") for m in METHODS}
        resumed = resume_run("latest", ["train.epochs=2"], Path(folder) / "runs")
        results["resumed"] = {"state": resumed.state, "run_dir": str(resumed.run_dir), "summary": resumed.summary}
    finally:
        dist.destroy_process_group()
    torch.save(results, Path(folder) / f"rank{rank}.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Every method trained by a group of 2 processes (results per rank) and by this process alone."""
    from engine.run import start_run
    folder = tmp_path_factory.mktemp("ddp")
    for m in METHODS:
        (folder / f"{m}.toml").write_text(exact_preset(m))
    (folder / "aug-run.toml").write_text(tiny_preset('name = "aug"\nhidden = 16', epochs=1, train={"threads": 1}))
    threads = torch.get_num_threads()
    try:
        start_run(folder / "aug-run.toml", [], folder / "runs")   # one process, resumed by the group
    finally:
        torch.set_num_threads(threads)
    torch.multiprocessing.spawn(_rank_main, args=(2, free_port(), str(folder)), nprocs=2, join=True)
    ranks = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(2)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = {m: train(folder / f"{m}.toml") for m in METHODS}
    finally:
        torch.set_num_threads(threads)
    return ranks, single, folder


def test_a_run_of_one_process_resumes_with_two(two_ranks):
    from engine.store import read_metrics, read_summary
    (r0, r1), _, folder = two_ranks
    assert r0["resumed"]["state"] == r1["resumed"]["state"] == "finished"
    assert r0["resumed"]["run_dir"] == r1["resumed"]["run_dir"]       # handed over by rank 0
    assert r1["resumed"]["summary"] == {} and r0["resumed"]["summary"]["steps"] == 14
    run_dir = Path(r0["resumed"]["run_dir"])
    assert read_summary(run_dir)["segments"] == 2
    log = read_metrics(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in log.metric_rows() if r["split"] == "val"] == [1, 2]
    tests = [r for r in log.records if r.get("kind") == "metrics" and r["split"] == "test"]
    assert len(tests) == 2                                            # one per segment: one writer


def whole_batches(method: str) -> list[int]:
    """Rows of the 4 global batches: 70 each, or 70 and 60 an epoch where a method holds 10 rows out of its
    epochs (gblending); even, so that no rank pads a batch and 2 ranks equal 1 process exactly."""
    return [70, 60, 70, 60] if method == "gblending" else [70] * 4


def _coefficients(live: dict) -> dict:
    return {k: v for k, v in live.items() if k.startswith("coef/") or k.startswith("method/ratio")}


@pytest.mark.parametrize("method", list(METHODS))
def test_ranks_apply_the_same_coefficients_and_end_with_the_same_weights(two_ranks, method):
    (r0, r1), _, _ = two_ranks
    a, b = r0[method], r1[method]
    halves = [n // 2 for n in whole_batches(method)]
    assert [live["rows"] for live in a["lives"]] == halves == [live["rows"] for live in b["lives"]]
    assert [_coefficients(x) for x in a["lives"]] == [_coefficients(x) for x in b["lives"]]
    assert all(_coefficients(x) for x in a["lives"])
    if method in ("ogm_ge", "mcr"):  # scores from all-reduced sums / gathered batches: the same everywhere
        scores = [{k: v for k, v in x.items() if k.startswith("score/")} for x in a["lives"]]
        assert scores == [{k: v for k, v in x.items() if k.startswith("score/")} for x in b["lives"]]
    for k, w in a["weights"].items():
        assert torch.equal(w, b["weights"][k]), k
    assert a["records"] == b["records"]   # logged values (averaged over the ranks), validation, test
    assert a["events"] == b["events"]


@pytest.mark.parametrize("method", list(METHODS))
def test_two_ranks_of_half_batches_equal_one_process_of_whole_batches(two_ranks, method):
    (r0, _), single, _ = two_ranks
    a, s = r0[method], single[method]
    assert [live["rows"] for live in s["lives"]] == whole_batches(method)
    assert a["weights"].keys() == s["weights"].keys()
    for k, w in a["weights"].items():
        torch.testing.assert_close(w, s["weights"][k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{method} {k}: {m}")
    for key in ("coef/", "score/"):
        for x, y in zip(a["lives"], s["lives"]):
            got = {k: v for k, v in x.items() if k.startswith(key)}
            if method == "aug" and key == "score/":  # per step: the rank's own half batch (logged: the mean)
                continue
            assert got == pytest.approx({k: v for k, v in y.items() if k.startswith(key)}, rel=1e-4, abs=1e-5)
    assert [(st, sp) for st, sp, _ in a["records"]] == [(st, sp) for st, sp, _ in s["records"]]
    for (_, split, got), (_, _, want) in zip(a["records"], s["records"]):
        assert got.keys() == want.keys(), split
        assert got == pytest.approx(want, rel=1e-3, abs=1e-4), split
    assert [e[0] for e in a["events"]] == [e[0] for e in s["events"]]
    if method == "joint":  # the monitors learnt from the gathered batch: their running values match too
        assert any(k.startswith("mi/") for _, _, values in a["records"] for k in values)
    if method == "aug":    # the epoch-end assignment used the confidences of both halves
        val = [v for _, split, v in a["records"] if split == "val"]
        assert val[0]["score/a"] == pytest.approx([v for _, sp, v in s["records"] if sp == "val"][0]["score/a"])


# -- end to end: mmbal run --nproc 2, resume with 1 process, then with 2 ------------------------------
def _mmbal(*args, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mmbal_cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_run_with_two_processes_then_resume_with_one(tmp_path):
    from engine.run import resume_run
    from engine.store import read_metrics, read_status, read_summary
    preset = tmp_path / "tiny.toml"
    preset.write_text(tiny_preset('name = "ogm_ge"', epochs=2, train={"threads": 1}))
    runs = tmp_path / "runs"
    done = _mmbal("run", str(preset), "--runs-dir", str(runs), "--nproc", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("run ") == 1 and done.stdout.count("epoch 2/2  val") == 1  # rank 0 alone prints (results on stdout)
    (run_dir,) = runs.iterdir()                      # one run directory, made by rank 0
    files = sorted(p.name for p in run_dir.iterdir() if p.name != ".lock")
    assert files == ["checkpoints", "config.json", "metrics.jsonl", "preset.toml", "run.json", "status.json",
                     "summary.json"]
    log = read_metrics(run_dir / "metrics.jsonl")
    train_steps = [r["step"] for r in log.metric_rows() if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 14   # each record once: one writer
    assert read_summary(run_dir)["status"] == "finished"
    assert read_status(run_dir)["pid"] != os.getpid()

    threads = torch.get_num_threads()
    try:
        result = resume_run(str(run_dir), ["train.epochs=3"], runs)   # 2 processes -> 1
    finally:
        torch.set_num_threads(threads)
    assert result.state == "finished" and result.summary["steps"] == 21

    summary = read_summary(run_dir)
    assert summary["status"] == "finished" and summary["steps"] == 21 and summary["segments"] == 2
    val = [r for r in read_metrics(run_dir / "metrics.jsonl").metric_rows() if r["split"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2, 3]
    assert json.loads((run_dir / "run.json").read_text())["segments"] == 2


# -- the pieces, in this process ------------------------------------------------------------------------
def test_shards_are_contiguous_equal_and_cover_the_global_batch():
    from engine.train.data_parallel import shard_rows
    idx = torch.arange(10, 20)
    assert [shard_rows(idx, r, 2).tolist() for r in range(2)] == [list(range(10, 15)), list(range(15, 20))]
    # 7 rows over 3 ranks: padded to 9 with the batch's first rows, 3 each
    parts = [shard_rows(torch.arange(7), r, 3).tolist() for r in range(3)]
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 0, 1]]
    assert [shard_rows(torch.arange(1), r, 4).tolist() for r in range(4)] == [[0]] * 4


def test_sharded_resident_data_splits_each_epoch_batch_by_rank():
    from engine.data import TensorData
    from engine.train.data_parallel import ShardedBatches, ShardedData
    x = {"a": torch.arange(12.0)[:, None]}
    data = TensorData(x=x, y=torch.arange(12), present={}, splits={"train": torch.arange(12)}, classes=["c"],
                      modalities={}, name="n", source="s", stats={})
    whole = [b.y.tolist() for b in data.train_epoch(1, 0, 5, False).iterate()]
    halves = [[b.y.tolist() for b in ShardedData(data, r, 2).train_epoch(1, 0, 5, False).iterate()] for r in range(2)]
    assert [a + b for a, b in zip(*halves)][:2] == [w + w[:1] for w in whole[:2]]  # 5 rows, padded to 6
    assert halves[0][2] + halves[1][2] == whole[2]                    # the last batch of 2: one row each
    assert ShardedData(data, 0, 2).split_size("train") == 12          # sizes stay global

    class Source:  # any other batch source (streamed data) is cut batch by batch
        def iterate(self, start=0):
            yield from data.train_epoch(1, 0, 5, False).iterate(start)

        def __len__(self):
            return 3
    cut = [[b.y.tolist() for b in ShardedBatches(Source(), r, 2).iterate()] for r in range(2)]
    assert cut == halves


def test_exit_code_is_rank_zeros_then_the_first_failure():
    from mmbal_cli.nproc import child_env, exit_code
    assert exit_code([0, 0]) == 0
    assert exit_code([2, 1]) == 2
    assert exit_code([0, 1, 3]) == 1
    assert exit_code([-15, 0]) == 143
    env = child_env(1, 2, 1234, base={})
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["MASTER_PORT"]) == ("1", "1", "2", "1234")


def test_nproc_checks_the_batch_split_and_the_tui_before_starting_processes(tmp_path):
    from mmbal_cli.app import app
    preset = tmp_path / "tiny.toml"
    preset.write_text(tiny_preset('name = "joint"'))
    runner = CliRunner()
    bad = runner.invoke(app, ["run", str(preset), "--runs-dir", str(tmp_path / "runs"), "--nproc", "3"])
    assert bad.exit_code == 2 and "train.batch_size = 32" in bad.output and "3 processes" in bad.output
    tui = runner.invoke(app, ["run", str(preset), "--runs-dir", str(tmp_path / "runs"), "--nproc", "2", "--tui"])
    assert tui.exit_code == 2 and "--tui" in tui.output
    missing = runner.invoke(app, ["resume", "nothing", "--runs-dir", str(tmp_path / "runs"), "--nproc", "2"])
    assert missing.exit_code == 3
    assert not (tmp_path / "runs").exists()
