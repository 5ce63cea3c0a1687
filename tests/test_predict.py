"""``mmbal predict`` and ``mmbal eval`` on a finished run: the run's own test split reproduces its test
metrics exactly (weights and method state of the selected checkpoint, the run's train statistics), and
bad input is refused with the file and column named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from engine.data.synthetic import generate
from engine.data.config import SynthConfig
from engine.data.writer import write_dataset
from engine.run import NullReporter, start_run
from mmbal_cli.app import app

from methodkit import to_toml
from runtools import tiny_doc

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def synthetic_parquet(path: Path) -> Path:
    """The tiny preset's synthetic data written as Parquet with its split (shifted and scaled, so that
    standardising with the wrong statistics would show)."""
    raw = generate(SynthConfig(n_samples=300, n_classes=3, modalities=["a", "b"], dims=[8, 6], unique=[1.0, 0.4],
                               noise=[0.5, 0.8]))
    codes = np.asarray(raw.split) if raw.split is not None else None
    features = {"a": raw.features["a"] * 3 + 5, "b": raw.features["b"] - 2}
    write_dataset(path, features, raw.labels, codes, raw.classes, "toy")
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An AUG run (its heads are method state: the prediction needs the selected epoch's) on a Parquet file."""
    folder = tmp_path_factory.mktemp("predict")
    data = synthetic_parquet(folder / "toy.parquet")
    doc = tiny_doc('name = "aug"\nhidden = 8', epochs=3, optimizer="sgd",
                   data={"source": "parquet", "path": str(data), "synthetic": None},
                   train={"eval_batch_size": 7})
    preset = folder / "aug.toml"
    preset.write_text(to_toml(doc))
    result = start_run(preset, runs_dir=folder / "runs", reporter=NullReporter())
    assert result.state == "finished"
    return folder, data, Path(result.run_dir), result.summary


