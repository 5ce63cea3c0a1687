"""``train.compile = "step"``: the step's forward, loss and backward as one compiled graph.

A captured method trains as eagerly (weights and metrics within float tolerance), resumes exactly,
also across a switch of ``train.compile``; a method that cannot be captured trains as eagerly after
exactly one warning naming it; a compile failure falls back with one warning; the step makes no host
transfer; a bad value is a preset error naming the key. As in ``test_compile.py``, the graphs are
compiled with the ``aot_eager`` backend (the same Dynamo capture and AOT forward/backward graphs,
without C++ code generation); ``MMBAL_TEST_COMPILE_INDUCTOR=1`` uses Inductor.
"""


import pytest
import torch
import torch._dynamo
from typer.testing import CliRunner

import engine.train.compile as compile_mod
from engine.errors import PresetError
from engine.run import NullReporter, resume_run, start_run
from engine.store import read_metrics
from mmbal_cli.app import app
from runtools import InterruptAt, last_checkpoint, metric_rows, tiny_preset
import test_host_sync as host_sync
from test_host_sync import transfers  # noqa: F401 - the fixture

METHODS = {"joint": 'name = "joint"',
           "multiloss": 'name = "multiloss"\nweights = [0.5, 1.0]',
           "unimodal": 'name = "unimodal"\nmodality = "b"',
           "ogm_ge": 'name = "ogm_ge"'}


@pytest.fixture(autouse=True)
def backend(compile_backend):
    """Every test here with the test backend and a clean Dynamo cache (conftest's ``compile_backend``)."""


class Warnings(NullReporter):
    def __init__(self):
        self.messages = []

    def warn(self, message):
        self.messages.append(message)


def preset(tmp_path, method: str, epochs: int) -> str:
    path = tmp_path / f"{method}-{epochs}.toml"
    path.write_text(tiny_preset(METHODS[method], name=method, epochs=epochs, monitor={"enabled": False}))
    return path


def run(tmp_path, method, mode, epochs=2, reporter=None):
    value = {False: "false", True: "true", "step": '"step"'}[mode]
    return start_run(preset(tmp_path, method, epochs), [f"train.compile={value}"], runs_dir=tmp_path / "runs",
                     reporter=reporter)


def assert_close_weights(a: dict, b: dict, tol: float = 1e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=tol, rtol=tol), k


def assert_close_rows(a, b, tol: float = 1e-4):
    """The same (step, split) records with the same keys and values within ``tol``."""
    assert [(s, sp, sorted(m)) for s, sp, m in a] == [(s, sp, sorted(m)) for s, sp, m in b]
    for (_, _, x), (_, _, y) in zip(a, b):
        for k in x:
            assert y[k] == pytest.approx(x[k], abs=tol), k


@pytest.mark.parametrize("method", ["joint", "multiloss", "unimodal"])
def test_a_captured_step_trains_as_eagerly(method, tmp_path):
    """Weights after 14 steps and every train/val/test record equal eager ones within float tolerance; one
    graph for the step (the last short batch of 18 rows reuses it: the batch dimension is dynamic)."""
    eager = run(tmp_path, method, False)
    before = compile_mod.graph_count()
    reporter = Warnings()
    compiled = run(tmp_path, method, "step", reporter=reporter)
    assert compile_mod.graph_count() - before == 1
    assert [m for m in reporter.messages if "also named" not in m] == []
    assert_close_weights(last_checkpoint(compiled.run_dir)["model"], last_checkpoint(eager.run_dir)["model"])
    assert_close_rows(metric_rows(eager.run_dir), metric_rows(compiled.run_dir))


def test_a_method_that_cannot_be_captured_warns_once_and_trains_as_eagerly(tmp_path):
    """ogm_ge changes gradients between backward and step: "step" compiles its modules instead, says so
    once (the recorder's warning and one ``warning`` event), and trains as eagerly."""
    eager = run(tmp_path, "ogm_ge", False)
    reporter = Warnings()
    compiled = run(tmp_path, "ogm_ge", "step", reporter=reporter)
    assert compiled.state == "finished"
    messages = [m for m in reporter.messages if "also named" not in m]   # both runs share a name
    assert len(messages) == 1
    assert "train.compile = \"step\"" in messages[0] and "'ogm_ge'" in messages[0] and "compiled instead" in messages[0]
    events = [e["message"] for e in read_metrics(compiled.run_dir / "metrics.jsonl").events() if e["name"] == "warning"
              and "also named" not in e["message"]]
    assert events == messages
    assert_close_weights(last_checkpoint(compiled.run_dir)["model"], last_checkpoint(eager.run_dir)["model"])


