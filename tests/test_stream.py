"""Streaming data from disk (engine/data/stream.py) and the resident/stream choice (engine/data/memory.py)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import engine.data.parquet as parquet
from engine.bench.loops import DiscardingRecorder
from engine.config import load_preset
from engine.data import DataConfig, StreamData, TensorData, load_data, write_dataset
from engine.data.memory import Placement, choose_placement, resident_estimate, resident_peak
from engine.errors import DataError, PresetError
from engine.run import NullReporter, build_parts, resume_run, start_run
from engine.schema import build
from engine.train.trainer import Trainer

from runtools import InterruptAt, tiny_preset

N_FILES, ROWS_PER_FILE, GROUP = 3, 200, 40      # 15 row groups of 40 rows
ROW_BYTES = 4 * 4 + 4 * 6 + 8 + 2 + 8           # a: (4,), b: (2, 3) float32, label, 2 presence flags, index
ESTIMATE = N_FILES * ROWS_PER_FILE * ROW_BYTES   # 34_800
PEAK = resident_peak(N_FILES * ROWS_PER_FILE, [(4,), (2, 3)], GROUP)   # of loading it resident: 221_840


def write_parts(folder: Path, n_files=N_FILES, rows=ROWS_PER_FILE, group=GROUP, seed=0, nan_at=None) -> Path:
    """A dataset directory of ``n_files`` files; ``a[:, 0]`` holds the global row id (to follow rows through
    batches), the label is learnable from ``a[:, 1]`` and ``b``. ``nan_at = (file, row)`` puts a NaN in ``b``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_files * rows
    y = rng.integers(0, 3, n)
    a = rng.normal(size=(n, 4)).astype(np.float32)
    a[:, 0] = np.arange(n)
    a[:, 1] += y
    b = (rng.normal(size=(n, 2, 3)) + y[:, None, None] * 0.5).astype(np.float32)
    for f in range(n_files):
        part = slice(f * rows, (f + 1) * rows)
        bf = b[part].copy()
        if nan_at is not None and nan_at[0] == f:
            bf[nan_at[1], 1, 2] = np.nan
        tmp = folder / f"part{f}.tmp.parquet"
        write_dataset(tmp, {"a": a[part], "b": bf}, y[part], None, ["x", "y", "z"], name="parts")
        pq.write_table(pq.read_table(tmp), folder / f"part{f}.parquet", row_group_size=group)
        tmp.unlink()
    return folder


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> Path:
    return write_parts(tmp_path_factory.mktemp("stream") / "parts")


def data_cfg(path, **options) -> DataConfig:
    problems: list[str] = []
    cfg = build(DataConfig, {"path": str(path), **options}, "data", problems)
    assert not problems, problems
    return cfg


def load(path, seed=5, **options):
    return load_data(data_cfg(path, **options), None, seed, Path("."), "cpu")


def stream(path, seed=5, **options) -> StreamData:
    """Streamed data; not standardised unless asked, so that ``a[:, 0]`` is the row id."""
    options = {"mode": "stream", "shuffle_window": 3, "prefetch": 1, "standardize": "none", **options}
    data = load(path, seed, **options)
    assert isinstance(data, StreamData)
    return data


def ids(batches) -> list[np.ndarray]:
    return [x["a"][:, 0].numpy().astype(np.int64) for x, *_ in batches]


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mmbal-")]


# ----------------------------------------------------------------------------------------------
# the choice between resident and stream


def test_auto_streams_over_the_budget_and_keeps_resident_data_under_it(parts):
    assert resident_estimate(600, [(4,), (2, 3)]) == ESTIMATE
    assert PEAK == 221_840
    over = load(parts, memory_budget=PEAK - 1, shuffle_window=2, prefetch=1)
    assert isinstance(over, StreamData)
    assert over.placement == Placement("stream", PEAK, PEAK - 1, "auto", ESTIMATE)
    under = load(parts, memory_budget=PEAK)
    assert isinstance(under, TensorData)
    assert under.placement == Placement("resident", PEAK, PEAK, "auto", ESTIMATE)
    cfg = data_cfg(parts, mode="stream")
    assert choose_placement(cfg, 10, 10 ** 9, "x").mode == "stream"             # explicit mode wins
    assert choose_placement(cfg, 10, 10 ** 9, "x", forced="resident").chosen_by == "run"
    assert data_cfg(parts, memory_budget="1.5KiB").memory_budget == "1.5KiB"


