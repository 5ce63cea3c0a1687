"""The hot path does not talk to the host: transfers per epoch do not grow with the number of steps.

On the CPU a "transfer" is any call made by mmbal's own code that turns a tensor into a Python
value or a host array (``item``, ``tolist``, ``cpu``, ``numpy``, ``bool()``, ``float()``, ``int()``).
(PyTorch's optimisers read their host-side step counters with ``item``; those are not device syncs
and are not counted.) With logging once per epoch, an epoch of 5 steps and an epoch of 20 steps
must make the same number of them.
"""

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from engine.methods import METHODS
from engine.run import start_run

from methodkit import method_table

PRESET = """
name = "sync"
[data]
source = "synthetic"
[data.synthetic]
n_samples = {n}
n_classes = 3
dims = [6, 6]
[method]
{method_table}
[train]
epochs = 2
batch_size = 16
log_every = 100000
"""

CALLS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")
PROJECT = tuple(str(Path(__file__).resolve().parents[1] / d) for d in ("engine", "mmbal_cli"))


class Counter:
    def __init__(self):
        self.count = 0
        self.active = False


@pytest.fixture()
def transfers(monkeypatch):
    counter = Counter()
    for name in CALLS:
        original = getattr(torch.Tensor, name)

        def wrapped(self, *a, __original=original, **k):
            if counter.active and sys._getframe(1).f_code.co_filename.startswith(PROJECT):
                counter.count += 1
            return __original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, wrapped)
    return counter


class CountSecondEpoch:
    """A reporter that counts transfers during the steps of the second epoch only."""

    def __init__(self, counter):
        self.counter = counter

    def start(self, info): pass
    def epoch(self, epoch, epochs, values): self.counter.active = epoch == 1
    def end(self, summary): self.counter.active = False

    def progress(self, pos, n_batches, epochs, values):
        if pos.epoch == 1 and pos.batch == n_batches:
            self.counter.active = False


@pytest.mark.parametrize("method", METHODS.names())
def test_transfers_per_epoch_do_not_grow_with_steps(method, transfers, tmp_path):
    """Every registered method, with the options it cannot run without (tests/methodkit.py)."""
    counts = []
    for n in (115, 460):  # 70% train -> 5 and 20 steps of 16
        p = tmp_path / f"p{n}.toml"
        p.write_text(textwrap.dedent(PRESET.format(n=n, method_table=method_table(method))))
        transfers.count = 0
        start_run(p, runs_dir=tmp_path / "runs", reporter=CountSecondEpoch(transfers))
        counts.append(transfers.count)
    assert counts[0] == counts[1], counts
