"""Splitting, standardisation, device tensors, batch order and the writer's round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from engine.data import (DataConfig, RawDataset, SynthConfig, TensorData, batch_slices, epoch_permutation, generate,
                         load_data, read_dataset, stratified_split, to_tensors, write_dataset)
from engine.data.parquet import ModalityInfo
from engine.errors import DataError
from engine.schema import build


# ----------------------------------------------------------------------------------------------
# stratified split


def test_stratified_split_has_exact_per_class_proportions():
    labels = np.repeat(np.arange(4), [100, 40, 20, 3])
    codes = stratified_split(labels, 0.2, 0.1, seed=7)
    assert codes.dtype == np.int8 and codes.shape == labels.shape
    counts = np.stack([np.bincount(codes[labels == c], minlength=3) for c in range(4)])
    np.testing.assert_array_equal(counts, [[70, 20, 10], [28, 8, 4], [14, 4, 2], [1, 1, 1]])


def test_stratified_split_is_seeded():
    labels = np.random.default_rng(0).integers(0, 5, size=500)
    a = stratified_split(labels, 0.15, 0.15, seed=3)
    np.testing.assert_array_equal(a, stratified_split(labels, 0.15, 0.15, seed=3))
    b = stratified_split(labels, 0.15, 0.15, seed=4)
    assert (a != b).any()
    np.testing.assert_array_equal(np.bincount(a), np.bincount(b))


def test_stratified_split_small_classes():
    labels = np.array([0, 0, 0, 1, 1, 2])
    codes = stratified_split(labels, 0.15, 0.15, seed=0)
    assert sorted(codes[labels == 0]) == [0, 1, 2]
    assert list(codes[labels == 1]) == [0, 0] and list(codes[labels == 2]) == [0]


# ----------------------------------------------------------------------------------------------
# to_tensors: split, standardisation, presence, device


def _raw(features, labels, split=None, present=None) -> RawDataset:
    mods = {m: ModalityInfo(m, m, tuple(v.shape[1:]), "vector" if v.ndim == 2 else "image")
            for m, v in features.items()}
    present = present or {m: np.ones(len(labels), bool) for m in features}
    return RawDataset(name="toy", source="toy.parquet", labels=np.asarray(labels, np.int64), split=split,
                      features=features, present=present, modalities=mods,
                      classes=[str(i) for i in range(int(np.max(labels)) + 1)])


def _shifted(n=600, seed=0):
    """Train rows ~ N(3, 2^2) per feature; val/test rows shifted by +10."""
    rng = np.random.default_rng(seed)
    split = np.array([0, 0, 0, 0, 1, 2] * (n // 6), np.int8)
    vec = (3 + 2 * rng.standard_normal((n, 4)) + 10 * (split != 0)[:, None]).astype(np.float32)
    img = (5 + 0.5 * rng.standard_normal((n, 2, 3)) + 10 * (split != 0)[:, None, None]).astype(np.float32)
    return vec, img, split, rng.integers(0, 3, n)


def test_standardisation_uses_train_rows_only():
    vec, img, split, labels = _shifted()
    data = to_tensors(_raw({"v": vec, "i": img}, labels, split), DataConfig(path="x"), seed=0, device="cpu")
    train, val = data.splits["train"], data.splits["val"]
    v = data.x["v"]
    torch.testing.assert_close(v[train].mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(v[train].std(0, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    assert (v[val].mean(0) > 3).all()          # val is 10 above train; it was not fitted
    mean, std = data.stats["v"]
    assert mean.shape == (4,) and std.shape == (4,)
    torch.testing.assert_close(mean, torch.as_tensor(vec[split == 0].mean(0)), atol=1e-4, rtol=0)
    # auto: a tensor modality gets one scalar (mean, std)
    mean_i, std_i = data.stats["i"]
    assert mean_i.shape == (1, 1) and abs(float(mean_i) - img[split == 0].mean()) < 1e-4
    assert abs(float(data.x["i"][train].mean())) < 1e-4 and abs(float(data.x["i"][train].std()) - 1) < 1e-2


@pytest.mark.parametrize("mode, mean_shape", [("feature", (2, 3)), ("modality", (1, 1)), ("none", (1, 1))])
def test_standardize_modes(mode, mean_shape):
    vec, img, split, labels = _shifted()
    data = to_tensors(_raw({"v": vec, "i": img}, labels, split), DataConfig(path="x", standardize=mode), 0, "cpu")
    assert data.stats["i"][0].shape == mean_shape
    if mode == "none":
        np.testing.assert_array_equal(data.x["i"].numpy(), img)
    else:
        assert abs(float(data.x["i"][data.splits["train"]].mean())) < 1e-4


def test_constant_feature_is_centred_not_blown_up_and_missing_rows_stay_zero():
    n = 60
    labels = np.arange(n) % 2
    split = np.array([0, 0, 0, 0, 1, 2] * (n // 6), np.int8)
    a = np.ones((n, 2), np.float32)
    a[split != 0, 0] = 1.5                       # constant on train, different elsewhere
    b = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    present_b = np.arange(n) % 3 != 0
    b[~present_b] = 0.0
    raw = _raw({"a": a, "b": b}, labels, split, {"a": np.ones(n, bool), "b": present_b})
    data = to_tensors(raw, DataConfig(path="x"), 0, "cpu")
    assert float(data.stats["a"][1][0]) == 1.0
    torch.testing.assert_close(data.x["a"][data.splits["val"], 0], torch.full((10,), 0.5))
    assert (data.x["b"][torch.as_tensor(~present_b)] == 0).all()
    rows = (split == 0) & present_b
    torch.testing.assert_close(data.stats["b"][0], torch.as_tensor(b[rows].mean(0)))
    np.testing.assert_array_equal(data.present["b"].numpy(), present_b)


def test_to_tensors_without_split_column_uses_split_seed_or_run_seed():
    vec, img, _, labels = _shifted()
    raw = _raw({"v": vec, "i": img}, labels)
    d1 = to_tensors(raw, DataConfig(path="x"), seed=5, device="cpu")
    d2 = to_tensors(raw, DataConfig(path="x", split_seed=5), seed=99, device="cpu")
    d3 = to_tensors(raw, DataConfig(path="x"), seed=6, device="cpu")
    expected = stratified_split(labels, 0.15, 0.15, 5)
    for name, code in (("train", 0), ("val", 1), ("test", 2)):
        np.testing.assert_array_equal(d1.splits[name].numpy(), np.flatnonzero(expected == code))
        assert torch.equal(d1.splits[name], d2.splits[name])
        assert d1.splits[name].dtype == torch.int64
    assert not torch.equal(d1.splits["val"], d3.splits["val"])
    assert sum(len(s) for s in d1.splits.values()) == 600


def test_empty_split_after_stratification_is_a_data_error():
    raw = _raw({"a": np.zeros((4, 2), np.float32), "b": np.zeros((4, 2), np.float32)}, [0, 0, 1, 1])
    with pytest.raises(DataError, match="no val and no test rows"):
        to_tensors(raw, DataConfig(path="x"), 0, "cpu")


def test_tensor_data_batch_and_properties():
    vec, img, split, labels = _shifted()
    data = to_tensors(_raw({"v": vec, "i": img}, labels, split), DataConfig(path="x"), 0, "cpu")
    assert isinstance(data, TensorData)
    assert data.n_classes == 3 and data.shapes == {"v": (4,), "i": (2, 3)}
    assert data.x["v"].dtype == torch.float32 and data.y.dtype == torch.int64
    idx = torch.tensor([5, 0, 17])
    xb, yb = data.batch(idx)
    assert torch.equal(xb["i"], data.x["i"][idx]) and torch.equal(yb, torch.as_tensor(labels[[5, 0, 17]]))
    assert xb["v"].shape == (3, 4)


def test_load_data_resolves_relative_path_and_synthetic(tmp_path):
    raw = generate(SynthConfig(n_samples=200, seed=3))
    write_dataset(tmp_path / "syn.parquet", raw.features, raw.labels, raw.split, raw.classes, "syn")
    from_file = load_data(DataConfig(path="syn.parquet"), {"first": "a", "second": "b"}, 0, tmp_path, "cpu")
    assert list(from_file.x) == ["first", "second"] and from_file.name == "syn"
    generated = load_data(DataConfig(source="synthetic", synthetic=SynthConfig(n_samples=200, seed=3)),
                          {"first": "a", "second": "b"}, 0, Path("/nonexistent"), "cpu")
    for m in ("first", "second"):
        torch.testing.assert_close(from_file.x[m], generated.x[m])
    assert torch.equal(from_file.splits["test"], generated.splits["test"])
    with pytest.raises(DataError, match="no modality 'c'"):
        load_data(DataConfig(source="synthetic"), {"x": "a", "y": "c"}, 0, tmp_path, "cpu")


def test_data_config_validation():
    problems: list[str] = []
    assert build(DataConfig, {"source": "parquet"}, "data", problems) is None
    assert problems == ["data: data.path is required when data.source = 'parquet'"]
    problems = []
    assert build(DataConfig, {"standardize": "features", "path": "x"}, "data", problems) is None
    assert "did you mean 'feature'" in problems[0]
    cfg = build(DataConfig, {"source": "synthetic", "synthetic": {"n_classes": 3}}, "data", [])
    assert cfg.synthetic.n_classes == 3 and cfg.path is None and cfg.mode == "auto"
    with pytest.raises(ValueError, match="below 1"):
        DataConfig(path="x", val_fraction=0.5, test_fraction=0.5)


# ----------------------------------------------------------------------------------------------
# batch order


def test_epoch_permutation_is_reproducible_and_differs_across_epochs_and_seeds():
    p = epoch_permutation(1000, seed=1, epoch=0, device="cpu")
    assert p.dtype == torch.int64 and torch.equal(torch.sort(p).values, torch.arange(1000))
    assert torch.equal(p, epoch_permutation(1000, seed=1, epoch=0, device="cpu"))
    assert not torch.equal(p, epoch_permutation(1000, seed=1, epoch=1, device="cpu"))
    assert not torch.equal(p, epoch_permutation(1000, seed=2, epoch=0, device="cpu"))
    assert not torch.equal(epoch_permutation(1000, seed=0, epoch=1, device="cpu"),
                           epoch_permutation(1000, seed=1, epoch=0, device="cpu"))
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(p, epoch_permutation(1000, seed=1, epoch=0, device="cpu"))


@pytest.mark.parametrize("n, batch, drop_last, sizes", [
    (10, 4, False, [4, 4, 2]), (10, 4, True, [4, 4]), (8, 4, True, [4, 4]), (3, 4, True, []), (3, 4, False, [3]),
    (0, 4, False, []),
])
def test_batch_slices_cover_every_index_once(n, batch, drop_last, sizes):
    perm = epoch_permutation(n, 0, 0, "cpu")
    slices = batch_slices(perm, batch, drop_last)
    assert [len(s) for s in slices] == sizes
    joined = torch.cat(slices) if slices else torch.empty(0, dtype=torch.int64)
    assert torch.equal(joined, perm[:sum(sizes)])
    if not drop_last:
        assert torch.equal(torch.sort(joined).values, torch.arange(n))
    assert all(s.untyped_storage().data_ptr() == perm.untyped_storage().data_ptr() for s in slices)  # views


# ----------------------------------------------------------------------------------------------
# writer round trip


def test_writer_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(30, 4, 5)).astype(np.float32)
    vec = rng.normal(size=(30, 7)).astype(np.float32)
    labels = np.arange(30) % 3
    split = np.array(["train", "train", "val", "test", "train"] * 6)
    present = {"vec": np.arange(30) % 7 != 1}
    path = tmp_path / "rt.parquet"
    write_dataset(path, {"audio": audio, "vec": vec}, labels, split, ["x", "y", "z"], "rt",
                  kinds={"audio": "spectrogram"}, source="unit test", license="CC0", present=present)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rt.parquet"]   # no temp file left behind
    schema = pq.read_schema(path)
    assert isinstance(schema.field("audio").type, pa.FixedShapeTensorType)
    assert schema.field("audio").type.shape == [4, 5]
    assert pa.types.is_fixed_size_list(schema.field("vec").type) and schema.field("vec").type.list_size == 7
    raw = read_dataset(path)
    np.testing.assert_array_equal(raw.features["audio"], audio)
    np.testing.assert_array_equal(raw.features["vec"][present["vec"]], vec[present["vec"]])
    np.testing.assert_array_equal(raw.present["vec"], present["vec"])
    np.testing.assert_array_equal(raw.labels, labels)
    np.testing.assert_array_equal(raw.split, np.array([0, 0, 1, 2, 0] * 6))
    assert raw.metadata == {"format": 1, "name": "rt", "classes": ["x", "y", "z"],
                            "modalities": {"audio": {"kind": "spectrogram", "shape": [4, 5]},
                                           "vec": {"kind": "vector", "shape": [7]}},
                            "source": "unit test", "license": "CC0"}
    assert raw.modalities["audio"] == ModalityInfo("audio", "audio", (4, 5), "spectrogram")
    # codes instead of strings, no split, overwriting the same file
    write_dataset(path, {"a": vec.astype(np.float64), "b": audio}, labels, None, None, "rt2")
    again = read_dataset(path)
    assert again.split is None and again.classes == ["0", "1", "2"] and again.name == "rt2"
    np.testing.assert_array_equal(again.features["a"], vec)
    write_dataset(path, {"a": vec, "b": audio}, labels, np.array([0, 1, 2] * 10, np.int8), None, "rt3")
    np.testing.assert_array_equal(read_dataset(path).split, [0, 1, 2] * 10)
