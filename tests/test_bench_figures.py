"""``mmbal bench``'s method figures: ratios to joint measured side by side, in alternating order."""

from engine.bench import figures


def test_paired_ratio_alternates_and_takes_per_pair_ratios(monkeypatch):
    calls = []
    # the machine slows down 10x halfway: per-pair ratios still say 2, a ratio of separate medians would not
    speed = iter([1, 1, 1, 1, 10, 10, 10, 10, 10, 10])

    def fake_timed(fn, device):
        calls.append(fn.__name__)
        return {"method": 2.0, "joint": 1.0}[fn.__name__] * next(speed)

    def method():
        pass

    def joint():
        pass
    monkeypatch.setattr(figures, "timed", fake_timed)
    monkeypatch.setattr(figures, "epochs_per_timing", lambda fn, device: 1)
    result = figures.paired_ratio(method, joint, "cpu", repeats=5)
    assert calls == ["method", "joint", "joint", "method", "method", "joint", "joint", "method", "method", "joint"]
    assert result["median"] == result["min"] == result["max"] == 2.0
    assert result["epoch_s"] == 20.0


def test_loops_alternate_their_order_and_each_ratio_is_taken_within_a_repeat(monkeypatch):
    calls = []
    # the machine is 3x slower on odd repeats: the ratios within a repeat stay 1.2 (engine/hand) and
    # 1.5 (reference/engine), whatever the order
    cost = {"engine": 1.2, "hand": 1.0, "reference": 1.8}

    def fake_timed(fn, device):
        calls.append(fn.__name__)
        return cost[fn.__name__] * (3.0 if (len(calls) - 1) // 3 % 2 else 1.0)

    def engine():
        pass

    def hand():
        pass

    def reference():
        pass
    monkeypatch.setattr(figures, "timed", fake_timed)
    monkeypatch.setattr(figures, "epochs_per_timing", lambda fn, device: 1)
    times = figures.loop_times({"engine": engine, "hand": hand, "reference": reference}, "cpu", 4)
    assert calls[:6] == ["engine", "hand", "reference", "reference", "hand", "engine"]
    assert times["hand"] == [1.0, 3.0, 1.0, 3.0]
    ratios = figures.loop_ratios(times)
    assert ratios["engine/hand"]["median"] == ratios["engine/hand"]["max"] == 1.2
    assert ratios["reference/engine"]["median"] == 1.5 and "compiled/hand" not in ratios


def test_the_median_interval_and_the_wide_flag():
    tight = figures.ratio_summary([1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.01, 0.99] * 3)
    assert tight["median"] == 1.0 and tight["min"] == 0.98 and tight["max"] == 1.02
    assert tight["ci_low"] <= 1.0 <= tight["ci_high"] and not figures.too_wide(tight)
    loose = figures.ratio_summary([0.7, 1.3, 0.8, 1.2, 1.0, 0.9, 1.1])   # 7 repeats spread +-30 %
    assert loose["median"] == 1.0 and figures.too_wide(loose)
    assert (loose["ci_low"], loose["ci_high"]) == (0.7, 1.3)   # 7 values: the interval is the range


def test_one_timing_runs_enough_epochs_to_last_the_minimum(monkeypatch):
    monkeypatch.setattr(figures, "timed", lambda fn, device: 0.004 if fn.__name__ == "tiny" else 1.0)

    def tiny():
        pass

    def long():
        pass
    assert figures.epochs_per_timing(tiny, "cpu", min_s=0.2) == 50
    assert figures.epochs_per_timing(long, "cpu", min_s=0.2) == 1


def test_a_busy_machine_is_one_whose_load_exceeds_half_its_cores_and_the_benchmark():
    assert [figures.busy(load, 2) for load in (0.3, 1.9, 2.1, 20.0)] == [False, False, True, True]
    assert [figures.busy(load, 16) for load in (8.9, 9.1)] == [False, True]
    assert not figures.busy(50.0, 0)   # unknown core count: no claim


def test_bench_says_what_it_times_as_it_goes(tmp_path):
    from typer.testing import CliRunner

    from mmbal_cli.app import app
    res = CliRunner().invoke(app, ["bench", "--methods", "joint,ogm", "--repeats", "1", "--no-reference", "--json",
                                   "--set", "data.synthetic.n_samples=300"])
    assert res.exit_code == 0, res.output
    assert "timing the loops (engine, hand), 1 repeats" in res.stderr
    assert "[1/2] joint against joint" in res.stderr and "[2/2] ogm against joint" in res.stderr
    import json
    figures_ = json.loads(res.stdout)
    assert len(figures_["load_average"]) == 2 and figures_["busy"] in (True, False)
    r = figures_["ratios"]["engine/hand"]
    assert r["min"] <= r["ci_low"] <= r["median"] <= r["ci_high"] <= r["max"]
    assert figures_["overhead"] == r["median"] and isinstance(figures_["wide"], list)


def test_bench_compile_times_module_and_step_compilation(monkeypatch, one_thread):
    """``--compile``: the engine with train.compile = true and with "step", each with its first epoch apart
    (compiled with aot_eager here, as in test_compile.py, for speed)."""
    import json

    import torch._dynamo
    from typer.testing import CliRunner

    import engine.train.compile as compile_mod
    from mmbal_cli.app import app
    monkeypatch.setattr(compile_mod, "BACKEND", "aot_eager")
    torch._dynamo.reset()
    try:
        res = CliRunner().invoke(app, ["bench", "--methods", "", "--repeats", "1", "--no-reference", "--compile",
                                       "--json", "--set", "data.synthetic.n_samples=300"])
    finally:
        torch._dynamo.reset()
    assert res.exit_code == 0, res.output
    assert 'compiling the training step (train.compile = "step")' in res.stderr
    d = json.loads(res.stdout)
    assert d["compiled_epoch_s"] > 0 and d["step_compiled_epoch_s"] > 0 and d["step_compile_warmup_s"] > 0


def test_own_clock_stops_between_a_contenders_calls(monkeypatch):
    """The monitors' budget of an interleaved contender sees only its own time (loops.OwnClock)."""
    from engine.bench import loops
    now = [100.0]
    monkeypatch.setattr(loops.time, "perf_counter", lambda: now[0])
    clock = loops.OwnClock()
    start = clock()
    now[0] += 2.0          # the contender runs
    clock.pause()
    now[0] += 5.0          # another contender runs
    clock.resume()
    now[0] += 1.0
    assert clock() - start == 3.0
