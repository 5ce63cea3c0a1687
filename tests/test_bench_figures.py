"""``mmbal bench``'s method figures: ratios to joint measured side by side, in alternating order."""

from engine.bench import figures


def test_paired_ratio_alternates_and_takes_per_pair_ratios(monkeypatch):
    calls = []
    # the machine slows down 10x halfway: per-pair ratios still say 2, a ratio of separate medians would not
    speed = iter([1, 1, 1, 1, 10, 10, 10, 10, 10, 10])

    def fake_timed(fn, device):
        calls.append(fn.__name__)
        return {"method": 2.0, "joint": 1.0}[fn.__name__] * next(speed)

    def method():
        pass

    def joint():
        pass
    monkeypatch.setattr(figures, "timed", fake_timed)
    result = figures.paired_ratio(method, joint, "cpu", repeats=5)
    assert calls == ["method", "joint", "joint", "method", "method", "joint", "joint", "method", "method", "joint"]
    assert result["median"] == result["min"] == result["max"] == 2.0
    assert result["epoch_s"] == 20.0
