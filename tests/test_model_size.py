"""The model's memory is estimated before it is built, and a model too large for the device is refused
before any run directory exists (issue #21, item 3)."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest
from typer.testing import CliRunner

import engine.run.parts as parts
from engine.config import load_preset
from engine.errors import PresetError
from engine.models import build_model
from engine.models.size import estimate_model_size, optimizer_states
from engine.run import start_run

from runtools import tiny_preset

SHAPES = {"a": (6,), "b": (4,)}


def preset(tmp_path: Path, **options) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(tiny_preset(epochs=1, monitor={"enabled": False}, **options))
    return path


def spec(tmp_path: Path, **options):
    cfg, _ = load_preset(preset(tmp_path, **options))
    return cfg


def test_the_estimate_counts_the_parameters_the_model_will_have(tmp_path):
    cfg = spec(tmp_path)
    built = build_model(cfg.model, SHAPES, 3)
    size = estimate_model_size(cfg.model, SHAPES, 3, 32, "adam")
    params = sum(p.numel() for p in built.parameters())
    buffers = sum(b.numel() * b.element_size() for b in built.buffers())
    assert size.parameters == params
    assert size.parameter_bytes == 4 * params + buffers
    assert size.gradient_bytes == 4 * params
    assert size.optimizer_bytes == 2 * 4 * params
    assert estimate_model_size(cfg.model, SHAPES, 3, 32, "sgd", 0.9).optimizer_bytes == 4 * params
    assert estimate_model_size(cfg.model, SHAPES, 3, 32, "sgd", 0.0).optimizer_bytes == 0
    assert [optimizer_states(o, 0.9) for o in ("adam", "adamw", "sgd")] == [2, 2, 1]
    double = estimate_model_size(cfg.model, SHAPES, 3, 64, "adam").activation_bytes
    assert size.activation_bytes > 0 and double == 2 * size.activation_bytes   # per sample of the batch
    assert size.total_bytes == (size.parameter_bytes + size.gradient_bytes + size.optimizer_bytes
                                + size.activation_bytes)


def test_a_huge_model_is_estimated_without_allocating_it(tmp_path):
    cfg = spec(tmp_path, modalities={"a": {"hidden": [100_000_000]}})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    size = estimate_model_size(cfg.model, SHAPES, 3, 32, "adam")
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    assert size.parameters > 100_000_000 * 8 and size.parameter_bytes > 3 * 2 ** 30
    assert grew < 200 * 2 ** 20


def test_a_model_too_large_for_the_device_is_refused_before_the_run_directory(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(PresetError) as info:
        start_run(preset(tmp_path, modalities={"a": {"hidden": [1_000_000_000]}}), runs_dir=runs)
    text = str(info.value)
    assert info.value.exit_code == 2 and str(tmp_path / "p.toml") in text
    assert "model: training it needs about 786 GiB = parameters 63.3 GiB (17,000,000,307 values)" in text
    assert "+ gradients 63.3 GiB + sgd state 63.3 GiB + activations of a batch of 32 596 GiB, more than" in text
    assert "lower train.batch_size" in text
    assert not runs.exists() or not any(runs.iterdir())


def test_the_limit_is_the_memory_available_and_the_estimate_is_in_run_json(tmp_path, monkeypatch):
    path = preset(tmp_path)
    cfg, _ = load_preset(path)
    size = estimate_model_size(cfg.model, {"a": (8,), "b": (6,)}, 3, 32, "sgd", cfg.train.momentum)
    monkeypatch.setattr(parts, "device_available_bytes", lambda device: size.total_bytes - 1)
    with pytest.raises(PresetError, match="more than the"):
        start_run(path, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    monkeypatch.setattr(parts, "device_available_bytes", lambda device: size.total_bytes)
    run = start_run(path, runs_dir=tmp_path / "runs")
    info = json.loads((run.run_dir / "run.json").read_text())
    assert info["model_memory"] == size.to_dict()
    assert info["model_memory"]["total_bytes"] == size.total_bytes and size.optimizer == "sgd"


def test_bench_reports_the_estimate(tmp_path):
    from mmbal_cli.app import app
    path = preset(tmp_path)
    args = ["bench", str(path), "--methods", "", "--repeats", "1", "--no-reference"]
    res = CliRunner().invoke(app, args + ["--json"])
    assert res.exit_code == 0, res.output
    figures = json.loads(res.stdout)
    cfg, _ = load_preset(path)
    assert figures["model_memory"] == estimate_model_size(cfg.model, {"a": (8,), "b": (6,)}, 3, 32, "sgd",
                                                          cfg.train.momentum).to_dict()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "model memory (estimated): " in res.stdout and "+ sgd state" in res.stdout
    huge = CliRunner().invoke(app, args + ["--set", "modalities.a.hidden=[100000000]"])
    assert huge.exit_code == 2 and "model: training it needs about" in huge.output
