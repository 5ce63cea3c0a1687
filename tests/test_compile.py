"""``train.compile``: compiled runs match eager ones, checkpoints cross the switch, no recompilation
storms, a compile failure falls back to eager with one warning, unsuitable methods are refused.

Compiling with Inductor costs several seconds per graph on a small CPU, so these tests compile with
the ``aot_eager`` backend (the same Dynamo capture, guards, dynamic batch dimension and AOT
autograd graphs, without C++ code generation). ``MMBAL_TEST_COMPILE_INDUCTOR=1`` runs them with
Inductor, the backend ``train.compile`` uses.
"""


import pytest
import torch
import torch._dynamo

import engine.train.compile as compile_mod
from engine.errors import PresetError
from engine.methods.joint import Joint
from engine.run import NullReporter, resume_run, start_run
from engine.store import read_metrics
from runtools import last_checkpoint, tiny_preset

METHODS = {"joint": 'name = "joint"',
           "mcr": 'name = "mcr"\nn_permutations = 2\npretrain_epochs = 1'}


@pytest.fixture(autouse=True)
def backend(compile_backend):
    """Every test here with the test backend and a clean Dynamo cache (conftest's ``compile_backend``)."""


def preset(tmp_path, method: str, epochs: int = 2, name: str = "p"):
    path = tmp_path / f"{name}.toml"
    path.write_text(tiny_preset(METHODS[method], epochs=epochs, monitor={"enabled": False}))
    return path


class Warnings(NullReporter):
    def __init__(self):
        self.messages = []

    def warn(self, message):
        self.messages.append(message)


def run(tmp_path, method, compiled, epochs=2, reporter=None, extra=()):
    overrides = [f"train.compile={'true' if compiled else 'false'}", *extra]
    return start_run(preset(tmp_path, method, epochs), overrides, runs_dir=tmp_path / "runs", reporter=reporter)


def assert_same_weights(a: dict, b: dict, tol: float = 1e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=tol, rtol=tol), k


def val_rows(run_dir):
    return [r["m"] for r in read_metrics(run_dir / "metrics.jsonl").metric_rows() if r["split"] == "val"]


@pytest.mark.parametrize("method", ["joint", "mcr"])
def test_compiled_run_matches_eager(method, tmp_path):
    eager = run(tmp_path, method, False)
    before = compile_mod.graph_count()
    compiled = run(tmp_path, method, True)
    assert compile_mod.graph_count() > before  # it did compile
    assert_same_weights(last_checkpoint(compiled.run_dir)["model"], last_checkpoint(eager.run_dir)["model"])
    for e, c in zip(val_rows(eager.run_dir), val_rows(compiled.run_dir), strict=True):
        assert e.keys() == c.keys()
        for k in e:
            assert c[k] == pytest.approx(e[k], abs=1e-4), k
    assert compiled.summary["test"]["test/acc/fused"] == pytest.approx(eager.summary["test"]["test/acc/fused"], abs=1e-6)


def test_short_batches_and_evaluation_reuse_the_graphs(tmp_path):
    """210 training rows in batches of 32 end with a batch of 18; evaluation batches hold 45 rows, the
    monitors' head calls other row counts: still one training and one evaluation graph per module
    (the two encoders take inputs of different widths: one graph each)."""
    p = tmp_path / "m.toml"
    p.write_text(tiny_preset('name = "joint"', epochs=2))  # monitors on: more head calls with other sizes
    before = compile_mod.graph_count()
    start_run(p, ["train.compile=true"], runs_dir=tmp_path / "runs")
    assert compile_mod.graph_count() - before == 6  # (encoder a, encoder b, fusion) x (train, eval)


@pytest.mark.parametrize("first, second", [(True, False), (False, True)])
def test_resume_across_the_switch(first, second, tmp_path):
    """A run checkpointed with one setting resumes with the other: the state-dict keys are the same and
    the result is that of an uninterrupted run."""
    straight = run(tmp_path, "joint", False)
    part = run(tmp_path, "joint", first, epochs=1)
    keys = set(last_checkpoint(part.run_dir)["model"])
    assert keys == set(last_checkpoint(straight.run_dir)["model"]) and not any("_orig_mod" in k for k in keys)
    resumed = resume_run(part.run_id, [f"train.compile={'true' if second else 'false'}", "train.epochs=2"],
                         runs_dir=tmp_path / "runs")
    assert resumed.state == "finished"
    assert_same_weights(last_checkpoint(resumed.run_dir)["model"], last_checkpoint(straight.run_dir)["model"])


def failing_backend(gm, example_inputs):
    raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found in torch._inductor.config.cpp.cxx")


def test_a_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(compile_mod, "BACKEND", failing_backend)
    eager = run(tmp_path, "joint", False)
    reporter = Warnings()
    fell_back = run(tmp_path, "joint", True, reporter=reporter)
    assert fell_back.state == "finished"
    compiled = [m for m in reporter.messages if "also named" not in m]   # both runs share a name
    assert len(compiled) == 1
    message = compiled[0]
    assert "train.compile" in message and "eager" in message and "C++ compiler" in message
    assert "Traceback" not in message and len(message) < 600
    events = [e for e in read_metrics(fell_back.run_dir / "metrics.jsonl").events() if e["name"] == "warning"]
    assert [e["message"] for e in events] == [message]
    assert_same_weights(last_checkpoint(fell_back.run_dir)["model"], last_checkpoint(eager.run_dir)["model"], tol=0)


def test_a_model_error_is_not_taken_for_a_compile_failure(tmp_path):
    """An error the eager call raises too (here a wrong input width) propagates unchanged, no warning."""
    from engine.models.encoders.mlp import MLPConfig, MLPEncoder
    from engine.train.compile import CompiledModules
    encoder = MLPEncoder(MLPConfig(hidden=[4], dim=3), in_features=5)
    told = []
    CompiledModules({"e": encoder}, told.append)
    with pytest.raises(RuntimeError, match="shape|size"):
        encoder(torch.randn(4, 7))
    assert told == [] and encoder._compiled_call_impl is not None
    assert encoder(torch.randn(4, 5)).shape == (4, 3)


def test_a_method_that_cannot_be_compiled_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(Joint, "compile_ok", False)
    with pytest.raises(PresetError) as err:
        run(tmp_path, "joint", True)
    assert err.value.exit_code == 2
    text = str(err.value)
    assert "train.compile" in text and "'joint'" in text
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    run(tmp_path, "joint", False, epochs=1)  # the same method without compile is fine
