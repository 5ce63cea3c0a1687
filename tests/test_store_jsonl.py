"""metrics.jsonl: writer, tolerant reader, segment semantics and the live tail (engine.store.jsonl)."""

import json

import numpy as np
import pytest
import torch

from engine.store.jsonl import MetricsTail, MetricsWriter, read_metrics


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_records_round_trip(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        w.header("k3f9a2x1", created="2026-05-01T12:00:00")
        w.metrics(1, 0.5, "train", {"train/loss/fused": 0.75, "coef/audio": np.float32(0.5)})
        w.metrics(2, 1, "val", {"val/acc/fused": torch.tensor(0.25), "val/acc/audio": 1})
        w.event("checkpoint", 2, path="checkpoints/last.pt")
    log = read_metrics(path)
    assert log.warnings == [] and log.torn_tail is False
    assert [r["kind"] for r in log.records] == ["header", "metrics", "metrics", "event"]
    header = log.header()
    assert (header["schema"], header["run_id"], header["created"]) == (1, "k3f9a2x1", "2026-05-01T12:00:00")
    first = log.records[1]
    assert (first["step"], first["epoch"], first["split"], first["seg"]) == (1, 0.5, "train", 0)
    assert first["m"] == {"train/loss/fused": 0.75, "coef/audio": 0.5}
    assert isinstance(first["t"], float) and "nonfinite" not in first
    assert log.series("val/acc/fused") == [(2, 0.25)]
    assert log.series("train/loss/fused", split="val") == []
    assert log.latest() == {"train/loss/fused": 0.75, "coef/audio": 0.5, "val/acc/fused": 0.25, "val/acc/audio": 1.0}
    assert log.latest(split="val") == {"val/acc/fused": 0.25, "val/acc/audio": 1.0}
    assert log.events("checkpoint")[0]["path"] == "checkpoints/last.pt"
    assert log.events("best") == []


def test_each_record_is_one_line_strict_json(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        w.metrics(1, 0, "train", {"a": float("nan"), "b": 2.0, "c": float("inf")})
        w.event("nonfinite", 1, value=float("-inf"))
    raw = path.read_bytes()
    assert raw.count(b"\n") == 2 and raw.endswith(b"\n")
    assert b"NaN" not in raw and b"Infinity" not in raw
    rec, event = lines(path)
    assert rec["m"] == {"a": None, "b": 2.0, "c": None} and rec["nonfinite"] == ["a", "c"]
    assert event["value"] is None and event["nonfinite"] == ["value"]
    log = read_metrics(path)
    assert log.series("a") == [(1, None)] and log.latest() == {"a": None, "b": 2.0, "c": None}


def test_metric_values_must_be_numbers(tmp_path):
    with MetricsWriter(tmp_path / "m.jsonl") as w:
        with pytest.raises(TypeError, match="metric 'x' must be a number"):
            w.metrics(1, 0, "train", {"x": "high"})
        with pytest.raises(ValueError, match="reserved"):
            w.event("e", 1, kind="x")
    assert (tmp_path / "m.jsonl").read_bytes() == b""


def test_torn_tail_ignored_by_reader_and_cut_by_next_writer(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        w.metrics(1, 0, "train", {"loss": 1.0})
        w.metrics(2, 0, "train", {"loss": 0.5})
    with open(path, "ab") as f:
        f.write(b'{"kind":"metrics","step":3,"m":{"lo')
    log = read_metrics(path)
    assert log.torn_tail is True
    assert log.series("loss") == [(1, 1.0), (2, 0.5)]
    assert log.warnings == ["metrics.jsonl line 3: incomplete last line (35 bytes, the writer was interrupted "
                            "mid-record), ignored"]
    with MetricsWriter(path) as w:
        assert w.repaired_bytes == 35
        w.metrics(3, 0, "train", {"loss": 0.25})
    log = read_metrics(path)
    assert log.torn_tail is False and log.warnings == []
    assert log.series("loss") == [(1, 1.0), (2, 0.5), (3, 0.25)]


def test_file_with_only_a_torn_line_is_emptied(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"kind":"hea')
    with MetricsWriter(path) as w:
        assert w.offset() == 0
        w.header("abc")
    assert [r["kind"] for r in read_metrics(path).records] == ["header"]


def test_garbage_lines_are_skipped_with_their_line_number(tmp_path):
    path = tmp_path / "metrics.jsonl"
    good = '{"kind":"metrics","step":%d,"split":"val","m":{"acc":%s}}\n'
    path.write_text(
        good % (1, "0.1") + "this is not json\n" + "\n" + '[1, 2]\n' + '{"step": 5}\n'
        + '{"kind":"metrics","step":"x","m":{}}\n' + good % (2, "0.2")
    )
    log = read_metrics(path)
    assert log.series("acc", split="val") == [(1, 0.1), (2, 0.2)]
    assert log.warnings == [
        "metrics.jsonl line 2: not valid JSON, skipped",
        "metrics.jsonl line 4: a JSON list, not an object, skipped",
        "metrics.jsonl line 5: no 'kind', skipped",
        "metrics.jsonl line 6: metrics record without an integer 'step' and an 'm' object, skipped",
    ]


def test_missing_file_gives_empty_log_with_warning(tmp_path):
    log = read_metrics(tmp_path / "metrics.jsonl")
    assert log.records == [] and log.series("x") == [] and len(log.warnings) == 1
    assert "does not exist" in log.warnings[0]


def test_segment_semantics_keep_each_step_once_with_the_newest_value(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        for step in range(1, 11):
            w.metrics(step, step // 4, "val", {"acc": step / 100})
        w.resume(from_step=6, seg=1)
        assert w.segment == 1
        for step in range(7, 13):
            w.metrics(step, step // 4, "val", {"acc": 1 + step / 100})
    log = read_metrics(path)
    series = log.series("acc", split="val")
    assert [s for s, _ in series] == list(range(1, 13))
    assert series == [(s, s / 100) for s in range(1, 7)] + [(s, 1 + s / 100) for s in range(7, 13)]
    assert all(r["seg"] == 1 for r in log.metric_rows() if r["step"] > 6)
    assert log.latest()["acc"] == pytest.approx(1.12)


def test_second_resume_supersedes_both_earlier_segments(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        for step in range(1, 6):
            w.metrics(step, 0, "train", {"loss": 0.0 + step})
        w.resume(3, 1)
        for step in range(4, 8):
            w.metrics(step, 0, "train", {"loss": 10.0 + step})
        w.resume(2, 2)
        for step in range(3, 5):
            w.metrics(step, 0, "train", {"loss": 20.0 + step})
    assert read_metrics(path).series("loss") == [(1, 1.0), (2, 2.0), (3, 23.0), (4, 24.0)]


def test_truncate_to_drops_records_after_the_checkpoint_offset(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        for step in range(1, 4):
            w.metrics(step, 0, "train", {"loss": float(step)})
        checkpoint_offset = w.offset()
        w.flush_to_disk()
        for step in range(4, 6):
            w.metrics(step, 0, "train", {"loss": float(step)})
        assert w.offset() > checkpoint_offset
    with MetricsWriter(path) as w:
        w.truncate_to(checkpoint_offset)
        assert w.offset() == checkpoint_offset
        w.resume(3, 1)
        w.metrics(4, 0, "train", {"loss": 40.0})
        with pytest.raises(ValueError, match="not at the end of a line"):
            w.truncate_to(checkpoint_offset + 3)
        with pytest.raises(ValueError, match="cannot truncate"):
            w.truncate_to(10**9)
    log = read_metrics(path)
    assert [r["kind"] for r in log.records] == ["metrics"] * 3 + ["resume", "metrics"]
    assert log.series("loss") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]


def test_closed_writer_refuses_writes(tmp_path):
    w = MetricsWriter(tmp_path / "m.jsonl")
    w.close()
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.metrics(1, 0, "train", {"a": 1.0})


def test_tail_reads_appended_lines_and_completes_partial_ones(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.poll() == [] and tail.reset is False
    w = MetricsWriter(path)
    w.metrics(1, 0, "train", {"loss": 1.0})
    assert [r["step"] for r in tail.poll()] == [1]
    assert tail.poll() == []
    w.metrics(2, 0, "train", {"loss": 0.5})
    w.metrics(3, 0, "train", {"loss": 0.25})
    assert [r["step"] for r in tail.poll()] == [2, 3]
    with open(path, "ab") as f:
        f.write(b'{"kind":"event","step":3,"na')
    assert tail.poll() == []
    with open(path, "ab") as f:
        f.write(b'me":"best"}\nnot json\n')
    got = tail.poll()
    assert [(r["kind"], r["name"]) for r in got] == [("event", "best")]
    assert tail.warnings == ["metrics.jsonl line 5: not valid JSON, skipped"]
    assert tail.reset is False
    w.close()


def test_tail_resets_when_the_file_shrinks_or_is_rewritten(tmp_path):
    path = tmp_path / "metrics.jsonl"
    w = MetricsWriter(path)
    for step in range(1, 4):
        w.metrics(step, 0, "train", {"loss": float(step)})
    tail = MetricsTail(path)
    assert len(tail.poll()) == 3
    w.truncate_to(0)
    w.metrics(9, 0, "train", {"loss": 9.0})
    got = tail.poll()
    assert tail.reset is True and [r["step"] for r in got] == [9]
    assert tail.poll() == [] and tail.reset is False
    keep = w.offset()
    w.metrics(10, 0, "train", {"loss": 10.0})
    assert [r["step"] for r in tail.poll()] == [10]
    w.truncate_to(keep)  # resume: cut back, then write more than was cut
    w.resume(9, 1)
    w.metrics(10, 0, "train", {"loss": 100.0})
    got = tail.poll()
    assert tail.reset is True
    assert [(r["kind"], r.get("step")) for r in got] == [("metrics", 9), ("resume", None), ("metrics", 10)]
    w.close()


def test_tail_and_reader_agree(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        for step in range(50):
            w.metrics(step, 0, "val", {"acc": step / 50})
    tail = MetricsTail(path)
    assert tail.poll() == read_metrics(path).records
