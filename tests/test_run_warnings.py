"""Warnings a run gives when it starts: a class that some split has no row of."""

from __future__ import annotations

import numpy as np
import torch
from typer.testing import CliRunner

from engine.data.writer import write_dataset
from engine.run.lifecycle import empty_classes
from mmbal_cli.app import app
from runtools import tiny_preset


class Counts:
    classes = ["cat", "dog", "eel"]

    def class_counts(self, split):
        return torch.tensor({"train": [5, 4, 0], "val": [2, 1, 1], "test": [2, 0, 1]}[split])


def test_empty_classes_names_each_class_and_the_splits_it_has_no_rows_in():
    assert empty_classes(Counts()) == ["'dog' (5 rows): none in test", "'eel' (2 rows): none in train"]


def test_a_run_warns_when_the_stratified_split_leaves_a_rare_class_out_of_val_and_test(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([0] * 40 + [1] * 40 + [2] * 2)
    data = tmp_path / "rare.parquet"
    write_dataset(data, {"a": rng.normal(size=(82, 4)).astype(np.float32),
                         "b": rng.normal(size=(82, 3)).astype(np.float32)}, labels, None, ["x", "y", "z"], "rare")
    preset = tmp_path / "rare.toml"
    preset.write_text(tiny_preset(epochs=1, data={"source": "parquet", "path": str(data), "synthetic": None}))
    result = CliRunner().invoke(app, ["run", str(preset)], env={"MMBAL_RUNS_DIR": str(tmp_path / "runs")})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning: 1 class of 3 has no rows in a split: 'z' (2 rows): none in val, test." in text