def test_a_method_refusing_module_compilation_falls_back_to_eager(tmp_path):
    """mmpareto refuses train.compile = true; with "step" it trains eagerly after one warning, no error."""
    reporter = Warnings()
    path = tmp_path / "mmpareto.toml"
    path.write_text(tiny_preset('name = "mmpareto"', name="mmpareto", epochs=1, monitor={"enabled": False}))
    before = compile_mod.graph_count()
    result = start_run(path, ['train.compile="step"'], runs_dir=tmp_path / "runs", reporter=reporter)
    assert result.state == "finished" and compile_mod.graph_count() == before
    assert len(reporter.messages) == 1 and "'mmpareto'" in reporter.messages[0] and "eager" in reporter.messages[0]


@pytest.mark.parametrize("first, second", [("step", "step"), ("step", False), (False, "step")])
def test_interrupt_and_resume_equal_an_uninterrupted_run(first, second, tmp_path):
    """Interrupted after step 10 (mid-epoch) with ``first``, resumed with ``second``: the weights of the
    uninterrupted run (with ``first``) and its metric records, each step once."""
    value = {False: "false", "step": '"step"'}
    path = preset(tmp_path, "joint", 3)
    straight = start_run(path, [f"train.compile={value[first]}"], runs_dir=tmp_path / "runs")
    cut = start_run(path, [f"train.compile={value[first]}"], runs_dir=tmp_path / "runs", reporter=InterruptAt(10))
    assert cut.state == "interrupted"
    resumed = resume_run(cut.run_id, [f"train.compile={value[second]}"], runs_dir=tmp_path / "runs")
    assert resumed.state == "finished"
    tol = 0.0 if first == second else 1e-5
    assert_close_weights(last_checkpoint(resumed.run_dir)["model"], last_checkpoint(straight.run_dir)["model"], tol)
    assert_close_rows(metric_rows(straight.run_dir), metric_rows(resumed.run_dir), 1e-4 if tol else 0.0)


def failing_backend(gm, example_inputs):
    raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found in torch._inductor.config.cpp.cxx")


def test_a_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(compile_mod, "BACKEND", failing_backend)
    eager = run(tmp_path, "joint", False)
    reporter = Warnings()
    fell_back = run(tmp_path, "joint", "step", reporter=reporter)
    assert fell_back.state == "finished"
    messages = [m for m in reporter.messages if "also named" not in m]
    assert len(messages) == 1
    assert "train.compile = \"step\"" in messages[0] and "eager" in messages[0] and "C++ compiler" in messages[0]
    assert "Traceback" not in messages[0] and len(messages[0]) < 600
    assert_close_weights(last_checkpoint(fell_back.run_dir)["model"], last_checkpoint(eager.run_dir)["model"], tol=0)


@pytest.mark.parametrize("value", ['"steps"', '"true"', "1"])
def test_a_bad_value_is_a_preset_error_naming_the_key(value, tmp_path):
    with pytest.raises(PresetError) as err:
        start_run(preset(tmp_path, "joint", 1), [f"train.compile={value}"], runs_dir=tmp_path / "runs")
    assert err.value.exit_code == 2 and "train.compile" in str(err.value)
    result = CliRunner().invoke(app, ["run", str(preset(tmp_path, "joint", 1)), "--set", f"train.compile={value}"],
                                env={"MMBAL_RUNS_DIR": str(tmp_path / "runs")})
    assert result.exit_code == 2 and "train.compile" in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("method", ["joint", "multiloss"])
def test_no_host_transfer_per_step(method, transfers, tmp_path):
    """The mechanism of ``test_host_sync``: the second epoch's transfers do not grow with its steps."""
    counts = []
    for n in (115, 460):  # 70% train -> 5 and 21 steps of 16
        p = tmp_path / f"p{n}.toml"
        p.write_text(host_sync.preset(n, method))
        transfers.count = 0
        start_run(p, ['train.compile="step"'], runs_dir=tmp_path / "runs",
                  reporter=host_sync.CountSecondEpoch(transfers))
        counts.append(transfers.count)
    assert counts[0] == counts[1], counts


def test_clipping_grad_norms_and_the_skip_guard_act_as_eagerly(tmp_path):
    """The eager parts between the compiled ones: grad clipping, the logged ``grad/<m>`` norms (monitors on),
    the non-finite guard in "skip" mode; records and weights as eager within float tolerance."""
    runs = []
    for mode in ("false", '"step"'):
        path = tmp_path / f"clip-{len(runs)}.toml"
        path.write_text(tiny_preset('name = "joint"', name="clip", epochs=2, optimizer="adam", lr=0.01,
                                    train={"grad_clip": 0.05, "on_nonfinite": "skip"}))
        runs.append(start_run(path, [f"train.compile={mode}"], runs_dir=tmp_path / "runs"))
    eager, compiled = (metric_rows(r.run_dir) for r in runs)
    assert any(k.startswith("grad/") for _, split, m in eager if split == "train" for k in m)
    assert_close_rows(eager, compiled)
    assert_close_weights(last_checkpoint(runs[1].run_dir)["model"], last_checkpoint(runs[0].run_dir)["model"])
