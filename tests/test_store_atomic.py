"""Atomic replacement and strict JSON of engine.store.atomic."""

import json
import os

import numpy as np
import pytest
import torch

from engine.store.atomic import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_with,
    read_json,
    temp_path_for,
    to_jsonable,
)


def test_atomic_write_bytes_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "status.json"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


def test_temp_name_is_hidden_sibling_with_pid(tmp_path):
    assert temp_path_for(tmp_path / "a.pt") == tmp_path / f".a.pt.tmp-{os.getpid()}"


def test_failed_writer_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"previous")

    def writer(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_with(target, writer)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_atomic_write_with_torch_save_round_trips(tmp_path):
    target = tmp_path / "last.pt"
    atomic_write_with(target, lambda f: torch.save({"w": torch.arange(3)}, f))
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(3))


def test_json_is_indented_ordered_strict_with_newline(tmp_path):
    target = tmp_path / "s.json"
    atomic_write_json(target, {"z": 1, "a": float("nan"), "b": [float("inf"), 2.5]})
    text = target.read_text()
    assert text.endswith("}\n")
    assert text.startswith('{\n  "z": 1,\n  "a": null,')
    assert json.loads(text) == {"z": 1, "a": None, "b": [None, 2.5]}


def test_to_jsonable_converts_numpy_and_tensors_and_reports_nonfinite():
    found = []
    out = to_jsonable({"a": np.float32(0.5), "b": np.int64(3), "c": torch.tensor(float("nan")),
                       "d": {"e": [1.0, float("-inf")]}}, found)
    assert out == {"a": 0.5, "b": 3, "c": None, "d": {"e": [1.0, None]}}
    assert type(out["b"]) is int
    assert found == ["c", "d.e[1]"]


def test_to_jsonable_rejects_unknown_types_naming_the_path():
    with pytest.raises(TypeError, match="x.y: object"):
        to_jsonable({"x": {"y": object()}})


def test_read_json_errors_name_the_path(tmp_path):
    bad = tmp_path / "run.json"
    bad.write_text('{"a": 1,')
    with pytest.raises(ValueError, match=r"run\.json: not valid JSON"):
        read_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object, found list"):
        read_json(bad)
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")
