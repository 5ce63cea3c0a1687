"""``mmbal data import`` (issue #20): Parquet from Hugging Face ``datasets`` and plain pyarrow becomes one
file in mmbal's format with its official splits; presets reading a glob or folder of split-named files;
and two bad inputs of issue #21 (a huge ``classes`` list in the metadata, duplicate column names)."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from engine.data import DataConfig, read_dataset
from engine.data.dataset import load_data
from mmbal_cli.app import app

import parquet_tools
from parquet_tools import vec, write_table

runner = CliRunner()
SIZES = {"train": 36, "validation": 9, "test": 9}


def _invoke(*args: str, tmp: Path):
    result = runner.invoke(app, list(args), env={"MMBAL_RUNS_DIR": str(tmp / "runs"), "COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


def _arrays(n: int, seed: int) -> dict[str, np.ndarray]:
    """Label-dependent values so that a tiny run can learn: audio (4 x 3), video (2 x 3 x 3)."""
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 3
    audio = (rng.normal(size=(n, 4, 3)) + label[:, None, None]).astype(np.float32)
    video = (rng.normal(size=(n, 2, 3, 3)) - label[:, None, None, None]).astype(np.float32)
    return {"audio": audio, "video": video, "label": label, "id": np.array([f"s{seed}-{i}" for i in range(n)])}


def _preset(tmp: Path, data_path: str) -> Path:
    (tmp / "p.toml").write_text(textwrap.dedent(f"""
        [data]
        path = "{data_path}"
        [modalities.audio]
        encoder = "mlp"
        hidden = [8]
        dim = 8
        [modalities.video]
        encoder = "mlp"
        hidden = [8]
        dim = 8
        [train]
        epochs = 1
        batch_size = 12
        [monitor]
        enabled = false
    """))
    return tmp / "p.toml"


# -- Hugging Face datasets -------------------------------------------------------------------------
def test_a_datasets_dataset_imports_and_trains_with_its_own_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"audio": datasets.Array2D((4, 3), "float32"),
                                  "video": datasets.Array3D((2, 3, 3), "float32"),
                                  "label": datasets.ClassLabel(names=["cat", "dog", "bird"]),
                                  "id": datasets.Value("string")})
    folder = tmp_path / "hf" / "data"
    folder.mkdir(parents=True)
    parts = {}
    for seed, (split, n) in enumerate(SIZES.items()):
        parts[split] = _arrays(n, seed)
        ds = datasets.Dataset.from_dict({k: list(v) for k, v in parts[split].items()}, features=features)
        ds.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    # what datasets writes is variable-length nested lists, which mmbal's reader refuses as they are
    written = pq.read_schema(folder / "train-00000-of-00001.parquet").field("audio").type
    assert pa.types.is_list(getattr(written, "storage_type", written))

    code, out = _invoke("data", "import", str(tmp_path / "hf"), str(tmp_path / "imp.parquet"), tmp=tmp_path)
    assert code == 0, out
    assert "train 36, val 9, test 9 (from the file names)" in out and "not imported: id" in out

    raw = read_dataset(tmp_path / "imp.parquet")
    assert raw.classes == ["cat", "dog", "bird"]
    assert list(raw.features) == ["audio", "video"]
    order = ["test", "train", "validation"]  # the files in name order
    assert raw.split.tolist() == sum(([("train", "val", "test").index({"validation": "val"}.get(s, s))]
                                      * SIZES[s] for s in order), [])
    for m in ("audio", "video"):
        expected = np.concatenate([parts[s][m] for s in order])
        assert np.array_equal(raw.features[m], expected)
    assert np.array_equal(raw.labels, np.concatenate([parts[s]["label"] for s in order]))

    data = load_data(DataConfig(path=str(tmp_path / "imp.parquet")), None, 0, tmp_path, "cpu")
    assert [data.split_size(s) for s in ("train", "val", "test")] == [36, 9, 9]
    code, out = _invoke("run", str(_preset(tmp_path, "imp.parquet")), "--runs-dir", str(tmp_path / "runs"),
                        tmp=tmp_path)
    assert code == 0, out
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert summary.get("state", "finished") == "finished"


# -- plain pyarrow ---------------------------------------------------------------------------------
def _nested(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """Variable-length nested lists (as datasets writes Array2D/3D) of a numpy array, with null rows."""
    rows = values.tolist()
    if mask is not None:
        rows = [None if m else r for r, m in zip(rows, mask)]
    return pa.array(rows, pa.list_(pa.list_(pa.float64())))


def test_plain_pyarrow_split_column_with_string_labels_and_null_rows(tmp_path):
    rng = np.random.default_rng(1)
    n = 30
    a, b = rng.normal(size=(n, 2, 5)), rng.normal(size=(n, 4)).astype(np.float32)
    missing = np.zeros(n, bool)
    missing[[3, 17]] = True
    split = np.array(["training", "validation", "TEST"] * 10)
    names = np.array(["zebra", "ant"])[np.arange(n) % 2]
    pq.write_table(pa.table({"a": _nested(a, missing), "b": pa.array(list(b), pa.list_(pa.float32())),
                             "y": pa.array(names), "split": pa.array(split)}), tmp_path / "plain.parquet")
    code, out = _invoke("data", "import", str(tmp_path / "plain.parquet"), str(tmp_path / "o.parquet"),
                        "--label", "y", tmp=tmp_path)
    assert code == 0, out
    assert "from the column 'split'" in out
    raw = read_dataset(tmp_path / "o.parquet")
    assert raw.classes == ["ant", "zebra"]
    assert raw.labels.tolist() == [1, 0] * 15
    assert raw.split.tolist() == [0, 1, 2] * 10
    assert raw.present["a"].tolist() == (~missing).tolist()
    assert np.array_equal(raw.features["a"][~missing], a[~missing].astype(np.float32))
    assert not raw.features["a"][missing].any()
    assert np.array_equal(raw.features["b"], b)


def test_train_and_test_files_only_carve_val_from_train_and_keep_test(tmp_path):
    rng = np.random.default_rng(2)
    values = {}
    for split, n in (("train", 40), ("test", 12)):
        values[split] = (rng.normal(size=(n, 3, 2)), rng.normal(size=(n, 3)), np.arange(n) % 4)
        pq.write_table(pa.table({"a": _nested(values[split][0]), "b": vec(values[split][1]),
                                 "label": pa.array(values[split][2])}), tmp_path / f"{split}-00000.parquet")
    code, out = _invoke("data", "import", f"{tmp_path}/*.parquet", str(tmp_path / "o.parquet"),
                        "--val-fraction", "0.3", tmp=tmp_path)
    assert code == 0, out
    assert "train 28, val 12, test 12 (from the file names; val carved from train)" in out
    raw = read_dataset(tmp_path / "o.parquet")
    # files in name order: test first, untouched; 30% of each class of train (10 rows per class) became val
    assert raw.split[:12].tolist() == [2] * 12
    assert np.bincount(raw.labels[12:][raw.split[12:] == 1], minlength=4).tolist() == [3, 3, 3, 3]


def test_image_bytes_are_decoded_to_a_tensor_column(tmp_path):
    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(12, 5, 7, 3), dtype=np.uint8)
    encoded = []
    for p in pixels:
        buf = io.BytesIO()
        image.fromarray(p).save(buf, format="PNG")
        encoded.append({"bytes": buf.getvalue(), "path": None})
    pq.write_table(pa.table({"pic": pa.array(encoded), "v": vec(rng.normal(size=(12, 3))),
                             "label": pa.array(np.arange(12) % 2)}), tmp_path / "img.parquet")
    code, out = _invoke("data", "import", str(tmp_path / "img.parquet"), str(tmp_path / "o.parquet"), tmp=tmp_path)
    assert code == 0, out
    raw = read_dataset(tmp_path / "o.parquet")
    assert raw.modalities["pic"].kind == "image" and raw.modalities["pic"].shape == (3, 5, 7)
    assert np.array_equal(raw.features["pic"], pixels.transpose(0, 3, 1, 2).astype(np.float32))


@pytest.mark.parametrize("make, expect", [
    (lambda: {"a": pa.array([[[1.0, 2.0]], [[1.0, 2.0]], [[1.0, 2.0], [3.0, 4.0]]]),
              "b": vec(np.ones((3, 2))), "label": pa.array([0, 1, 0])},
     ("column 'a', row 2", "a list at depth 1 has 2 values where the first row's have 1")),
    (lambda: {"a": pa.array([[[1.0, 2.0]], [[1.0]], [[1.0, 2.0]]]),
              "b": vec(np.ones((3, 2))), "label": pa.array([0, 1, 0])},
     ("column 'a', row 1", "depth 2 has 1 values")),
    (lambda: {"a": pa.array([[1.0, float("nan")], [1.0, 2.0], [1.0, 2.0]]), "b": vec(np.ones((3, 2))),
              "label": pa.array([0, 1, 0])}, ("column 'a', row 0", "NaN")),
    (lambda: {"a": pa.array([[1.0], [2.0], [3.0]]), "b": vec(np.ones((3, 2))), "label": pa.array([0, None, 1])},
     ("column 'label', row 1", "missing")),
    (lambda: {"a": pa.array([[1.0], [2.0], [3.0]]), "b": vec(np.ones((3, 2))), "label": pa.array([0, 1, 1]),
              "split": pa.array(["train", "holdout", "test"])}, ("column 'split', row 1", "'holdout'")),
    (lambda: {"a": pa.array([[1.0], [2.0], [3.0]]), "c": pa.array(["x", "y", "z"]), "label": pa.array([0, 1, 1])},
     ("at least two modality columns",)),
    (lambda: {"a": pa.array([[1.0], [2.0], [3.0]]), "b": vec(np.ones((3, 2))), "label": pa.array([0.0, 2.5, 1.0])},
     ("column 'label', row 1", "label 2.5 is not a whole number", "bin a continuous target")),
], ids=["ragged rows", "ragged inner lists", "NaN", "null label", "unknown split", "one modality", "float label"])
def test_bad_sources_exit_2_naming_file_column_and_row(tmp_path, make, expect):
    pq.write_table(pa.table(make()), tmp_path / "bad.parquet")
    code, out = _invoke("data", "import", str(tmp_path / "bad.parquet"), str(tmp_path / "o.parquet"), tmp=tmp_path)
    assert code == 2, out
    assert "bad.parquet" in out
    for part in expect:
        assert part in out, out
    assert not (tmp_path / "o.parquet").exists()


def test_an_existing_output_is_kept_unless_forced(tmp_path):
    pq.write_table(pa.table({"a": vec(np.ones((3, 2))), "b": vec(np.ones((3, 2))), "label": pa.array([0, 1, 0])}),
                   tmp_path / "s.parquet")
    (tmp_path / "o.parquet").write_bytes(b"keep me")
    code, out = _invoke("data", "import", str(tmp_path / "s.parquet"), str(tmp_path / "o.parquet"), tmp=tmp_path)
    assert code == 2 and "--force" in out
    assert (tmp_path / "o.parquet").read_bytes() == b"keep me"
    code, out = _invoke("data", "import", str(tmp_path / "s.parquet"), str(tmp_path / "o.parquet"), "--force",
                        tmp=tmp_path)
    assert code == 0, out
    assert read_dataset(tmp_path / "o.parquet").n_rows == 3


@pytest.mark.parametrize("label, classes, warning", [
    (pa.array([0.0, 1.0, 2.0] * 10), ["0", "1", "2"], None),           # pandas' floats after a NaN elsewhere
    (pa.array([True, False, False] * 10), ["False", "True"], None),
    (pa.array([0, 2, 4] * 10), ["0", "1", "2", "3", "4"],
     "2 of the class indices 0..4 in column 'label' have no row: the model gets 5 outputs"),
    (pa.array(np.arange(30) * 1.0), [str(i) for i in range(30)],
     "column 'label' gives 30 classes for 30 rows (1.0 rows per class present): if it is a continuous target"),
], ids=["whole floats", "booleans", "gaps", "continuous"])
def test_float_and_boolean_labels_and_warnings_about_the_classes(tmp_path, label, classes, warning):
    pq.write_table(pa.table({"a": vec(np.ones((30, 2))), "b": vec(np.ones((30, 2))), "label": label}),
                   tmp_path / "s.parquet")
    code, out = _invoke("data", "import", str(tmp_path / "s.parquet"), str(tmp_path / "o.parquet"), tmp=tmp_path)
    assert code == 0, out
    raw = read_dataset(tmp_path / "o.parquet")
    assert raw.classes == classes
    assert np.array_equal(raw.labels, np.asarray(label.to_pylist(), dtype=np.int64))
    assert (warning in out) if warning else ("warning" not in out), out


def _flat_table(n: int = 12) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """A flat table as pandas writes it (one scalar column per feature, two name prefixes, a text column; row 4
    without its prot_* values), with the gene and prot values."""
    rng = np.random.default_rng(0)
    gene, prot = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    prot[4] = np.nan
    table = pa.table({**{f"gene_{i}": gene[:, i] for i in range(3)},
                      "prot_a": pa.array(prot[:, 0], from_pandas=True),
                      "prot_b": pa.array(prot[:, 1], from_pandas=True),
                      "note": ["x"] * n, "label": np.arange(n) % 2})
    return table, gene, prot


def test_a_flat_table_given_as_data_is_refused_with_the_import_that_groups_its_columns(tmp_path):
    """``data inspect`` and ``run`` on a table of scalar feature columns say how data import makes
    modalities of them, with the groups the column prefixes suggest."""
    table, _, _ = _flat_table()
    flat = tmp_path / "flat.parquet"
    pq.write_table(table, flat)
    suggestion = (f"it has 5 scalar numeric columns (gene_0, gene_1, gene_2, prot_a, prot_b), one feature each: "
                  f"`mmbal data import {flat} OUT.parquet --label label -m gene='gene_*' -m prot='prot_*'`")
    code, out = _invoke("data", "inspect", str(flat), tmp=tmp_path)
    assert code == 2 and "found none; " + suggestion in out, out
    (tmp_path / "p.toml").write_text(f'[data]\npath = "{flat}"\n')
    code, out = _invoke("run", str(tmp_path / "p.toml"), tmp=tmp_path)
    assert code == 2 and "has the modality column(s): none; " + suggestion in out, out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    pq.write_table(table.rename_columns(["target" if c == "label" else c for c in table.column_names]), flat)
    code, out = _invoke("data", "inspect", str(flat), tmp=tmp_path)    # scikit-learn's frames call it target
    assert code == 2 and "it has 5 scalar numeric columns" in out and "--label target -m gene=" in out, out


def test_scalar_columns_grouped_into_vector_modalities(tmp_path):
    table, gene, prot = _flat_table()
    pq.write_table(table, tmp_path / "flat.parquet")
    code, out = _invoke("data", "import", str(tmp_path / "flat.parquet"), str(tmp_path / "o.parquet"),
                        "-m", "rna=gene_*", "-m", "protein=prot_b,prot_a", tmp=tmp_path)
    assert code == 0, out
    assert "modalities: rna [3], protein [2]" in out and "not imported: note" in out
    preset = tmp_path / "two_lines.toml"   # the preset the import suggests trains on the data as it is
    preset.write_text(f'[data]\npath = "{tmp_path / "o.parquet"}"\n[train]\nepochs = 1\n')
    assert f'path = "{tmp_path / "o.parquet"}"' in out
    code, ran = _invoke("run", str(preset), tmp=tmp_path)
    assert code == 0 and "fused" in ran, ran
    code, out = _invoke("data", "import", str(tmp_path / "flat.parquet"), str(tmp_path / "one.parquet"),
                        "-m", "rna=gene_*", "-m", "prot_a=prot_a", tmp=tmp_path)   # one column, its own name
    assert code == 0 and "modalities: rna [3], prot_a [1]" in out, out
    raw = read_dataset(tmp_path / "o.parquet")
    np.testing.assert_array_equal(raw.features["rna"], gene.astype(np.float32))
    kept = np.arange(12) != 4
    np.testing.assert_array_equal(raw.features["protein"][kept], prot[kept][:, ::-1].astype(np.float32))
    assert raw.present["protein"].tolist() == kept.tolist()   # all-null row: the modality is missing there


@pytest.mark.parametrize("args, expect", [
    ((), ("found none among 5 scalar numeric columns", "-m gene='gene_*' -m prot='prot_*'")),
    (("-m", "rna=gene_*", "-m", "p=prot_*,label"), ("column 'label' (in --modality 'p=prot_*,label') is the label",)),
    (("-m", "rna=gene_*", "-m", "p=prto_*"), ("no numeric column matches 'prto_*'",)),
    (("-m", "rna=gene_*", "-m", "p=prot_a,prot_c"), ("has no column 'prot_c' (in --modality 'p=prot_a,prot_c')",)),
    (("-m", "rest=*", "-m", "p=prot_*"), ("no numeric column that another group did not take matches 'prot_*'",)),
    (("-m", "rna=gene_*", "-m", "p=prot_a,note"), ("column 'note' (in --modality 'p=prot_a,note') has type string",)),
    (("-m", "rna=gene_0,prot_a", "-m", "p=prot_a,prot_b"), ("column 'prot_a' is in two modalities, 'rna' and 'p'",)),
    (("-m", "rna=gene_*", "-m", "gene_0=prot_*"), ("'gene_0' is another column",)),
    (("-m", "fused=gene_*", "-m", "p=prot_*"), ("--modality fused=...: 'fused' is the fused model's name",)),
    (("-m", "rna/x=gene_*", "-m", "p=prot_*"), ("--modality rna/x=...: 'rna/x' contains '/'",)),
], ids=["no groups", "label", "no match", "no column", "taken", "text", "twice", "name of another column", "fused",
        "separator"])
def test_grouped_modalities_refused_naming_the_column(tmp_path, args, expect):
    table, _, _ = _flat_table()
    pq.write_table(table, tmp_path / "flat.parquet")
    code, out = _invoke("data", "import", str(tmp_path / "flat.parquet"), str(tmp_path / "o.parquet"), *args,
                        tmp=tmp_path)
    assert code == 2, out
    for part in expect:
        assert part in out, out
    assert not (tmp_path / "o.parquet").exists()


def test_a_pattern_takes_the_numeric_columns_no_group_names_or_took_before(tmp_path):
    """``-m rest='*' -m prot=prot_a,prot_b``: the pattern takes every other numeric column (the prot_*
    columns, named exactly by a later group, are not taken) and leaves the text column out;
    ``-m gene='gene_*' -m rest='*'`` gives rest what gene did not take."""
    table, gene, prot = _flat_table()
    pq.write_table(table, tmp_path / "flat.parquet")
    code, out = _invoke("data", "import", str(tmp_path / "flat.parquet"), str(tmp_path / "o.parquet"),
                        "-m", "rest=*", "-m", "prot=prot_a,prot_b", tmp=tmp_path)
    assert code == 0 and "modalities: rest [3], prot [2]" in out and "not imported: note" in out, out
    raw = read_dataset(tmp_path / "o.parquet")
    kept = np.arange(12) != 4
    np.testing.assert_array_equal(raw.features["rest"], gene.astype(np.float32))
    np.testing.assert_array_equal(raw.features["prot"][kept], prot[kept].astype(np.float32))
    code, out = _invoke("data", "import", str(tmp_path / "flat.parquet"), str(tmp_path / "o2.parquet"),
                        "-m", "gene=gene_*", "-m", "rest=*", tmp=tmp_path)
    assert code == 0 and "modalities: gene [3], rest [2]" in out, out


def test_csv_tables_import_with_grouped_columns_and_the_splits_of_their_names(tmp_path):
    """A CSV table (and a glob of train / test CSVs, one compressed) with scalar columns: groups make the
    modalities, empty cells are null, string labels are class names; a malformed CSV names its file."""
    import gzip

    table, gene, prot = _flat_table(20)
    rows = ["gene_0,gene_1,gene_2,prot_a,prot_b,note,label"]
    for i in range(20):
        p = ["", ""] if i == 4 else [str(float(v)) for v in prot[i]]
        rows.append(",".join([*(str(float(v)) for v in gene[i]), *p, "x", "ab"[i % 2]]))
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    code, out = _invoke("data", "import", str(tmp_path / "t.csv"), str(tmp_path / "o.parquet"),
                        "-m", "rna=gene_*", "-m", "protein=prot_*", tmp=tmp_path)
    assert code == 0, out
    raw = read_dataset(tmp_path / "o.parquet")
    np.testing.assert_allclose(raw.features["rna"], gene.astype(np.float32))
    assert raw.classes == ["a", "b"] and raw.present["protein"].sum() == 19 and not raw.present["protein"][4]

    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "train.csv").write_text("\n".join(rows[:15]) + "\n")
    with gzip.open(parts / "test.csv.gz", "wt") as f:
        f.write("\n".join(rows[:1] + rows[15:]) + "\n")
    code, out = _invoke("data", "import", str(parts / "*"), str(tmp_path / "p.parquet"),
                        "-m", "rna=gene_*", "-m", "protein=prot_*", tmp=tmp_path)
    assert code == 0, out
    assert "test 6 (from the file names" in out

    (tmp_path / "bad.csv").write_text("a,b,label\n1,2,0\n1,2,3,4\n")
    code, out = _invoke("data", "import", str(tmp_path / "bad.csv"), str(tmp_path / "q.parquet"), tmp=tmp_path)
    assert code == 2 and "bad.csv: cannot be read as a CSV table" in out, out

    code, out = _invoke("data", "inspect", str(tmp_path / "t.csv"), tmp=tmp_path)   # a CSV where Parquet is read
    assert code == 2 and f"convert it once with `mmbal data import {tmp_path / 't.csv'} t.parquet" in out, out


def test_a_spreadsheets_csv_with_semicolons_and_decimal_commas_imports_as_the_comma_csv_does(tmp_path):
    """A CSV saved by a spreadsheet in a locale with the decimal comma (``39,1;18,7``), compressed or not, and
    a tab-separated one, give the same dataset as the plain comma CSV."""
    import bz2

    from engine.data.csv_dialect import csv_dialect

    _, gene, prot = _flat_table(12)
    header = ["gene_0", "gene_1", "gene_2", "prot_a", "prot_b", "note", "label"]

    def rows(sep: str, decimal: str) -> str:
        lines = [sep.join(header)]
        for i in range(12):
            values = [f"{v:.3f}".replace(".", decimal) for v in (*gene[i], *prot[i])]
            lines.append(sep.join([*values, "x, y" if sep != "," else "x y", "ab"[i % 2]]))
        return "\n".join(lines) + "\n"
    (tmp_path / "comma.csv").write_text(rows(",", "."))
    (tmp_path / "semi.csv").write_text(rows(";", ","))
    with bz2.open(tmp_path / "semi.csv.bz2", "wt") as f:
        f.write(rows(";", ","))
    (tmp_path / "tabs.csv").write_text(rows("\t", "."))
    assert csv_dialect(tmp_path / "semi.csv") == (";", ",") == csv_dialect(tmp_path / "semi.csv.bz2")
    assert csv_dialect(tmp_path / "tabs.csv") == ("\t", ".") and csv_dialect(tmp_path / "comma.csv") == (",", ".")
    datasets = {}
    for name in ("comma.csv", "semi.csv", "semi.csv.bz2", "tabs.csv"):
        out = tmp_path / f"{name.split('.')[0]}-{len(datasets)}.parquet"
        code, text = _invoke("data", "import", str(tmp_path / name), str(out), "-m", "rna=gene_*",
                             "-m", "protein=prot_*", tmp=tmp_path)
        assert code == 0, (name, text)
        datasets[name] = read_dataset(out)
    want = datasets["comma.csv"]
    np.testing.assert_allclose(want.features["rna"], np.round(gene, 3).astype(np.float32), rtol=1e-6)
    for name, raw in datasets.items():
        np.testing.assert_array_equal(raw.features["rna"], want.features["rna"], err_msg=name)
        np.testing.assert_array_equal(raw.features["protein"], want.features["protein"], err_msg=name)
        assert raw.classes == ["a", "b"] and (raw.labels == want.labels).all(), name


def test_a_windows_spreadsheets_csv_keeps_its_accented_class_names(tmp_path):
    """Windows-1252 (a spreadsheet's "CSV" on Windows) and UTF-8 with a byte-order mark and CRLF line ends:
    the class names come out as written (Windows-1252 was read as binary and refused as a label type)."""
    from engine.data.csv_dialect import csv_encoding

    text = "x1,x2,x3,label\r\n" + "".join(f"{i},{i % 3}.5,{-i},{['Adélie', 'Gentoo', 'Chinstrap'][i % 3]}\r\n"
                                          for i in range(9))
    (tmp_path / "win.csv").write_bytes(text.encode("cp1252"))
    (tmp_path / "bom.csv").write_bytes(text.encode("utf-8-sig"))
    assert csv_encoding(tmp_path / "win.csv") == "cp1252" and csv_encoding(tmp_path / "bom.csv") == "utf-8"
    for name in ("win.csv", "bom.csv"):
        code, out = _invoke("data", "import", str(tmp_path / name), str(tmp_path / f"{name}.parquet"),
                            "-m", "a=x1,x2", "-m", "b=x3", tmp=tmp_path)
        assert code == 0, (name, out)
        raw = read_dataset(tmp_path / f"{name}.parquet")
        assert raw.classes == ["Adélie", "Chinstrap", "Gentoo"], name
        np.testing.assert_array_equal(raw.features["a"][:, 1], np.array([0.5, 1.5, 2.5] * 3, np.float32))


def test_a_group_with_some_of_its_values_missing_in_a_row_is_refused(tmp_path):
    table, _, _ = _flat_table()
    prot_a = table.column("prot_a").to_pylist()
    prot_a[4] = 1.0   # prot_b stays null in row 4
    pq.write_table(table.set_column(table.column_names.index("prot_a"), "prot_a", pa.array(prot_a)),
                   tmp_path / "flat.parquet")
    code, out = _invoke("data", "import", str(tmp_path / "flat.parquet"), str(tmp_path / "o.parquet"),
                        "-m", "rna=gene_*", "-m", "protein=prot_*", tmp=tmp_path)
    assert code == 2
    assert "column 'prot_b', row 4 (counting from 0): the value is missing while other columns of modality " \
           "'protein' have theirs" in out


# -- a preset pointing at a glob or a folder of split-named files ----------------------------------
@pytest.mark.parametrize("pattern", ["parts/*.parquet", "parts"])
def test_a_preset_reads_a_glob_or_folder_with_the_files_splits(tmp_path, pattern):
    (tmp_path / "parts").mkdir()
    counts = {"train": 30, "validation": 8, "test": 10}
    for i, (split, n) in enumerate(counts.items()):
        cols = parquet_tools.good_columns(n, ["train"])
        cols.pop("split")
        write_table(tmp_path / "parts" / f"{split}-0000{i}.parquet", cols)
    data = load_data(DataConfig(path=pattern), None, 0, tmp_path, "cpu")
    assert [data.split_size(s) for s in ("train", "val", "test")] == [30, 8, 10]
    raw = read_dataset(tmp_path / pattern)
    assert raw.name == "parts"
    # name order: test (10), train (30), validation (8)
    assert raw.split.tolist() == [2] * 10 + [0] * 30 + [1] * 8


def test_a_folder_of_split_files_without_a_val_file_is_refused(tmp_path):
    for split in ("train", "test"):
        cols = parquet_tools.good_columns(12, ["train"])
        cols.pop("split")
        write_table(tmp_path / f"{split}-0.parquet", cols)
    code, out = _invoke("data", "inspect", str(tmp_path), tmp=tmp_path)
    assert code == 2, out
    assert "no val file" in out and "mmbal data import" in out


# -- issue #21 items 7 and 9 -----------------------------------------------------------------------
PARQUET_PRESET = """
[data]
path = "d.parquet"
[train]
epochs = 1
batch_size = 8
[monitor]
enabled = false
"""


def _run_refused(tmp: Path) -> str:
    (tmp / "p.toml").write_text(PARQUET_PRESET)
    code, out = _invoke("run", str(tmp / "p.toml"), "--runs-dir", str(tmp / "runs"), tmp=tmp)
    assert code == 2, out
    assert not (tmp / "runs").exists() or not any((tmp / "runs").iterdir()), "a run directory was left behind"
    return out


def test_a_class_list_far_beyond_the_labels_is_refused_before_a_run_directory(tmp_path):
    cols = parquet_tools.good_columns(24, ("train", "train", "val", "test"))
    write_table(tmp_path / "d.parquet", cols, {"format": 1, "classes": ["x"] * 100000})
    out = _run_refused(tmp_path)
    assert "d.parquet: column 'label'" in out and "names 100000 classes" in out and "at most 24" in out


def test_classes_without_rows_up_to_the_bound_are_still_allowed(tmp_path):
    cols = parquet_tools.good_columns(24, ("train", "train", "val", "test"))
    write_table(tmp_path / "d.parquet", cols, {"format": 1, "classes": [f"c{i}" for i in range(24)]})
    assert len(read_dataset(tmp_path / "d.parquet").classes) == 24


@pytest.mark.parametrize("duplicate", ["a", "label"])
def test_duplicate_column_names_exit_2_naming_file_and_column(tmp_path, duplicate):
    table = pa.table(parquet_tools.good_columns(24, ("train", "train", "val", "test")))
    columns = [table.column(n) for n in table.column_names] + [table.column(duplicate)]
    pq.write_table(pa.Table.from_arrays(columns, names=table.column_names + [duplicate]), tmp_path / "d.parquet")
    out = _run_refused(tmp_path)
    assert f"d.parquet: column '{duplicate}' appears 2 times" in out
    for args in (["data", "inspect", str(tmp_path / "d.parquet")],
                 ["data", "import", str(tmp_path / "d.parquet"), str(tmp_path / "o.parquet")]):
        code, out = _invoke(*args, tmp=tmp_path)
        assert code == 2 and f"column '{duplicate}' appears 2 times" in out, out


def test_a_spreadsheet_workbook_is_refused_with_how_to_convert_it(tmp_path):
    (tmp_path / "omics.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    code, out = _invoke("data", "import", str(tmp_path / "omics.xlsx"), str(tmp_path / "o.parquet"), tmp=tmp_path)
    text = " ".join(out.split())
    assert code == 2 and "it is a spreadsheet workbook by its name: save its sheet as CSV" in text, out
    assert "`mmbal data import omics.csv omics.parquet --label COLUMN" in text and not (tmp_path / "o.parquet").exists()
