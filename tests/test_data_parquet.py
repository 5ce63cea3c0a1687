"""Reading the mmbal Parquet format: the shared real datasets, every bad-data case, directories,
type conversion and missing values."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine.data import ModalityInfo, inspect_dataset, peek_schema, read_dataset
from engine.errors import DataError

import parquet_tools
from parquet_tools import changed, tensor, vec, write_table

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# file -> ({modality: (shape, kind)}, (train, val, test), n_classes)
REAL = {
    "uci_mfeat.parquet": ({"fou": ((76,), "vector"), "fac": ((216,), "vector"), "kar": ((64,), "vector"),
                           "pix": ((240,), "vector"), "zer": ((47,), "vector"), "mor": ((6,), "vector")},
                          (1200, 400, 400), 10),
    "avdigits.parquet": ({"audio": ((40, 32), "spectrogram"), "image": ((28, 28), "image")}, (2430, 270, 300), 10),
    "avdigits_hard.parquet": ({"audio": ((40, 32), "spectrogram"), "image": ((28, 28), "image")},
                              (2430, 270, 300), 10),
    "cub10.parquet": ({"image": ((1024,), "vector"), "text": ((300,), "vector")}, (360, 120, 120), 10),
    "nutrimouse.parquet": ({"gene": ((120,), "vector"), "lipid": ((21,), "vector")}, (20, 10, 10), 5),
}


def _real(name: str) -> Path:
    if not DATA.is_dir():
        pytest.skip(f"the shared datasets folder {DATA} is missing on this machine")
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is missing on this machine")
    return path


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_datasets_read_with_expected_modalities_shapes_and_splits(name):
    path = _real(name)
    mods, split_counts, n_classes = REAL[name]
    raw = read_dataset(path)
    assert raw.name == name.removesuffix(".parquet")
    assert list(raw.modalities) == list(mods)
    for m, (shape, kind) in mods.items():
        assert raw.modalities[m] == ModalityInfo(m, m, shape, kind)
        assert raw.features[m].shape == (sum(split_counts), *shape)
        assert raw.features[m].dtype == np.float32
        assert raw.present[m].all()
        assert np.isfinite(raw.features[m]).all()
    assert raw.labels.dtype == np.int64 and raw.labels.shape == (sum(split_counts),)
    assert raw.split.dtype == np.int8
    assert tuple(np.bincount(raw.split, minlength=3)) == split_counts
    assert len(raw.classes) == n_classes and raw.labels.min() == 0 and raw.labels.max() == n_classes - 1
    assert "source" in raw.metadata and "license" in raw.metadata


def test_real_peek_schema_matches_read_and_inspect_summarises():
    path = _real("avdigits.parquet")
    mods, meta = peek_schema(path)
    assert mods == read_dataset(path).modalities
    assert meta["name"] == "avdigits" and len(meta["classes"]) == 10
    info = inspect_dataset(_real("uci_mfeat.parquet"))
    json.dumps(info)
    assert info["rows"] == 2000 and info["splits"] == {"train": 1200, "val": 400, "test": 400}
    assert info["n_classes"] == 10 and sum(info["class_counts"].values()) == 2000
    mods = {m["name"]: m for m in info["modalities"]}
    assert [m["name"] for m in info["modalities"]] == ["fou", "fac", "kar", "pix", "zer", "mor"]
    assert mods["mor"]["shape"] == [6] and mods["mor"]["missing"] == 0 and mods["mor"]["kind"] == "vector"
    assert mods["fou"]["arrow_type"].startswith("fixed_size_list<")
    assert mods["fou"]["min"] <= mods["fou"]["mean"] <= mods["fou"]["max"] and mods["fou"]["std"] > 0
    assert info["license"].startswith("CC BY")


def test_avdigits_loads_fast():
    path = _real("avdigits.parquet")
    read_dataset(path)  # warm the file cache
    start = time.perf_counter()
    raw = read_dataset(path)
    assert time.perf_counter() - start < 1.0
    assert raw.features["audio"].shape == (3000, 40, 32)


# ----------------------------------------------------------------------------------------------
# helpers writing small tables


def good_columns(n: int = 8) -> dict[str, pa.Array]:
    return parquet_tools.good_columns(n, split_cycle=("train", "val", "test", "train"))


def with_(**changes):
    def make(tmp: Path):
        return write_table(tmp / "bad.parquet", changed(good_columns(), changes)), None
    return make


def _nan_at(row, shape=(8, 3)):
    values = np.ones(shape)
    values[row].flat[1] = np.nan
    return values


def _inf_at(row, shape=(8, 2, 2)):
    values = np.ones(shape)
    values[row].flat[-1] = np.inf
    return values


def _not_parquet(tmp: Path):
    path = tmp / "bad.parquet"
    path.write_text("label,a\n1,2\n")
    return path, None


def _empty_dir(tmp: Path):
    (tmp / "empty").mkdir()
    (tmp / "empty" / "notes.txt").write_text("x")
    return tmp / "empty", None


def _labels_out_of_range(tmp: Path):
    cols = good_columns()
    cols["label"] = pa.array([0, 1, 0, 2, 1, 0, 1, 0], pa.int64())
    return write_table(tmp / "bad.parquet", cols, {"classes": ["x", "y"]}), None


def _requested(column: str, array: pa.Array):
    def make(tmp: Path):
        cols = good_columns()
        cols[column] = array
        return write_table(tmp / "bad.parquet", cols), {"a": "a", column: column}
    return make


def _missing_requested(tmp: Path):
    cols = good_columns()
    cols["audio"] = cols.pop("b")
    return write_table(tmp / "bad.parquet", cols), {"a": "a", "b": "audoi"}


def _one_modality(tmp: Path):
    cols = good_columns()
    cols.pop("b")
    cols["id"] = pa.array(np.arange(8))
    return write_table(tmp / "bad.parquet", cols), None


def _child_null(tmp: Path):
    flat = pa.array([1.0] * 13 + [None] + [1.0] * 10, pa.float32())  # row 4, element 1
    return with_(a=pa.FixedSizeListArray.from_arrays(flat, 3))(tmp)


def _bad_kind(tmp: Path):
    return write_table(tmp / "bad.parquet", good_columns(), {"modalities": {"b": {"kind": "imgae"}}}), None


def _bad_shape(tmp: Path):
    return write_table(tmp / "bad.parquet", good_columns(), {"modalities": {"a": {"shape": [4]}}}), None


def _schemas_differ(tmp: Path):
    folder = tmp / "parts"
    folder.mkdir()
    write_table(folder / "p0.parquet", good_columns())
    cols = good_columns()
    cols["a"] = vec(np.ones((8, 4)))
    write_table(folder / "p1.parquet", cols)
    return folder, None


def _dir_bad_row_in_second_file(tmp: Path):
    folder = tmp / "parts"
    folder.mkdir()
    write_table(folder / "p0.parquet", good_columns())
    cols = good_columns()
    cols["a"] = vec(_nan_at(6))
    write_table(folder / "p1.parquet", cols)
    return folder, None


# id -> (make(tmp) -> (path, columns), [substrings the message must contain])
BAD = {
    "missing file": (lambda tmp: (tmp / "nope.parquet", None), ["nope.parquet", "no such file"]),
    "not parquet": (_not_parquet, ["bad.parquet", "cannot be read as a Parquet file"]),
    "empty directory": (_empty_dir, ["empty", "no .parquet files"]),
    "missing label": (with_(label=None), ["bad.parquet", "'label'", "missing"]),
    "float labels": (with_(label=pa.array(np.arange(8) % 2, pa.float64())), ["bad.parquet", "'label'", "double",
                                                                              "integers"]),
    "string labels": (with_(label=pa.array(["0", "1"] * 4)), ["bad.parquet", "'label'", "string", "integers"]),
    "label above C-1": (_labels_out_of_range, ["bad.parquet", "'label'", "row 3", "label 2", "0..1"]),
    "negative label": (with_(label=pa.array([0, 1, 0, 1, 0, -1, 1, 0], pa.int64())),
                       ["bad.parquet", "'label'", "row 5", "-1"]),
    "null label": (with_(label=pa.array([0, 1, None, 1, 0, 1, 1, 0], pa.int64())),
                   ["bad.parquet", "'label'", "row 2", "null"]),
    "variable-length list requested": (_requested("v", pa.array([[1.0, 2.0]] * 7 + [[1.0]])),
                                       ["bad.parquet", "'v'", "variable-length lists"]),
    "variable-length list auto-detected": (with_(v=pa.array([[1.0, 2.0]] * 7 + [[1.0]], pa.list_(pa.float32()))),
                                           ["bad.parquet", "'v'", "variable-length lists"]),
    "large list auto-detected": (with_(v=pa.array([[1.0]] * 8, pa.large_list(pa.float64()))),
                                 ["bad.parquet", "'v'", "variable-length lists"]),
    "string column requested": (_requested("s", pa.array(["x"] * 8)), ["bad.parquet", "'s'", "strings"]),
    "scalar column requested": (_requested("t", pa.array(np.ones(8))), ["bad.parquet", "'t'", "one scalar per row"]),
    "integer tensor requested": (_requested("t", tensor(np.ones((8, 2, 2), np.int32), pa.int32())),
                                 ["bad.parquet", "'t'", "int32"]),
    "NaN in a vector": (with_(a=vec(_nan_at(4))), ["bad.parquet", "'a'", "row 4", "NaN"]),
    "inf in a tensor": (with_(b=tensor(_inf_at(2))), ["bad.parquet", "'b'", "row 2", "infinite"]),
    "null element in a present row": (_child_null, ["bad.parquet", "'a'", "row 4", "null element"]),
    "bad split value": (with_(split=pa.array(["train", "val", "test", "train", "train", "valid", "val", "test"])),
                        ["bad.parquet", "'split'", "row 5", "'valid'"]),
    "null split value": (with_(split=pa.array(["train", "val", "test", None, "train", "train", "val", "test"])),
                         ["bad.parquet", "'split'", "row 3", "null"]),
    "empty val split": (with_(split=pa.array(["train", "test"] * 4)), ["bad.parquet", "'split'", "no 'val' rows"]),
    "split not strings": (with_(split=pa.array(np.zeros(8, np.int64))), ["bad.parquet", "'split'", "int64"]),
    "fewer than two modalities": (_one_modality, ["bad.parquet", "at least two modality columns", "'a'"]),
    "requested column missing": (_missing_requested, ["bad.parquet", "'audoi'", "did you mean 'audio'"]),
    "schemas differ": (_schemas_differ, ["p1.parquet", "p0.parquet", "column 'a'", "share one schema"]),
    "bad row in second file": (_dir_bad_row_in_second_file, ["p1.parquet", "'a'", "row 6", "NaN"]),
    "unknown kind in metadata": (_bad_kind, ["bad.parquet", "'b'", "'imgae'", "did you mean 'image'"]),
    "metadata shape mismatch": (_bad_shape, ["bad.parquet", "'a'", "[4]", "[3]"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_raises_one_clear_data_error(tmp_path, case):
    make, expected = BAD[case]
    path, columns = make(tmp_path)
    with pytest.raises(DataError) as info:
        read_dataset(path, columns=columns)
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert "\n" not in message
    assert info.value.exit_code == 2


def test_inspect_and_peek_raise_the_same_data_errors(tmp_path):
    path, _ = with_(a=vec(_nan_at(4)))(tmp_path)
    with pytest.raises(DataError, match="row 4"):
        inspect_dataset(path)
    with pytest.raises(DataError, match="no such file"):
        peek_schema(tmp_path / "missing.parquet")
    with pytest.raises(DataError, match="cannot be read as a Parquet file"):
        peek_schema(_not_parquet(tmp_path)[0])


# ----------------------------------------------------------------------------------------------
# good data: directories, conversion, missing values, column selection


def test_directory_is_read_as_one_table_in_name_order(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    for name, start in (("part-2.parquet", 8), ("part-1.parquet", 0), ("part-3.parquet", 16)):
        cols = good_columns()
        cols["a"] = vec(np.arange(start * 3, start * 3 + 24, dtype=np.float32).reshape(8, 3))
        write_table(folder / name, cols, {"name": "parts"})
    (folder / "README.txt").write_text("not data")
    raw = read_dataset(folder)
    assert raw.name == "parts" and raw.labels.shape == (24,)
    np.testing.assert_array_equal(raw.features["a"], np.arange(72, dtype=np.float32).reshape(24, 3))
    assert tuple(np.bincount(raw.split)) == (12, 6, 6)


def test_float64_and_float16_are_converted_to_float32(tmp_path):
    a = np.linspace(-2, 2, 24).reshape(8, 3)
    b = np.linspace(0, 1, 32).reshape(8, 2, 2).astype(np.float16)
    cols = good_columns()
    cols["a"], cols["b"] = vec(a, pa.float64()), tensor(b, pa.float16())
    raw = read_dataset(write_table(tmp_path / "t.parquet", cols))
    assert raw.features["a"].dtype == np.float32 and raw.features["b"].dtype == np.float32
    np.testing.assert_array_equal(raw.features["a"], a.astype(np.float32))
    np.testing.assert_array_equal(raw.features["b"], b.astype(np.float32))


def test_null_rows_are_missing_and_zero(tmp_path):
    mask = np.array([False, True, False, False, True, False, False, False])
    a = np.full((8, 3), 5.0)
    b = np.full((8, 2, 2), 7.0)
    b[6] = np.nan  # a null row's content is never looked at
    cols = good_columns()
    cols["a"], cols["b"] = vec(a, mask=mask), tensor(b, mask=np.arange(8) == 6)
    raw = read_dataset(write_table(tmp_path / "t.parquet", cols))
    np.testing.assert_array_equal(raw.present["a"], ~mask)
    np.testing.assert_array_equal(raw.present["b"], np.arange(8) != 6)
    np.testing.assert_array_equal(raw.features["a"][mask], 0.0)
    np.testing.assert_array_equal(raw.features["a"][~mask], 5.0)
    np.testing.assert_array_equal(raw.features["b"][6], 0.0)
    assert (raw.features["b"][np.arange(8) != 6] == 7.0).all()


def test_permuted_tensor_layout_is_read_in_logical_order(tmp_path):
    logical = np.arange(8 * 3 * 2, dtype=np.float32).reshape(8, 3, 2)
    arr = pa.FixedShapeTensorArray.from_numpy_ndarray(logical.transpose(0, 2, 1).copy().transpose(0, 2, 1))
    cols = good_columns()
    cols["b"] = arr
    raw = read_dataset(write_table(tmp_path / "t.parquet", cols))
    assert raw.modalities["b"].shape == (3, 2)
    np.testing.assert_array_equal(raw.features["b"], logical)
    np.testing.assert_array_equal(raw.features["b"], arr.to_numpy_ndarray())


def test_columns_select_rename_and_order_and_other_columns_are_ignored(tmp_path):
    cols = good_columns()
    cols["id"] = pa.array(np.arange(8))
    cols["tag"] = pa.array(["x"] * 8)
    cols["ints"] = pa.array([[1, 2]] * 8, pa.list_(pa.int64()))
    cols["target"] = cols.pop("label")
    path = write_table(tmp_path / "t.parquet", cols,
                       {"classes": ["no", "yes"], "modalities": {"a": {"kind": "sequence"}}})
    auto = read_dataset(path, label_column="target")
    assert list(auto.modalities) == ["a", "b"] and auto.classes == ["no", "yes"]
    assert auto.modalities["a"].kind == "sequence" and auto.modalities["b"].kind == "image"
    raw = read_dataset(path, columns={"img": "b", "vec": "a"}, label_column="target")
    assert list(raw.features) == ["img", "vec"]
    assert raw.modalities["img"] == ModalityInfo("img", "b", (2, 2), "image")
    np.testing.assert_array_equal(raw.features["vec"], auto.features["a"])
    np.testing.assert_array_equal(raw.labels, np.arange(8) % 2)


def test_without_split_column_and_classes_metadata(tmp_path):
    cols = good_columns()
    cols.pop("split")
    cols["label"] = pa.array([0, 3, 1, 3, 0, 1, 3, 0], pa.int8())
    raw = read_dataset(write_table(tmp_path / "t.parquet", cols))
    assert raw.split is None
    assert raw.classes == ["0", "1", "2", "3"]
    assert raw.labels.dtype == np.int64 and raw.name == "t"
    mods, meta = peek_schema(tmp_path / "t.parquet")
    assert list(mods) == ["a", "b"] and meta == {}


def test_inspect_counts_missing_values_and_has_no_splits_without_split_column(tmp_path):
    cols = good_columns()
    cols.pop("split")
    cols["a"] = vec(np.arange(24, dtype=np.float32).reshape(8, 3), mask=np.arange(8) >= 6)
    info = inspect_dataset(write_table(tmp_path / "t.parquet", cols, {"name": "toy", "source": "here"}))
    assert info["splits"] is None and info["name"] == "toy" and info["source"] == "here" and info["license"] == ""
    assert info["class_counts"] == {"0": 4, "1": 4}
    a = info["modalities"][0]
    assert (a["name"], a["missing"], a["min"], a["max"], a["mean"]) == ("a", 2, 0.0, 17.0, 8.5)
    assert info["modalities"][1]["arrow_type"].startswith("extension<arrow.fixed_shape_tensor")
