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
    result = figures.paired_ratio(method, joint, "cpu", repeats=5)
    assert calls == ["method", "joint", "joint", "method", "method", "joint", "joint", "method", "method", "joint"]
    assert result["median"] == result["min"] == result["max"] == 2.0
    assert result["epoch_s"] == 20.0


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
    assert "timing the loops (engine, hand), 1 epochs each" in res.stderr
    assert "[1/2] joint against joint" in res.stderr and "[2/2] ogm against joint" in res.stderr
    import json
    figures_ = json.loads(res.stdout)
    assert len(figures_["load_average"]) == 2 and figures_["busy"] in (True, False)


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