def test_predict_on_the_test_split_reproduces_the_runs_test_accuracy(finished):
    folder, data, run_dir, summary = finished
    out = folder / "preds.parquet"
    res = invoke("predict", run_dir, data, "--split", "test", "--out", out)
    assert res.exit_code == 0, res.output
    table = pq.read_table(out)
    assert table.column_names == ["row", "split", "label", "pred", "predicted_class", "prob", "pred_a", "prob_a",
                                  "pred_b", "prob_b"]
    assert set(table.column("split").to_pylist()) == {"test"}
    label = table.column("label").to_numpy()
    test = summary["test"]
    for suffix, target in (("", "fused"), ("_a", "a"), ("_b", "b")):
        pred = table.column(f"pred{suffix}").to_numpy()
        assert (pred == label).sum() / len(label) == test[f"test/acc/{target}"]
        probs = np.stack(table.column(f"prob{suffix}").to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        assert (probs.argmax(axis=1) == pred).all()
    meta = json.loads(table.schema.metadata[b"mmbal.predictions"])
    assert meta["checkpoint"] == "best.pt" and meta["classes"] == ["0", "1", "2"]
    names = table.column("predicted_class").to_pylist()
    assert names == [meta["classes"][i] for i in table.column("pred").to_pylist()] and len(set(names)) > 1


def test_predict_to_csv_has_a_probability_column_per_class(finished):
    folder, data, run_dir, summary = finished
    parquet, csv = folder / "same.parquet", folder / "preds.csv"
    assert invoke("predict", run_dir, data, "--split", "test", "--out", parquet).exit_code == 0
    res = invoke("predict", run_dir, data, "--split", "test", "--out", csv)
    assert res.exit_code == 0, res.output
    assert csv.read_bytes()[:4] != b"PAR1"
    import pyarrow.csv as pacsv
    table, reference = pacsv.read_csv(csv), pq.read_table(parquet)
    probs = [f"prob[{c}]" for c in ("0", "1", "2")]
    assert table.column_names == ["row", "split", "label", "pred", "predicted_class", *probs, "pred_a",
                                  *[f"prob_a[{c}]" for c in "012"],
                                  "pred_b", *[f"prob_b[{c}]" for c in "012"]]
    for name in ("row", "label", "pred", "pred_a", "pred_b"):
        assert table.column(name).to_pylist() == reference.column(name).to_pylist(), name
    fused = np.stack(reference.column("prob").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(np.stack([table.column(p).to_numpy() for p in probs], axis=1), fused, rtol=1e-6)


def test_predict_refuses_an_output_suffix_it_does_not_write_before_predicting(finished, tmp_path):
    _, data, run_dir, _ = finished
    res = invoke("predict", run_dir, data, "--out", tmp_path / "preds.json")
    assert res.exit_code == 2 and "'.json' is neither" in res.output
    assert not (tmp_path / "preds.json").exists()
    res = invoke("predict", tmp_path / "not-a-run", data, "--out", tmp_path / "preds.xlsx")
    assert res.exit_code == 2   # the suffix is checked first, before the run is looked up


def test_eval_prints_the_runs_test_metrics_in_its_names(finished):
    _, data, run_dir, summary = finished
    res = invoke("eval", run_dir, data, "--split", "test", "--json")
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output)["metrics"]
    for key in ("test/acc/fused", "test/f1/fused", "test/acc/a", "test/f1/a", "test/acc/b", "test/f1/b"):
        assert metrics[key] == summary["test"][key], key
    for key in ("test/loss/fused", "test/loss/a"):
        assert metrics[key] == pytest.approx(summary["test"][key], rel=1e-6)
    text = invoke("eval", run_dir, data, "--split", "test")
    assert text.exit_code == 0
    assert f"fused  acc {summary['test']['test/acc/fused']:.4f}" in text.output
    whole = json.loads(invoke("eval", run_dir, data, "--json").output)
    assert whole["rows"] == 300 and "all/acc/fused" in whole["metrics"]


def test_predict_without_labels_and_refusals(finished, tmp_path):
    _, data, run_dir, _ = finished
    table = pq.read_table(data)
    unlabelled = tmp_path / "unlabelled.parquet"
    pq.write_table(table.drop_columns(["label", "split"]), unlabelled)
    out = tmp_path / "p.parquet"
    res = invoke("predict", run_dir, unlabelled, "--out", out)
    assert res.exit_code == 0, res.output
    assert pq.read_table(out).column_names[:4] == ["row", "pred", "predicted_class", "prob"]
    assert pq.read_table(out).column("row").to_pylist() == list(range(300))

    res = invoke("eval", run_dir, unlabelled)
    assert res.exit_code == 2 and "column 'label' (the label) is missing" in res.output

    no_b = tmp_path / "no_b.parquet"
    pq.write_table(table.drop_columns(["b"]), no_b)
    res = invoke("predict", run_dir, no_b, "--out", tmp_path / "x.parquet")
    assert res.exit_code == 2 and "has no column 'b' (asked for modality 'b')" in res.output

    narrow = tmp_path / "narrow.parquet"
    a = np.stack(table.column("a").to_numpy(zero_copy_only=False))[:, :4].astype(np.float32)
    pq.write_table(table.set_column(table.column_names.index("a"), "a",
                                    pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), 4))
                   .replace_schema_metadata(None), narrow)
    res = invoke("predict", run_dir, narrow, "--out", tmp_path / "x.parquet")
    assert res.exit_code == 2
    assert "column 'a' (modality 'a') has samples of shape [4], but the run trained on shape [8]" in res.output
    assert not (tmp_path / "x.parquet").exists()

    res = invoke("predict", run_dir, data, "--out", tmp_path / "no" / "such" / "dir" / "p.parquet")
    assert res.exit_code == 1 and "cannot write the predictions to" in res.output
    res = invoke("predict", tmp_path / "not-a-run", data, "--out", out)
    assert res.exit_code == 3


