"""Every balancing method declares the one or two options its results are most sensitive to (its
registration's ``tune``, tried by ``mmbal advise`` one option at a time), and every declared value goes
through a preset's ``[method]`` table unchanged: a value the config rejects, or coerces to another type,
fails here."""

import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.config import load_preset
from engine.config_text import toml_value
from engine.methods import METHODS
from engine.methods.info import MethodRegistry, _check_tune

from conftest import needs_shared_data

PRESETS = Path(__file__).resolve().parents[1] / "presets"
QUICKSTART = PRESETS / "quickstart.toml"
# mmbal's own baselines, and multiloss, whose knob is a per-modality list (its length depends on the preset)
DECLARES_NOTHING = ("joint", "unimodal", "multiloss")
BUILT_IN = [n for n in METHODS.names() if METHODS.entry(n).builder.__module__.startswith("engine.methods.")]
TUNED = [n for n in BUILT_IN if n not in DECLARES_NOTHING]


def variants():
    for name in TUNED:
        for variant in METHODS.entry(name).info.variants():
            (option, value), = variant.items()
            yield pytest.param(name, option, value, id=f"{name}-{option}={value}")


def own_presets():
    """(preset, method, option, value) for every preset in presets/ that names a tuned method."""
    for path in sorted(PRESETS.glob("*.toml")):
        name = tomllib.loads(path.read_text(encoding="utf-8")).get("method", {}).get("name", "joint")
        if name in TUNED:
            for variant in METHODS.entry(name).info.variants():
                (option, value), = variant.items()
                yield pytest.param(path, name, option, value, id=f"{path.stem}-{option}={value}")


def load_variant(preset: Path, name: str, option: str, value):
    cfg, _ = load_preset(preset, [f"method.name={toml_value(name)}", f"method.{option}={toml_value(value)}"])
    assert cfg.method_name == name
    return cfg.method


def test_the_tuned_methods_are_the_balancing_methods():
    assert len(TUNED) >= 28
    assert {"ogm", "ogm_ge", "agm", "mcr", "aug", "mmpareto", "valuation"} <= set(TUNED)


@pytest.mark.parametrize("name", TUNED)
def test_a_balancing_method_declares_one_or_two_options_and_at_most_four_variants(name):
    tune = METHODS.entry(name).info.tune
    assert 1 <= len(tune) <= 2, f"{name}: tune declares {sorted(tune)}"
    assert 1 <= len(METHODS.entry(name).info.variants()) <= 4
    for option, values in tune.items():
        assert len(set(values)) == len(values), f"{name}.{option}: a value is listed twice: {values}"


@pytest.mark.parametrize("name", [n for n in DECLARES_NOTHING if n in METHODS])
def test_the_baselines_and_multiloss_declare_nothing(name):
    assert METHODS.entry(name).info.tune == {}
    assert METHODS.entry(name).info.variants() == []


@pytest.mark.parametrize("name,option,value", list(variants()))
def test_every_variant_builds_through_a_presets_method_table_unchanged(name, option, value):
    cfg = load_variant(QUICKSTART, name, option, value)
    got = getattr(cfg, option)
    assert got == value and type(got) is type(value), (
        f"{name}.{option}: declared {value!r} ({type(value).__name__}), the preset built {got!r} "
        f"({type(got).__name__})")
    assert got != getattr(METHODS.entry(name).config(), option)


@needs_shared_data
@pytest.mark.parametrize("preset,name,option,value", list(own_presets()))
def test_every_variant_builds_on_the_methods_own_presets(preset, name, option, value):
    """The method's presets train with its paper's optimiser (check_preset sees the variant under it)."""
    cfg = load_variant(preset, name, option, value)
    assert getattr(cfg, option) == value and type(getattr(cfg, option)) is type(value)


@pytest.mark.parametrize("name", TUNED)
def test_the_modules_docstring_names_the_declared_options(name):
    doc = sys.modules[METHODS.entry(name).builder.__module__].__doc__
    assert "mmbal advise" in doc
    for option in METHODS.entry(name).info.tune:
        assert f"``{option}``" in doc, f"{name}: the module docstring does not name the sensitive option {option}"


@dataclass(frozen=True)
class Toy:
    alpha: float = 0.3
    steps: int = 5
    rule: str = "paper"


def test_check_tune_accepts_one_or_two_options_with_values_besides_the_default():
    _check_tune("toy", Toy, {"alpha": (0.1, 0.8)})
    _check_tune("toy", Toy, {"alpha": (0.1,), "steps": (10,)})


def test_check_tune_refuses_an_unknown_option():
    with pytest.raises(ValueError, match="'beta', which is not an option of Toy"):
        _check_tune("toy", Toy, {"beta": (0.1,)})


def test_check_tune_refuses_the_default_among_the_values():
    with pytest.raises(ValueError, match=r"tune.alpha must list values other than the default \(0.3\)"):
        _check_tune("toy", Toy, {"alpha": (0.1, 0.3)})


def test_check_tune_refuses_an_option_without_values():
    with pytest.raises(ValueError, match="tune.steps must list values"):
        _check_tune("toy", Toy, {"steps": ()})


def test_check_tune_refuses_three_options():
    with pytest.raises(ValueError, match="tune declares 3 options"):
        _check_tune("toy", Toy, {"alpha": (0.1,), "steps": (10,), "rule": ("shifted",)})


def test_a_registration_with_a_bad_tune_is_refused():
    registry = MethodRegistry("method", group=None)
    with pytest.raises(ValueError, match="other than the default"):
        registry.register("toy", config=Toy, optimizer="sgd", cost="1F + 1B", tune={"steps": (5, 10)})
    assert "toy" not in registry
