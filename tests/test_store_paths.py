"""The run directory's layout (``RunPaths``) and checkpoint files (``engine.store.checkpoints``).

The names are the format earlier versions wrote, so they are spelled out here: a rename would make
old runs unreadable and must fail this test.
"""

import os

import pytest
import torch

from engine.errors import ResumeRefused
from engine.store import RunPaths, load_checkpoint, newest_good_checkpoint, save_run_checkpoint
from engine.store.checkpoints import CheckpointDamaged
from engine.store.paths import damaged_path, temp_path_for, temp_writer_pid


def test_every_run_file_keeps_the_name_earlier_versions_wrote(tmp_path):
    paths = RunPaths(str(tmp_path))
    named = {"run_json": "run.json", "preset_toml": "preset.toml", "config_json": "config.json",
             "metrics": "metrics.jsonl", "status": "status.json", "summary": "summary.json", "lock": ".lock",
             "checkpoints": "checkpoints", "last": "checkpoints/last.pt", "previous": "checkpoints/previous.pt",
             "best": "checkpoints/best.pt", "kept_dir": "checkpoints/kept"}
    assert {k: paths.relative(getattr(paths, k)) for k in named} == named
    assert paths.relative(paths.kept("teacher")) == "checkpoints/kept/teacher.pt"
    assert paths.resume_candidates == (tmp_path / "checkpoints" / "last.pt", tmp_path / "checkpoints" / "previous.pt")
    assert damaged_path(paths.last) == tmp_path / "checkpoints" / "last.pt.damaged"


def test_temporary_files_are_found_with_their_writers_pid(tmp_path):
    paths = RunPaths(tmp_path)
    paths.checkpoints.mkdir()
    mine = temp_path_for(paths.last)
    mine.write_bytes(b"x")
    (tmp_path / ".summary.json.tmp-42").write_text("{")
    (tmp_path / "summary.json.tmp-43").write_text("{")  # not hidden: not a temporary name
    assert temp_writer_pid(mine.name) == os.getpid()
    assert sorted(paths.temporary_files()) == sorted([(mine, os.getpid()), (tmp_path / ".summary.json.tmp-42", 42)])


def _state(step: int) -> dict:
    return {"position": {"step": step}, "model": {"w": torch.full((3,), float(step))}}


def test_a_new_last_checkpoint_keeps_the_old_one_as_previous_and_best_is_not_rotated(tmp_path):
    paths = RunPaths(tmp_path)
    paths.checkpoints.mkdir()
    assert save_run_checkpoint(paths, _state(1), "last") == paths.last
    save_run_checkpoint(paths, _state(2), "last")
    save_run_checkpoint(paths, _state(2), "best")
    save_run_checkpoint(paths, _state(3), "best")
    assert load_checkpoint(paths.last)["position"]["step"] == 2
    assert load_checkpoint(paths.previous)["position"]["step"] == 1
    assert load_checkpoint(paths.best)["position"]["step"] == 3
    assert sorted(p.name for p in paths.checkpoints.iterdir()) == ["best.pt", "last.pt", "previous.pt"]


def test_resume_takes_previous_when_last_is_damaged_and_refuses_when_both_are(tmp_path):
    paths = RunPaths(tmp_path)
    paths.checkpoints.mkdir()
    assert newest_good_checkpoint(paths) == (None, [], [])
    save_run_checkpoint(paths, _state(1), "last")
    save_run_checkpoint(paths, _state(2), "last")
    state, warnings, damaged = newest_good_checkpoint(paths)
    assert (state["position"]["step"], state["loaded_from"], warnings, damaged) == (2, "last.pt", [], [])
    paths.last.write_bytes(paths.last.read_bytes()[:200])  # cut off
    with pytest.raises(CheckpointDamaged):
        load_checkpoint(paths.last)
    state, warnings, damaged = newest_good_checkpoint(paths)
    assert (state["position"]["step"], state["loaded_from"], damaged) == (1, "previous.pt", [paths.last])
    assert len(warnings) == 1 and "checkpoints/last.pt.damaged" in warnings[0]
    paths.previous.write_bytes(b"not a checkpoint")
    with pytest.raises(ResumeRefused, match="every checkpoint is damaged"):
        newest_good_checkpoint(paths)
