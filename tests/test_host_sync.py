"""The hot path does not talk to the host: transfers per epoch do not grow with the number of steps.

On the CPU a "transfer" is any call made by mmbal's own code that turns a tensor into a Python
value or a host array (``item``, ``tolist``, ``cpu``, ``numpy``, ``bool()``, ``float()``, ``int()``).
(PyTorch's optimisers read their host-side step counters with ``item``; those are not device syncs
and are not counted.) With logging once per epoch, an epoch of 5 steps and an epoch of 20 steps
must make the same number of them.
"""

import sys
from pathlib import Path

import pytest
import torch

from engine.methods import METHODS
from engine.run import start_run

from methodkit import method_table
from runtools import tiny_preset

CALLS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")
PROJECT = tuple(str(Path(__file__).resolve().parents[1] / d) for d in ("engine", "mmbal_cli"))


def preset(n: int, method: str) -> str:
    """``n`` synthetic samples, the engine's default encoders, 2 epochs of batches of 16, one log per epoch."""
    return tiny_preset(method_table(method), name="sync", seed=None, epochs=2, optimizer=None, lr=None,
                       modalities=None, data={"synthetic": {"n_samples": n, "modalities": None, "dims": [6, 6],
                                                             "unique": None, "noise": None}},
                       train={"batch_size": 16, "log_every": 100000})


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
        p.write_text(preset(n, method))
        transfers.count = 0
        start_run(p, runs_dir=tmp_path / "runs", reporter=CountSecondEpoch(transfers))
        counts.append(transfers.count)
    assert counts[0] == counts[1], counts
