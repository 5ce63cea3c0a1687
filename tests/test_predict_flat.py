"""``mmbal predict``/``eval`` on a flat table (CSV, or Parquet of scalar columns) for a run whose data
``mmbal data import`` made from such a table: the import records each modality's columns and the label
column, and new rows (without labels, or with class names) are read through them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from engine.data.writer import write_dataset
from engine.run import NullReporter, start_run
from mmbal_cli.app import app

from methodkit import to_toml
from runtools import tiny_doc

runner = CliRunner()
CLASSES = ["cat", "dog", "eel"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def flat_table(n: int = 150, seed: int = 0) -> pa.Table:
    """Columns x1..x4 (x1, x2 informative; x3, x4 weakly), a class-name label, a few rows without x3, x4."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    cols = {"id": np.arange(n), "x1": y + rng.normal(0, 0.5, n), "x2": 10 * y + rng.normal(0, 5, n),
            "x3": y + rng.normal(0, 2, n), "x4": rng.normal(0, 1, n)}
    table = {k: pa.array(v) for k, v in cols.items()}
    gone = np.arange(n) % 10 == 3
    for c in ("x3", "x4"):
        table[c] = pa.array(cols[c], mask=gone)
    table["kind"] = pa.array(np.asarray(CLASSES, dtype=object)[y])
    return pa.table(table)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flat")
    pacsv.write_csv(flat_table(), folder / "train.csv")
    res = invoke("data", "import", folder / "train.csv", folder / "data.parquet", "--label", "kind",
                 "-m", "a=x1,x2", "-m", "b=x3,x4")
    assert res.exit_code == 0, res.output
    assert "predicts new rows of this table as they are" in res.output and "mmbal predict RUN NEW.csv" in res.output
    doc = tiny_doc(epochs=2, data={"source": "parquet", "path": str(folder / "data.parquet"), "synthetic": None})
    (folder / "run.toml").write_text(to_toml(doc))
    result = start_run(folder / "run.toml", runs_dir=folder / "runs", reporter=NullReporter())
    assert result.state == "finished"
    return folder, Path(result.run_dir)


def test_the_import_records_each_modalitys_columns_and_the_label_column(trained):
    folder, _ = trained
    meta = json.loads(pq.read_schema(folder / "data.parquet").metadata[b"mmbal"])
    assert meta["modalities"]["a"]["columns"] == ["x1", "x2"]
    assert meta["modalities"]["b"]["columns"] == ["x3", "x4"]
    assert meta["label_column"] == "kind" and meta["classes"] == CLASSES
    shown = invoke("data", "inspect", folder / "data.parquet")
    assert "imported from a table's columns (new rows of it can be predicted as they are): a = x1, x2; " \
           "b = x3, x4; label from column kind" in shown.output.replace("\n", " ")
    info = json.loads(invoke("data", "inspect", folder / "data.parquet", "--json").output)
    assert [m["source_columns"] for m in info["modalities"]] == [["x1", "x2"], ["x3", "x4"]]
    assert info["label_column"] == "kind"


def test_new_rows_of_the_table_are_predicted_as_the_imported_rows_are(trained):
    folder, run_dir = trained
    new = flat_table(40, seed=7)
    pacsv.write_csv(new.drop_columns(["kind"]), folder / "new.csv")
    assert invoke("predict", run_dir, folder / "new.csv", "--out", folder / "from_csv.parquet").exit_code == 0
    # the same rows imported (labels needed there) and predicted from the mmbal-format file
    pacsv.write_csv(new, folder / "new_labelled.csv")
    assert invoke("data", "import", folder / "new_labelled.csv", folder / "new.parquet", "--label", "kind",
                  "-m", "a=x1,x2", "-m", "b=x3,x4").exit_code == 0
    res = invoke("predict", run_dir, folder / "new.parquet", "--out", folder / "from_parquet.parquet")
    assert res.exit_code == 0, res.output
    got, want = pq.read_table(folder / "from_csv.parquet"), pq.read_table(folder / "from_parquet.parquet")
    assert "label" not in got.column_names
    for name in ("pred", "predicted_class", "prob", "pred_a", "pred_b", "prob_b"):
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    assert got.column("pred_b").null_count == 4      # rows 3, 13, 23, 33 have no x3, x4


