"""The option-dataclass validator: types, ranges, choices, unknown keys, all problems at once."""

from dataclasses import dataclass
from typing import Literal

from engine.schema import build, describe, opt, to_dict


@dataclass(frozen=True)
class Inner:
    width: int = opt(8, ge=1)


@dataclass(frozen=True)
class Cfg:
    lr: float = opt(0.1, gt=0, help="learning rate")
    steps: int = opt(10, ge=1)
    kind: Literal["a", "b"] = "a"
    hidden: list[int] = opt([4, 4], ge=1)
    maybe: str | None = None
    inner: Inner = opt(default_factory=Inner)


def test_defaults_and_conversion():
    problems = []
    cfg = build(Cfg, {"lr": 1, "hidden": [3], "inner": {"width": 2}}, "x", problems)
    assert problems == []
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.hidden == [3] and cfg.inner.width == 2 and cfg.kind == "a"
    assert to_dict(cfg) == {"lr": 1.0, "steps": 10, "kind": "a", "hidden": [3], "maybe": None, "inner": {"width": 2}}


def test_every_problem_is_reported_with_its_path():
    problems = []
    cfg = build(Cfg, {"lr": -1.0, "stepz": 3, "kind": "c", "hidden": [1, "x"], "maybe": 3,
                      "inner": {"width": 0}}, "train", problems)
    assert cfg is None
    text = "\n".join(problems)
    assert "train.lr: must be > 0, got -1.0" in text
    assert "train.stepz: unknown key (did you mean 'steps'?)" in text
    assert "train.kind: expected one of 'a', 'b', got 'c'" in text
    assert "train.hidden[1]: expected int, got 'x'" in text
    assert "train.maybe: expected str | none, got 3" in text
    assert "train.inner.width: must be >= 1, got 0" in text
    assert len(problems) == 6


def test_bool_is_not_an_int_and_int_list_ranges():
    problems = []
    build(Cfg, {"steps": True, "hidden": [0]}, "", problems)
    assert problems == ["steps: expected int, got True", "hidden[0]: must be >= 1, got 0"]


def test_describe_lists_defaults_and_help():
    rows = {r[0]: r for r in describe(Cfg)}
    assert rows["lr"] == ("lr", "float", 0.1, "learning rate")
    assert rows["hidden"][2] == [4, 4]
