"""The interval's device-side sums: values by name, and batch accuracies from the steps' logits,
counted as integer hits; the waiting steps summed in any grouping give the same means."""

import pytest
import torch

from engine.train.interval import RunningSums

KEYS = ("train/acc/fused", "train/acc/a")
C = 4


def steps():
    """(hit masks (2, B), logits [2 x (B, C)], labels (B,)) of six steps: batch sizes 8, 8, 8, 5, 8, 5."""
    g = torch.Generator().manual_seed(0)
    out = []
    for b in (8, 8, 8, 5, 8, 5):
        hits = torch.rand(2, b, generator=g) > 0.4
        y = torch.randint(0, C, (b,), generator=g)
        pred = torch.where(hits, y, (y + 1) % C)        # right where the mask says so
        logits = torch.rand(2, b, C, generator=g) + 2 * torch.nn.functional.one_hot(pred, C)
        out.append((hits, list(logits.unbind()), y))
    return out


def expected(data):
    per_step = torch.stack([m.double().mean(1) for m, _, _ in data])   # each step's batch accuracy
    return per_step.mean(0)


def feed(sums, data, loss=lambda i: torch.tensor(float(i))):
    for i, (_, logits, y) in enumerate(data):
        sums.add_values(("train/loss/method",), [loss(i)])
        sums.add_predictions(KEYS, logits, y)


@pytest.mark.parametrize("grouping", ["at read", "every 2 steps", "every step (copy)"])
def test_accuracies_and_values_are_the_means_of_the_steps_whatever_the_grouping(grouping):
    sums = RunningSums(torch.device("cpu"), copy=grouping == "every step (copy)")
    if grouping == "every 2 steps":
        sums.MAX_WAITING_STEPS = 2
    data = steps()
    feed(sums, data)
    if grouping == "at read":
        assert sum(map(len, sums._predictions.values())) == len(data) and len(sums._waiting) == len(data)
    else:
        assert sum(map(len, sums._predictions.values())) < 2 and len(sums._waiting) < 2
    means = sums.means()
    assert torch.allclose(torch.stack([means[k] for k in KEYS]), expected(data), rtol=0, atol=1e-12)
    assert means["train/loss/method"].item() == sum(range(len(data))) / len(data)


def test_waiting_logits_are_counted_before_they_pass_the_element_bound():
    sums = RunningSums(torch.device("cpu"))
    sums.MAX_WAITING_ELEMENTS = 2 * 8 * C   # one step of batch 8 waits; the second is counted with it
    data = steps()
    feed(sums, data[:2])
    assert sums._predictions == {} and int(sums._hits[8].sum()) == int(data[0][0].sum() + data[1][0].sum())


def test_a_change_of_value_names_mid_interval_keeps_each_names_mean():
    sums = RunningSums(torch.device("cpu"))
    sums.add_values(("a", "b"), [torch.tensor(1.0), torch.tensor(10.0)])
    sums.add_values(("a", "b"), [torch.tensor(3.0), torch.tensor(20.0)])
    sums.add_values(("a",), [torch.tensor(5.0)])
    means = sums.means()
    assert means["a"].item() == 3.0 and means["b"].item() == 15.0


def test_a_checkpoint_mid_interval_gives_the_same_means_bit_for_bit():
    data = steps()
    whole = RunningSums(torch.device("cpu"))
    feed(whole, data)
    first = RunningSums(torch.device("cpu"))
    feed(first, data[:3])
    resumed = RunningSums(torch.device("cpu"))
    resumed.load_state_dict(first.state_dict())
    feed(resumed, data[3:], loss=lambda i: torch.tensor(float(i + 3)))
    a, b = whole.means(), resumed.means()
    assert all(torch.equal(a[k], b[k]) for k in (*KEYS, "train/loss/method"))


def test_accuracy_sums_of_an_older_checkpoint_are_merged_by_name():
    data = steps()
    old = RunningSums(torch.device("cpu"))   # the format before hit counts: accuracies summed as floats
    old.load_state_dict({"sums": {KEYS[0]: torch.tensor(1.5, dtype=torch.float64)}, "counts": {KEYS[0]: 2},
                         "count": 2})
    for _, logits, y in data:
        old.add_predictions(KEYS, logits, y)
    means = old.means()
    want = (1.5 + expected(data)[0].item() * len(data)) / (2 + len(data))
    assert abs(means[KEYS[0]].item() - want) < 1e-12
    assert abs(means[KEYS[1]].item() - expected(data)[1].item()) < 1e-12