def test_eval_of_the_labelled_table_scores_as_eval_of_its_import(trained):
    folder, run_dir = trained
    pacsv.write_csv(flat_table(60, seed=3), folder / "scored.csv")
    assert invoke("data", "import", folder / "scored.csv", folder / "scored.parquet", "--label", "kind",
                  "-m", "a=x1,x2", "-m", "b=x3,x4").exit_code == 0
    flat = json.loads(invoke("eval", run_dir, folder / "scored.csv", "--json").output)
    imported = json.loads(invoke("eval", run_dir, folder / "scored.parquet", "--json").output)
    assert flat["metrics"] == imported["metrics"] and flat["absent"] == {"b": 6}
    # and a flat Parquet file (pandas' to_parquet) of the same rows reads as the CSV does
    pq.write_table(flat_table(60, seed=3), folder / "scored_flat.parquet")
    assert json.loads(invoke("eval", run_dir, folder / "scored_flat.parquet", "--json").output)["metrics"] == \
        flat["metrics"]


def test_refusals_name_the_file_column_and_row(trained, tmp_path):
    folder, run_dir = trained
    table = flat_table(20, seed=5)
    kinds = table.column("kind").to_pylist()
    kinds[4] = "fox"
    pacsv.write_csv(table.set_column(table.schema.get_field_index("kind"), "kind", pa.array(kinds)),
                    tmp_path / "fox.csv")
    res = invoke("eval", run_dir, tmp_path / "fox.csv")
    assert res.exit_code == 2 and "column 'kind', row 4" in res.output and "'fox' is not one of" in res.output
    pacsv.write_csv(table.drop_columns(["x4"]), tmp_path / "short.csv")
    res = invoke("predict", run_dir, tmp_path / "short.csv", "--out", tmp_path / "p.csv")
    assert res.exit_code == 2 and "has no column 'x4' (modality 'b' is made of x3, x4)" in res.output
    pacsv.write_csv(table.drop_columns(["kind"]), tmp_path / "unlabelled.csv")
    res = invoke("eval", run_dir, tmp_path / "unlabelled.csv")
    assert res.exit_code == 2 and "has no label column ('kind')" in res.output
    res = invoke("predict", run_dir, tmp_path / "unlabelled.csv", "--split", "test", "--out", tmp_path / "p.csv")
    assert res.exit_code == 2 and "has no 'split' column" in res.output
    assert not (tmp_path / "p.csv").exists()