def test_resident_over_the_budget_is_refused_before_reading_features(parts, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("feature data were decoded before the refusal")
    monkeypatch.setattr(parquet, "decode_features", no_decoding)
    with pytest.raises(DataError) as info:
        load(parts, mode="resident", memory_budget="1KiB")
    text = str(info.value)
    assert info.value.exit_code == 2
    assert str(parts) in text and "217 KiB" in text and f"{PEAK} bytes" in text and "34 KiB once loaded" in text
    assert "1 KiB" in text
    assert 'data.mode = "stream"' in text and "larger data.memory_budget" in text


def test_stream_working_set_over_the_budget_and_bad_options_are_refused(parts, tmp_path):
    with pytest.raises(DataError, match="lower data.shuffle_window"):
        load(parts, mode="stream", memory_budget=20_000, shuffle_window=8, prefetch=2)
    for bad in ("lots", "12 XB", 0):
        problems: list[str] = []
        build(DataConfig, {"path": "x", "memory_budget": bad}, "data", problems)
        assert problems and "memory_budget" in problems[0]
    preset = tmp_path / "s.toml"
    preset.write_text('[data]\nsource = "synthetic"\nmode = "stream"\n')
    with pytest.raises(PresetError, match="data.mode = 'stream' reads a Parquet dataset"):
        load_preset(preset)


# ----------------------------------------------------------------------------------------------
# epoch order


def test_every_train_row_once_per_epoch_with_its_label_and_the_same_split_as_resident(parts):
    data, resident = stream(parts), load(parts, mode="resident")
    train = np.sort(resident.splits["train"].numpy())
    assert data.split_size("train") == train.size and data.split_size("val") == resident.split_size("val")
    for split in ("train", "val", "test"):
        assert torch.equal(data.class_counts(split), resident.class_counts(split))
    labels = resident.y.numpy()
    for epoch in (0, 1):
        batches = list(data.train_epoch(5, epoch, 32, False).iterate(0))
        assert [b.y.numel() for b in batches] == [32] * (train.size // 32) + [train.size % 32]
        seen = np.concatenate(ids(batches))
        np.testing.assert_array_equal(np.sort(seen), train)          # each train row exactly once
        np.testing.assert_array_equal(torch.cat([b.y for b in batches]).numpy(), labels[seen])
        sample_ids = torch.cat([b.ids for b in batches]).numpy()      # train-split indices of those rows
        assert all(b.ids.dtype == torch.int64 and b.masks is None for b in batches)
        np.testing.assert_array_equal(train[sample_ids], seen)
    dropped = data.train_epoch(5, 0, 32, True)
    assert len(dropped) == train.size // 32
    assert [b.y.numel() for b in dropped.iterate(0)] == [32] * len(dropped)


def test_order_is_fixed_by_seed_and_epoch_and_shuffled_beyond_row_groups(parts):
    data = stream(parts)
    epoch = lambda seed, e: np.concatenate(ids(data.train_epoch(seed, e, 50, False).iterate(0)))
    first = epoch(5, 0)
    np.testing.assert_array_equal(first, epoch(5, 0))
    np.testing.assert_array_equal(first, np.concatenate(ids(stream(parts).train_epoch(5, 0, 50, False).iterate(0))))
    assert (first != epoch(5, 1)).any() and (first != epoch(6, 0)).any()
    groups = first // GROUP
    assert np.unique(groups[:50]).size > 1               # a batch mixes row groups
    assert (np.diff(groups) != 0).sum() > 15             # rows of a window are interleaved, not in blocks


@pytest.mark.parametrize("drop_last", [False, True])
def test_iterate_from_any_batch_is_the_tail_of_the_whole_epoch(parts, drop_last):
    data = stream(parts)
    epoch = data.train_epoch(5, 2, 24, drop_last)
    whole = list(epoch.iterate(0))
    assert len(whole) == len(epoch)
    for start in (1, 4, 5, len(epoch) - 1):   # inside a window, at and across window boundaries, the last
        tail = list(epoch.iterate(start))
        assert len(tail) == len(whole) - start
        for a, b in zip(whole[start:], tail):
            assert torch.equal(a.y, b.y) and torch.equal(a.ids, b.ids) and all(torch.equal(a.x[m], b.x[m]) for m in a.x)
    assert list(epoch.iterate(len(epoch))) == []


def test_epoch_plans_and_subset_views_are_refused_with_a_data_error_naming_resident_mode(parts):
    from engine.data import EpochPlan
    data = stream(parts)
    for attempt in (lambda: data.train_epoch(5, 0, 8, False, plan=EpochPlan(torch.arange(4))),
                    lambda: data.subset(torch.arange(4))):
        with pytest.raises(DataError, match='data.mode = "resident"') as info:
            attempt()
        assert info.value.exit_code == 2 and str(parts) in str(info.value)
    assert not reader_threads()


# ----------------------------------------------------------------------------------------------
# values: standardisation, evaluation


@pytest.mark.parametrize("standardize", ["auto", "feature", "modality"])
def test_standardiser_statistics_and_values_match_the_resident_path(parts, standardize):
    data, resident = stream(parts, standardize=standardize), load(parts, mode="resident", standardize=standardize)
    for m in ("a", "b"):
        for got, want in zip(data.stats[m], resident.stats[m]):
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    x, _ = next(iter(data.eval_batches("val", 1000)))
    val = resident.splits["val"]
    for m in ("a", "b"):
        torch.testing.assert_close(x[m], resident.x[m][val], rtol=1e-5, atol=1e-5)


def test_eval_batches_follow_row_order_across_files(parts):
    data, resident = stream(parts), load(parts, mode="resident")
    for split in ("val", "test"):
        batches = list(data.eval_batches(split, 16))
        assert all(y.numel() == 16 for _, y in batches[:-1])
        np.testing.assert_array_equal(np.concatenate(ids(batches)), resident.splits[split].numpy())
    last_file = set(range(2 * ROWS_PER_FILE, 3 * ROWS_PER_FILE))
    assert last_file & set(np.concatenate(ids(data.eval_batches("test", 64))))


# ----------------------------------------------------------------------------------------------
# the reader thread: errors and abandonment


def test_a_bad_row_group_mid_stream_is_a_data_error_naming_file_group_and_column(tmp_path):
    bad = write_parts(tmp_path / "bad", nan_at=(1, 130))        # file 1, row 130 -> row group 3
    data = stream(bad, standardize="none")                      # no statistics pass: the reader finds it
    with pytest.raises(DataError) as info:
        for _ in data.train_epoch(5, 0, 32, False).iterate(0):
            pass
    text = str(info.value)
    assert "part1.parquet" in text and "row group 3" in text and "column 'b'" in text and "row 130" in text
    assert "NaN" in text
    assert not reader_threads()
    with pytest.raises(DataError, match="row group 3"):         # with statistics, found before training
        stream(bad, standardize="auto")


def test_an_abandoned_iterator_stops_its_reader_thread(parts):
    data = stream(parts)
    it = data.train_epoch(5, 0, 8, False).iterate(0)
    next(it)
    assert reader_threads()
    it.close()
    assert not reader_threads()


# ----------------------------------------------------------------------------------------------
# runs: exact resume, evaluation against resident data


def preset_text(path: Path, epochs: int = 2) -> str:
    """The Parquet dataset at ``path`` with a budget 1 byte under the peak of loading it resident (so it streams),
    windows of 2 row groups, two small MLPs (dropout in a), Adam; monitors off."""
    return tiny_preset(name="stream", seed=4, epochs=epochs, optimizer=None,
                       data={"source": None, "synthetic": None, "path": str(path), "memory_budget": PEAK - 1,
                             "shuffle_window": 2, "prefetch": 1},
                       modalities={"b": {"dropout": None}}, monitor={"enabled": False}, train={"log_every": 4})


def last_weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_interrupted_and_resumed_stream_run_is_bitwise_identical(parts, tmp_path):
    preset = tmp_path / "stream.toml"
    preset.write_text(preset_text(parts))
    runs = tmp_path / "runs"
    straight = start_run(preset, runs_dir=runs)
    info = json.loads((straight.run_dir / "run.json").read_text())
    assert info["data_mode"] == {"mode": "stream", "estimate_bytes": PEAK, "budget_bytes": PEAK - 1,
                                 "chosen_by": "auto", "resident_bytes": ESTIMATE}
    cut = start_run(preset, runs_dir=runs, reporter=InterruptAt(17))   # 420 train rows: 14 steps per epoch
    assert cut.state == "interrupted"
    assert not reader_threads()
    state = torch.load(cut.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["position"] == {"epoch": 1, "batch": 3, "step": 17}
    # a larger budget would choose resident data now; the resumed run keeps streaming (same batches)
    resumed = resume_run(cut.run_id, ["data.memory_budget=\"1GiB\""], runs_dir=runs)
    assert resumed.state == "finished"
    assert json.loads((cut.run_dir / "run.json").read_text())["data_mode"]["mode"] == "stream"
    a, b = last_weights(straight.run_dir), last_weights(cut.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.summary["test"] == straight.summary["test"]


def test_val_and_test_metrics_of_trained_weights_equal_on_stream_and_resident_data(parts, tmp_path):
    preset = tmp_path / "eval.toml"
    preset.write_text(preset_text(parts, epochs=1))
    run = start_run(preset, runs_dir=tmp_path / "runs", reporter=NullReporter())
    cfg, _ = load_preset(preset, ['data.memory_budget="1GiB"'])
    results = {}
    for mode in ("stream", "resident"):
        data = load_data(cfg.data, cfg.columns, cfg.seed, Path(cfg.base_dir), "cpu", mode=mode)
        data, model, method = build_parts(cfg, torch.device("cpu"), data)
        model.load_state_dict(last_weights(run.run_dir))
        trainer = Trainer(cfg.train, data, model, method, torch.device("cpu"), cfg.seed, DiscardingRecorder(), cfg.monitor)
        results[mode] = {**trainer.evaluate("val"), **trainer.evaluate("test")}
    s, r = results["stream"], results["resident"]
    assert s.keys() == r.keys() and "test/acc/fused" in s
    for k in s:
        assert s[k] == pytest.approx(r[k], rel=1e-5, abs=1e-6), k
    assert {k: v for k, v in s.items() if "/acc/" in k} == {k: v for k, v in r.items() if "/acc/" in k}
