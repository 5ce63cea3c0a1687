"""Shared pieces of the end-to-end tests: the tiny synthetic preset, an interrupting reporter, and what
two runs are compared by (their last checkpoint and their metric rows), including a finished run extended
to more epochs against the run planned for them.

``tiny_preset`` is the one small preset of the end-to-end tests; a test states only what it changes::

    tiny_preset('name = "joint"', name="nan", train={"on_nonfinite": "skip"}, monitor={"enabled": False})

``changes`` are tables merged into the preset (nested tables merge key by key); a value of ``None``
removes the key, so that the engine's default applies.
"""

from __future__ import annotations

import os
import signal
import tomllib
from pathlib import Path
from typing import Any, Callable

import torch

from engine.run import NullReporter, resume_run, start_run
from engine.store import read_metrics

from methodkit import to_toml

# 300 samples (210 train: 7 steps of 32 per epoch) of two modalities; each gets ENCODER.
SYNTHETIC = {"n_samples": 300, "n_classes": 3, "modalities": ["a", "b"], "dims": [8, 6], "unique": [1.0, 0.4],
             "noise": [0.5, 0.8]}
ENCODER = {"encoder": "mlp", "hidden": [16], "dim": 8, "dropout": 0.2}


# -- the preset -------------------------------------------------------------------------------------
def merged(base: dict, changes: dict) -> dict:
    """A new dict: ``base`` with ``changes``, nested dicts merged key by key; a ``None`` value removes the key."""
    out = dict(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = merged(out[key] if isinstance(out.get(key), dict) else {}, value)
        else:
            out[key] = value
    return out


def tiny_doc(method_table: str = 'name = "joint"', *, name: str = "tiny", seed: int | None = 3, epochs: int = 3,
             optimizer: str | None = "sgd", lr: float | None = 0.05, encoder: dict = ENCODER, **changes: Any) -> dict:
    """The tiny preset parsed (the dict ``tomllib`` would give): 300 synthetic samples of two modalities,
    ``encoder`` (a small MLP with dropout) for each modality of ``data.synthetic.modalities``, ``[method]``
    from ``method_table`` (its TOML lines), then ``changes`` merged in (see the module docstring)."""
    synthetic = merged(SYNTHETIC, changes.get("data", {}).get("synthetic") or {})
    modalities = synthetic.get("modalities", ["a", "b"])
    base = {"name": name, "seed": seed,
            "data": {"source": "synthetic", "synthetic": SYNTHETIC},
            "modalities": {m: encoder for m in modalities},
            "method": tomllib.loads(method_table),
            "train": {"epochs": epochs, "batch_size": 32, "log_every": 3, "optimizer": optimizer, "lr": lr},
            "monitor": {"max_overhead": 0.0}}   # every monitor update and evaluation: reproducible logs
    return merged(merged({}, base), changes)


def tiny_preset(method_table: str = 'name = "joint"', **options: Any) -> str:
    """:func:`tiny_doc` as TOML text (``options`` as there)."""
    return to_toml(tiny_doc(method_table, **options))


# -- runs -------------------------------------------------------------------------------------------
class InterruptAt(NullReporter):
    """Sends SIGINT to this process after optimiser step ``step`` (as Ctrl-C would)."""

    def __init__(self, step):
        self.step = step

    def progress(self, pos, n_batches, epochs, values):
        if pos.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def straight_and_cut(folder: Path, preset_text: str, step: int):
    """The preset run to its end, and run again interrupted after optimiser step ``step`` (asserted);
    returns both results. The preset is written to ``folder/preset.toml``, the runs go to ``folder/runs``."""
    preset = folder / "preset.toml"
    preset.write_text(preset_text)
    straight = start_run(preset, runs_dir=folder / "runs")
    cut = start_run(preset, runs_dir=folder / "runs", reporter=InterruptAt(step))
    assert cut.state == "interrupted"
    return straight, cut


def last_checkpoint(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """The same names, and bitwise the same tensor under each."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def metric_rows(run_dir: Path, splits: tuple[str, ...] | None = None) -> list[tuple]:
    """``(step, split, values)`` of every metrics record in the run's log (of ``splits`` only, if given), in order."""
    return [(r["step"], r["split"], r["m"]) for r in read_metrics(run_dir / "metrics.jsonl").metric_rows()
            if splits is None or r["split"] in splits]


# -- a finished run trained longer is the run planned that long -------------------------------------
def extension_preset(mods, fusion: str, dim: int, method_table: str, epochs: int) -> str:
    """Synthetic data (300 rows: 7 steps of 32 per epoch), one small MLP of width ``dim`` per modality
    (``fusion`` heads with dropout), Adam, two CPU threads."""
    n = len(mods)
    return tiny_preset(method_table, name="ext", seed=2, epochs=epochs, optimizer="adam", lr=0.01,
                       data={"synthetic": {"modalities": list(mods), "dims": [8, 6, 5][:n],
                                           "unique": [1.0, 0.5, 0.3][:n], "noise": [0.5, 0.8, 0.9][:n]}},
                       modalities={m: {"dim": dim} for m in mods},
                       model={"fusion": fusion, **({"hidden": 16, "dropout": 0.2} if fusion in ("film", "gated")
                                                   else {})},
                       train={"threads": 2})


def planned_and_extended(folder: Path, preset_for: Callable[[int], str], first: int = 1, epochs: int = 3):
    """Runs ``preset_for(epochs)`` as planned, and ``preset_for(first)`` then resumed to ``epochs``
    (``train.epochs`` raised); returns both results. The torch thread count is restored afterwards
    (the presets may set ``train.threads``)."""
    for n in (epochs, first):
        (folder / f"p{n}.toml").write_text(preset_for(n))
    threads = torch.get_num_threads()
    try:
        planned = start_run(folder / f"p{epochs}.toml", runs_dir=folder / "runs")
        short = start_run(folder / f"p{first}.toml", runs_dir=folder / "runs")
        extended = resume_run(short.run_id, [f"train.epochs={epochs}"], runs_dir=folder / "runs")
    finally:
        torch.set_num_threads(threads)
    return planned, extended


def assert_extension_is_the_planned_run(planned: Path, extended: Path) -> None:
    """The same final weights, and every record of the planned run in the extended one."""
    a, b = (last_checkpoint(r) for r in (planned, extended))
    assert same_tensors(a["model"], b["model"])
    rows = [{(step, split): m for step, split, m in metric_rows(d)} for d in (planned, extended)]
    for key, values in rows[0].items():
        assert rows[1].get(key) == values, key