def test_a_run_whose_data_record_no_columns_says_how_to_give_it_rows(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    write_dataset(tmp_path / "plain.parquet", {"a": (y[:, None] + rng.normal(0, 1, (80, 2))),
                                               "b": rng.normal(0, 1, (80, 2))}, y, None, None, "plain")
    doc = tiny_doc(epochs=1, data={"source": "parquet", "path": str(tmp_path / "plain.parquet"), "synthetic": None})
    (tmp_path / "run.toml").write_text(to_toml(doc))
    run_dir = start_run(tmp_path / "run.toml", runs_dir=tmp_path / "runs", reporter=NullReporter()).run_dir
    pacsv.write_csv(pa.table({"a1": [0.1], "a2": [0.2]}), tmp_path / "new.csv")
    res = invoke("predict", run_dir, tmp_path / "new.csv", "--out", tmp_path / "p.csv")
    assert res.exit_code == 2
    assert "record no such columns" in res.output and "Parquet with the run's modality columns (a, b" in res.output


def test_a_text_value_is_refused_by_row_and_an_empty_group_column_is_an_absent_value(trained, tmp_path):
    folder, run_dir = trained
    table = flat_table(12, seed=9).drop_columns(["kind"])
    x4 = [None if v is None else str(v) for v in table.column("x4").to_pylist()]
    x4[5] = "n/a?"
    pacsv.write_csv(table.set_column(table.schema.get_field_index("x4"), "x4", pa.array(x4)), tmp_path / "text.csv")
    res = invoke("predict", run_dir, tmp_path / "text.csv", "--out", tmp_path / "p.csv")
    assert res.exit_code == 2, res.output
    assert "column 'x4' (in modality 'b') has type string, row 5 (counting from 0) holds 'n/a?'" in res.output
    assert not (tmp_path / "p.csv").exists()
    # new samples without any b measurement: the CSV's x3 and x4 columns are empty (type null)
    empty = pa.nulls(12, pa.null())
    pacsv.write_csv(table.set_column(3, "x3", empty).set_column(4, "x4", empty), tmp_path / "no_b.csv")
    res = invoke("predict", run_dir, tmp_path / "no_b.csv", "--out", tmp_path / "p.parquet")
    assert res.exit_code == 0, res.output
    got = pq.read_table(tmp_path / "p.parquet")
    assert got.column("pred_b").null_count == 12 and got.column("pred_a").null_count == 0


def test_a_directory_of_flat_parquet_files_reads_as_one_table(trained, tmp_path):
    _, run_dir = trained
    table = flat_table(50, seed=11)
    pacsv.write_csv(table, tmp_path / "all.csv")
    (tmp_path / "parts").mkdir()
    pq.write_table(table.slice(0, 20), tmp_path / "parts" / "part-0.parquet")
    pq.write_table(table.slice(20), tmp_path / "parts" / "part-1.parquet")
    whole = json.loads(invoke("eval", run_dir, tmp_path / "all.csv", "--json").output)
    parts = invoke("eval", run_dir, tmp_path / "parts", "--json")
    assert parts.exit_code == 0, parts.output
    assert json.loads(parts.output)["metrics"] == whole["metrics"] and json.loads(parts.output)["rows"] == 50
    pq.write_table(table.slice(0, 10).drop_columns(["id"]), tmp_path / "parts" / "part-2.parquet")
    res = invoke("eval", run_dir, tmp_path / "parts")
    assert res.exit_code == 2 and "part-2.parquet" in res.output and "'id'" in res.output


def test_predict_takes_rows_whose_class_is_not_known_yet_and_eval_refuses_them(trained, tmp_path):
    _, run_dir = trained
    table = flat_table(10, seed=13)
    kinds = table.column("kind").to_pylist()
    kinds[2], kinds[6] = None, "fox"
    pacsv.write_csv(table.set_column(table.schema.get_field_index("kind"), "kind", pa.array(kinds)), tmp_path / "mixed.csv")
    res = invoke("predict", run_dir, tmp_path / "mixed.csv", "--out", tmp_path / "p.parquet")
    assert res.exit_code == 0, res.output
    got = pq.read_table(tmp_path / "p.parquet")
    assert got.num_rows == 10 and "label" not in got.column_names
    res = invoke("eval", run_dir, tmp_path / "mixed.csv")
    assert res.exit_code == 2 and "column 'kind', row 2" in res.output


def test_an_import_with_unlabelled_rows_says_how_many_and_what_to_do(tmp_path):
    table = flat_table(20, seed=17)
    kinds = table.column("kind").to_pylist()
    kinds[4] = kinds[9] = None
    pacsv.write_csv(table.set_column(table.schema.get_field_index("kind"), "kind", pa.array(kinds)), tmp_path / "t.csv")
    res = invoke("data", "import", tmp_path / "t.csv", tmp_path / "out.parquet", "--label", "kind", "-m", "a=x1,x2",
                 "-m", "b=x3,x4")
    assert res.exit_code == 2 and not (tmp_path / "out.parquet").exists()
    text = " ".join(res.output.split())
    assert "row 4 (counting from 0): the label is missing (null), in 2 of 20 rows" in text
    assert "Leave the unlabelled rows out of the table to import" in text


def test_keep_copies_an_id_column_into_the_predictions_and_refuses_what_it_cannot(trained, tmp_path):
    folder, run_dir = trained
    table = flat_table(15, seed=19)
    pacsv.write_csv(table.drop_columns(["kind"]), tmp_path / "new.csv")
    res = invoke("predict", run_dir, tmp_path / "new.csv", "--keep", "id", "--keep", "x4", "--out", tmp_path / "p.csv")
    assert res.exit_code == 0, res.output
    got = pacsv.read_csv(tmp_path / "p.csv")
    assert got.column_names[:4] == ["row", "id", "x4", "pred"]
    assert got.column("id").to_pylist() == table.column("id").to_pylist()
    assert got.column("x4").to_pylist() == table.column("x4").to_pylist()   # nulls stay null
    # from mmbal-format Parquet, of one split: the kept rows only
    res = invoke("predict", run_dir, folder / "data.parquet", "--split", "test", "--keep", "split", "--out",
                 tmp_path / "q.parquet")
    assert res.exit_code == 2 and "--keep split: the predictions have a column 'split' of their own" in res.output
    res = invoke("predict", run_dir, folder / "data.parquet", "--split", "test", "--keep", "a", "--out",
                 tmp_path / "q.parquet")
    assert res.exit_code == 0, res.output
    q = pq.read_table(tmp_path / "q.parquet")
    whole = pq.read_table(folder / "data.parquet")
    assert q.column("a").to_pylist() == whole.column("a").take(q.column("row")).to_pylist()
    res = invoke("predict", run_dir, folder / "data.parquet", "--keep", "a", "--out", tmp_path / "q.csv")
    assert res.exit_code == 2 and "which a CSV cell cannot hold" in res.output and not (tmp_path / "q.csv").exists()
    res = invoke("predict", run_dir, tmp_path / "new.csv", "--keep", "idd", "--out", tmp_path / "r.csv")
    assert res.exit_code == 2 and "has no column 'idd' to keep (--keep) (did you mean 'id'?)" in res.output


def test_per_class_figures_and_the_confusion_matrix_match_the_predictions(trained, tmp_path):
    from engine.run.predict import per_class

    folder, run_dir = trained
    pacsv.write_csv(flat_table(90, seed=23), tmp_path / "scored.csv")
    out = json.loads(invoke("eval", run_dir, tmp_path / "scored.csv", "--json").output)
    assert out["classes"] == CLASSES and set(out["confusion"]) == {"fused", "a", "b"}
    assert invoke("predict", run_dir, tmp_path / "scored.csv", "--out", tmp_path / "p.parquet").exit_code == 0
    preds = pq.read_table(tmp_path / "p.parquet")
    label, pred, pred_b = (np.asarray(preds.column(c).to_pylist(), dtype=object) for c in ("label", "pred", "pred_b"))
    fused = np.array(out["confusion"]["fused"])
    for t in range(3):
        for p in range(3):
            assert fused[t, p] == ((label == t) & (pred == p)).sum()
    b = np.array(out["confusion"]["b"])
    assert b.sum() == 90 - out["absent"]["b"] and np.trace(b) == ((pred_b == label) & (pred_b != None)).sum()  # noqa: E711
    assert np.trace(fused) / 90 == out["metrics"]["all/acc/fused"]
    # per-class figures by hand: a 2-class matrix with a class never predicted
    figures = per_class(np.array([[3, 0], [2, 0]]))
    assert figures["rows"].tolist() == [3, 2]
    assert figures["precision"][0] == 0.6 and np.isnan(figures["precision"][1])
    assert figures["recall"].tolist() == [1.0, 0.0] and figures["f1"].tolist() == [0.75, 0.0]
    text = invoke("eval", run_dir, tmp_path / "scored.csv", "--per-class").output
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("│ cat "))
    f = per_class(fused)
    assert f"{int(f['rows'][0])} │" in row and f"{f['recall'][0]:.3f}" in row
    assert "confusion (fused): a row per true class, a column per predicted class" in text


def test_eval_of_rows_without_any_value_of_a_modality_prints_no_score_for_it_in_strict_json(trained, tmp_path):
    _, run_dir = trained
    table = flat_table(30, seed=29)
    empty = pa.nulls(30, pa.null())
    pacsv.write_csv(table.set_column(3, "x3", empty).set_column(4, "x4", empty), tmp_path / "no_b.csv")

    def strict(text: str) -> dict:
        def refuse(token):
            raise ValueError(f"{token} is not JSON")
        return json.loads(text, parse_constant=refuse)
    out = strict(invoke("eval", run_dir, tmp_path / "no_b.csv", "--json").output)
    assert out["absent"] == {"b": 30} and out["metrics"]["all/acc/b"] is None and out["metrics"]["all/loss/b"] is None
    assert out["metrics"]["all/acc/a"] is not None
    text = invoke("eval", run_dir, tmp_path / "no_b.csv").output
    assert "b      acc -  f1 -  loss -  (0 rows: absent in 30)" in text