def test_predict_does_not_read_the_init_file_again(finished, tmp_path):
    """The checkpoint gives every weight: an ``init`` file removed after training does not stop a prediction."""
    folder, data, first_run, _ = finished
    init = tmp_path / "encoder_a.pt"
    init.write_bytes((first_run / "checkpoints" / "best.pt").read_bytes())   # another run's checkpoint as init
    doc = tiny_doc(epochs=1, name="warm", data={"source": "parquet", "path": str(data), "synthetic": None},
                   modalities={"a": {"init": str(init), "freeze": True}})
    preset = tmp_path / "warm.toml"
    preset.write_text(to_toml(doc))
    result = start_run(preset, runs_dir=tmp_path / "runs", reporter=NullReporter())
    assert result.state == "finished"
    init.unlink()
    res = invoke("eval", result.run_dir, data, "--split", "test", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["metrics"]["test/acc/fused"] == result.summary["test"]["test/acc/fused"]


@pytest.fixture(scope="module")
def split_by_preset(tmp_path_factory):
    """A joint run on Parquet data without a split column: the preset's fractions split it, seeded."""
    folder = tmp_path_factory.mktemp("unsplit")
    raw = generate(SynthConfig(n_samples=300, n_classes=3, modalities=["a", "b"], dims=[8, 6], unique=[1.0, 0.4],
                               noise=[0.5, 0.8]))
    data = folder / "unsplit.parquet"
    write_dataset(data, {"a": raw.features["a"] * 3 + 5, "b": raw.features["b"] - 2}, raw.labels, None,
                  raw.classes, "toy")
    doc = tiny_doc(epochs=2, data={"source": "parquet", "path": str(data), "synthetic": None,
                                   "val_fraction": 0.2, "test_fraction": 0.25})
    preset = folder / "joint.toml"
    preset.write_text(to_toml(doc))
    result = start_run(preset, runs_dir=folder / "runs", reporter=NullReporter())
    assert result.state == "finished"
    return folder, data, Path(result.run_dir), result.summary


def test_split_on_the_runs_own_unsplit_data_is_the_runs_split(split_by_preset, tmp_path):
    """--split test on the run's data without a split column draws the run's split again (also from a copy
    of the file elsewhere) and reproduces the run's test metrics; on other data it is refused."""
    folder, data, run_dir, summary = split_by_preset
    copy = tmp_path / "moved.parquet"
    copy.write_bytes(data.read_bytes())
    for source in (data, copy):
        res = invoke("eval", run_dir, source, "--split", "test", "--json")
        assert res.exit_code == 0, res.output
        report = json.loads(res.output)
        assert report["rows"] == 75  # 25% of 300, stratified
        for key in ("test/acc/fused", "test/acc/a", "test/acc/b"):
            assert report["metrics"][key] == pytest.approx(summary["test"][key], abs=1e-9)
    other = tmp_path / "other.parquet"
    pq.write_table(pq.read_table(data).slice(0, 200), other)
    res = invoke("eval", run_dir, other, "--split", "test")
    assert res.exit_code == 2
    assert "has no 'split' column, and it is not the data the run trained on (the run read" in res.output


def test_predict_refuses_a_run_whose_data_changed_since_training(split_by_preset, tmp_path):
    """The train statistics are recomputed from the run's data: changed data would standardise otherwise."""
    folder, data, run_dir, _ = split_by_preset
    original = data.read_bytes()
    try:
        pq.write_table(pq.read_table(data).slice(0, 250), data)
        res = invoke("predict", run_dir, data, "--out", tmp_path / "p.parquet")
        assert res.exit_code == 2
        assert "which changed since the run trained on it (rows 300 -> 250" in " ".join(res.output.split())
        assert not (tmp_path / "p.parquet").exists()
    finally:
        data.write_bytes(original)
    res = invoke("predict", run_dir, data, "--out", tmp_path / "p.parquet")
    assert res.exit_code == 0, res.output


def test_a_copy_of_the_runs_moved_data_stands_in_for_them(split_by_preset, tmp_path):
    """The run's data moved away: passed as DATA, recognised by content, they give the statistics (and the
    split); other data then get the reason."""
    folder, data, run_dir, summary = split_by_preset
    moved = tmp_path / "moved.parquet"
    data.rename(moved)
    try:
        res = invoke("eval", run_dir, moved, "--split", "test", "--json")
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["metrics"]["test/acc/fused"] == pytest.approx(summary["test"]["test/acc/fused"])
        other = tmp_path / "other.parquet"
        pq.write_table(pq.read_table(moved).slice(0, 100), other)
        res = invoke("predict", run_dir, other, "--out", tmp_path / "p.parquet")
        assert res.exit_code == 2
        assert "which is gone; put it back there, or pass a copy of it as the data" in " ".join(res.output.split())
    finally:
        moved.rename(data)
