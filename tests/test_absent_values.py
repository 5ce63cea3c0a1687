"""Absent values (a null row of a modality, docs/data-format.md): a modality's own scores count only
the rows where its value is present, in the run's evaluation (resident and streamed data alike), in
``mmbal eval``, and its predictions are null there; the fused model is scored on every row."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from engine.data import load_data
from engine.data.config import DataConfig, SynthConfig
from engine.data.synthetic import generate
from engine.data.writer import write_dataset
from engine.run import NullReporter, start_run
from engine.schema import build
from engine.train.metrics import SplitScorer
from mmbal_cli.app import app
from mmbal_cli.output import PlainReporter

from methodkit import to_toml
from runtools import tiny_doc

runner = CliRunner()


def test_a_modalitys_scores_count_only_its_present_rows():
    scorer = SplitScorer(["fused", "a", "b"], 2, torch.device("cpu"))
    y = torch.tensor([0, 1, 1, 0])
    right, wrong = torch.tensor([[3.0, 0.0], [0.0, 3.0], [0.0, 3.0], [3.0, 0.0]]), torch.tensor([[0.0, 3.0]] * 4)
    b = torch.where(torch.tensor([True, False, True, False])[:, None], right, wrong)   # wrong on rows 1 and 3
    keep = torch.tensor([True, False, True, False])                                     # ... where b is absent
    scorer.add({"fused": right[:2], "a": wrong[:2], "b": b[:2]}, y[:2], {"b": keep[:2]})
    scorer.add({"fused": right[2:], "a": wrong[2:], "b": b[2:]}, y[2:], {"b": keep[2:]})
    out = {k: v.item() for k, v in scorer.tensors("val").items()}
    assert out["val/acc/fused"] == 1.0 and out["val/acc/a"] == 0.5     # unmasked: every row
    assert out["val/acc/b"] == 1.0 and out["val/f1/b"] == 1.0           # rows 0 and 2 only
    expected = torch.nn.functional.cross_entropy(b[keep], y[keep]).item()
    assert out["val/loss/b"] == pytest.approx(expected, rel=1e-6)
    assert out["val/loss/b"] < torch.nn.functional.cross_entropy(b, y).item()


def test_a_modality_absent_in_every_row_scores_nan_not_zero():
    scorer = SplitScorer(["fused", "b"], 3, torch.device("cpu"))
    z, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    scorer.add({"fused": z, "b": z}, y, {"b": torch.zeros(5, dtype=torch.bool)})
    out = {k: v.item() for k, v in scorer.tensors("test").items()}
    assert all(math.isnan(out[f"test/{m}/b"]) for m in ("acc", "f1", "loss"))
    assert not math.isnan(out["test/acc/fused"])


def absent_b(n: int) -> np.ndarray:
    return np.arange(n) % 4 == 1           # a quarter of the rows, in every split


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("absent")
    raw = generate(SynthConfig(n_samples=300, n_classes=3, modalities=["a", "b"], dims=[8, 6], unique=[1.0, 0.4],
                               noise=[0.5, 0.8]))
    n = len(raw.labels)
    data = folder / "toy.parquet"
    write_dataset(data, dict(raw.features), raw.labels, np.asarray(raw.split), raw.classes, "toy",
                  present={"a": np.ones(n, bool), "b": ~absent_b(n)}, row_group_rows=64)
    doc = tiny_doc(epochs=2, data={"source": "parquet", "path": str(data), "synthetic": None},
                   train={"eval_batch_size": 7})
    (folder / "joint.toml").write_text(to_toml(doc))
    lines: list[str] = []

    class Said(PlainReporter):
        def say(self, text):
            lines.append(text)
    result = start_run(folder / "joint.toml", runs_dir=folder / "runs", reporter=Said())
    assert result.state == "finished"
    return folder, data, Path(result.run_dir), result.summary, lines, np.asarray(raw.split)


def test_the_run_scores_b_on_its_present_rows_and_says_how_many_are_absent(finished):
    folder, data, run_dir, summary, lines, split = finished
    test_rows = np.flatnonzero(split == 2)   # codes: train 0, val 1, test 2
    absent = int(absent_b(len(split))[test_rows].sum())
    assert absent > 0
    res = runner.invoke(app, ["predict", str(run_dir), str(data), "--split", "test", "--out", str(folder / "p.parquet")])
    assert res.exit_code == 0, res.output
    table = pq.read_table(folder / "p.parquet")
    label = table.column("label").to_numpy()
    pred_b = table.column("pred_b")
    assert pred_b.null_count == absent and table.column("prob_b").null_count == absent
    assert table.column("pred_a").null_count == 0 and table.column("pred").null_count == 0
    present = ~np.asarray(pred_b.is_null())
    np.testing.assert_array_equal(~present, absent_b(len(split))[table.column("row").to_numpy()])
    hits = (pred_b.to_numpy(zero_copy_only=False)[present] == label[present]).sum()
    assert summary["test"]["test/acc/b"] == hits / present.sum()
    fused = (table.column("pred").to_numpy() == label).mean()
    assert summary["test"]["test/acc/fused"] == fused
    assert any(line.startswith("absent values: b in 75 rows") for line in lines), lines


def test_eval_scores_as_the_run_did_and_counts_the_absent_rows(finished):
    folder, data, run_dir, summary, _, _ = finished
    res = runner.invoke(app, ["eval", str(run_dir), str(data), "--split", "test", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["metrics"]["test/acc/b"] == summary["test"]["test/acc/b"]
    assert list(out["absent"]) == ["b"] and 0 < out["absent"]["b"] < out["rows"]
    text = runner.invoke(app, ["eval", str(run_dir), str(data), "--split", "test"]).output
    b_line = next(line for line in text.splitlines() if line.startswith("b "))
    assert b_line.endswith(f"({out['rows'] - out['absent']['b']} rows: absent in {out['absent']['b']})")
    assert "absent" not in next(line for line in text.splitlines() if line.startswith("a "))


def test_predictions_to_csv_leave_the_absent_modalitys_cells_empty(finished):
    folder, data, run_dir, *_ = finished
    res = runner.invoke(app, ["predict", str(run_dir), str(data), "--out", str(folder / "p.csv")])
    assert res.exit_code == 0, res.output
    table = pacsv.read_csv(folder / "p.csv")
    absent = absent_b(table.num_rows)[table.column("row").to_numpy()]
    for name in ("pred_b", "prob_b[0]", "prob_b[2]"):
        np.testing.assert_array_equal(np.asarray(table.column(name).is_null()), absent)
    assert table.column("pred_a").null_count == 0


def test_streamed_evaluation_reports_the_same_absent_rows_as_resident(finished):
    _, data, *_ = finished
    problems: list[str] = []

    def masks(mode: str) -> tuple[np.ndarray, np.ndarray]:
        cfg = build(DataConfig, {"path": str(data), "mode": mode, "prefetch": 1}, "data", problems)
        source = load_data(cfg, None, 3, Path("."), "cpu")
        got = list(source.eval_rows("val", 16))
        b = np.concatenate([p["b"].numpy() if "b" in p else np.ones(len(y), bool) for _, y, p in got])
        return b, np.concatenate([y.numpy() for _, y, _ in got])
    resident, labels = masks("resident")
    streamed, same_labels = masks("stream")
    assert not problems
    np.testing.assert_array_equal(labels, same_labels)
    np.testing.assert_array_equal(resident, streamed)
    assert 0 < (~resident).sum() < len(resident)


def test_the_epoch_line_shows_a_dash_for_a_modality_without_a_present_row():
    from mmbal_cli.output import result_fields
    values = {"val/acc/fused": 0.75, "val/acc/a": 0.5, "val/acc/b": float("nan"), "val/f1/fused": 0.7,
              "val/loss/fused": 0.6}
    assert result_fields(values, "val", ["a", "b"]) == ["fused 0.750", "a 0.500", "b -", "f1 0.700", "loss 0.600"]
