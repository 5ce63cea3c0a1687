"""Every per-method preset trains with the optimiser its method's paper used (the registration's
``info.optimizer``), so a preset reproduces the paper's setting rather than ours."""

import tomllib
from pathlib import Path

import pytest

from engine.methods import METHODS
from engine.train.config import TrainConfig

PRESETS = sorted((Path(__file__).resolve().parents[1] / "presets").glob("*.toml"))


def method_presets():
    for path in PRESETS:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        name = raw.get("method", {}).get("name", "joint")
        if METHODS.entry(name).info.paper:   # mmbal's own baselines (joint, unimodal) cite no paper
            yield pytest.param(path, name, raw, id=path.stem)


@pytest.mark.parametrize("path,name,raw", list(method_presets()))
def test_a_method_preset_uses_its_papers_optimizer(path, name, raw):
    optimizer = raw.get("train", {}).get("optimizer", TrainConfig().optimizer)
    assert optimizer == METHODS.entry(name).info.optimizer, (
        f"{path.name}: method '{name}' was published with {METHODS.entry(name).info.optimizer}, "
        f"the preset trains with {optimizer}")


def test_there_are_method_presets():
    assert len(list(method_presets())) >= 5
