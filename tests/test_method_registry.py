"""What every registered method must do, whatever it is: the suite is parametrised over ``METHODS.names()``
(each method with the options it cannot run without, :func:`methodkit.minimal_options`) on a 2-modality
and a 3-modality tiny synthetic dataset, so a method added to the registry is tested without a line here.

a. A finished run extended to more epochs (``resume_run`` with ``train.epochs`` raised) equals a run
   planned for them: every metric row of ``metrics.jsonl``, the method's events and ``summary.json``
   are bitwise equal (CPU).
b. A run interrupted at a random step (seeded by the method's name) and resumed equals the
   uninterrupted run, the same way (``tests/test_kill_resume.py`` kills real processes).
c. The selected checkpoint is exactly the evaluated state: ``best.pt`` loaded into a fresh model and
   method (as ``Trainer.finish`` does) scores the validation metrics recorded for the selected epoch,
   and the test metrics of ``summary.json`` are that state's.
d. Every modality the method optimises learns, with every fusion: its own head's validation accuracy
   is above chance. Default suite: synthetic data (all four fusions, 0.1-0.5 s each). ``avdigits``
   (the real data, conv2d encoders) is the slow variant (``MMBAL_SLOW=1``): even with encoders small
   enough for a CPU (channels [8, 16, 32]) and 2 epochs it costs 2-3 s per method and fusion on one
   core (about 80 s for 8 methods, 5-6 minutes for 31), too much for every CI run.
e. No host synchronisation inside a step: ``tests/test_host_sync.py``, parametrised over the registry.
f. Every live value a method reports is a 0-d tensor on the device, is one of
   ``Method.live_names(modalities)`` and has a meaning in its registration (``info.meaning``), so the
   dashboard can explain it.
g. The train records are the same whether the steps' values are read when the logging interval is
   summed (the default) or at each step: no method modifies a returned value in place.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from engine.config import load_preset
from engine.data import load_data
from engine.methods import METHODS
from engine.run import resume_run, start_run
from engine.store import read_metrics, read_summary

from conftest import SHARED_DATA, needs_shared_data
from methodkit import EXERCISE, FUSIONS, THREE, TWO, Kit, preset, resolved, synthetic_table, write_preset
from runtools import InterruptAt

EPOCHS, FIRST = 3, 2            # runs train 3 epochs of 7 steps; the extended one is planned for 2 first
STEPS = EPOCHS * 7
CASES = [pytest.param(m, mods, id=f"{m}-{len(mods)}mod") for m in METHODS.names() for mods in (TWO, THREE)]
BY_FUSION = [pytest.param(m, f, id=f"{m}-{f}") for m in METHODS.names() for f in FUSIONS]
LIFECYCLE = ("checkpoint", "interrupted", "finished")   # events of the run, not of the method
SUMMARY = ("status", "steps", "epochs", "final", "best", "selected", "test", "method", "dataset", "modalities",
           "select_metric", "config_hash")


# -- the runs -------------------------------------------------------------------------------------------
def interrupt_step(method: str, mods: tuple[str, ...]) -> int:
    """The step after which the interrupted run of this case stops (seeded by the case: reproducible)."""
    return random.Random(f"{method}/{len(mods)}").randint(1, STEPS - 1)


def make_run(folder: Path, method: str, mods: tuple[str, ...], kind: str) -> Path:
    """One run directory of the case: "planned" (3 epochs), "extended" (2 epochs, then resumed with
    train.epochs = 3) or "interrupted" (3 epochs, stopped after a random step, then resumed)."""
    folder.mkdir(parents=True)
    runs = folder / "runs"
    epochs = FIRST if kind == "extended" else EPOCHS
    path = write_preset(folder / "preset.toml", preset(method, EXERCISE.get(method), modalities=mods, epochs=epochs,
                                                       name="registry"))
    reporter = InterruptAt(interrupt_step(method, mods)) if kind == "interrupted" else None
    first = start_run(path, runs_dir=runs, reporter=reporter)
    assert first.state == ("interrupted" if kind == "interrupted" else "finished"), first
    if kind == "planned":
        return first.run_dir
    more = [f"train.epochs={EPOCHS}"] if kind == "extended" else []
    assert resume_run(str(first.run_dir), more, runs_dir=runs).state == "finished"
    return first.run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """``runs(method, mods, kind)``: the run directory, made once per module."""
    root = tmp_path_factory.mktemp("registry")
    made: dict[tuple, Path] = {}

    def get(method: str, mods: tuple[str, ...], kind: str) -> Path:
        key = (method, len(mods), kind)
        if key not in made:
            made[key] = make_run(root / "-".join(map(str, key)), method, mods, kind)
        return made[key]
    return get


def outcome(run_dir: Path) -> dict:
    """What two equal runs share: effective metric rows, the method's events, the summary's results."""
    log = read_metrics(run_dir / "metrics.jsonl")
    assert log.warnings == [], log.warnings
    rows = [(r["step"], r["epoch"], r["split"], r["m"]) for r in log.metric_rows()]
    events = [(e["name"], e["step"], {k: v for k, v in e.items() if k not in ("kind", "t", "seg", "name", "step")})
              for e in log.events() if e["name"] not in LIFECYCLE]
    summary = read_summary(run_dir)
    return {"rows": rows, "events": events, "summary": {k: summary.get(k) for k in SUMMARY}}


def differences(got: dict, want: dict) -> list[str]:
    """Readable differences between two outcomes (empty when they are equal)."""
    found = []
    g_rows, w_rows = got["rows"], want["rows"]
    if [r[:3] for r in g_rows] != [r[:3] for r in w_rows]:
        found.append(f"rows (step, epoch, split): {[r[:3] for r in g_rows]} != {[r[:3] for r in w_rows]}")
    for (step, _, split, g), (_, _, _, w) in zip(g_rows, w_rows):
        for key in sorted(set(g) | set(w)):
            if g.get(key, "absent") != w.get(key, "absent"):
                found.append(f"step {step} {split} {key}: {g.get(key, 'absent')!r} != {w.get(key, 'absent')!r}")
    if got["events"] != want["events"]:
        found.append(f"events: {got['events']} != {want['events']}")
    for key in SUMMARY:
        g, w = got["summary"][key], want["summary"][key]
        if g != w:
            if isinstance(g, dict) and isinstance(w, dict):
                g, w = ({k: v for k, v in a.items() if b.get(k, "absent") != v} for a, b in ((g, w), (w, g)))
            found.append(f"summary {key}: {g!r} != {w!r}")
    return found


def assert_same_run(got: Path, want: Path, what: str) -> None:
    found = differences(outcome(got), outcome(want))
    assert not found, f"{what}: {len(found)} difference(s), the first ones:\n  " + "\n  ".join(found[:12])


# -- a, b: exact continuation ---------------------------------------------------------------------------
@pytest.mark.parametrize("method, mods", CASES)
def test_a_finished_run_extended_to_more_epochs_equals_a_run_planned_for_them(runs, method, mods):
    assert_same_run(runs(method, mods, "extended"), runs(method, mods, "planned"),
                    f"{method}: {FIRST} epochs extended to {EPOCHS} vs {EPOCHS} planned")


@pytest.mark.parametrize("method, mods", CASES)
def test_an_interrupted_and_resumed_run_equals_the_uninterrupted_one(runs, method, mods):
    run_dir = runs(method, mods, "interrupted")
    stopped = [e for e in read_metrics(run_dir / "metrics.jsonl").events("interrupted")]
    assert len(stopped) == 1, stopped
    assert_same_run(run_dir, runs(method, mods, "planned"),
                    f"{method}: interrupted after step {interrupt_step(method, mods)} and resumed vs uninterrupted")


# -- c: the selected checkpoint -------------------------------------------------------------------------
def kit_of_run(run_dir: Path) -> Kit:
    """A kit over a run's resolved configuration (the same data, split and model shapes)."""
    info = json.loads((run_dir / "run.json").read_text())
    cfg, _ = load_preset(run_dir / "preset.toml", info["overrides"])
    return Kit(cfg)


@pytest.mark.parametrize("method, mods", CASES)
def test_the_selected_checkpoint_is_exactly_the_evaluated_state(runs, method, mods):
    run_dir = runs(method, mods, "planned")
    summary = read_summary(run_dir)
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    selected = summary["selected"]["epoch"]
    assert best["epoch"] == selected >= 0
    recorded = next(r["m"] for r in read_metrics(run_dir / "metrics.jsonl").metric_rows()
                    if r["split"] == "val" and r["epoch"] == selected + 1)
    kit = kit_of_run(run_dir)
    model, state = kit.loaded(best)
    val, test = kit.evaluate("val", model, state), kit.evaluate("test", model, state)
    assert {k: v for k, v in val.items() if k.startswith("val/")} == \
        {k: v for k, v in recorded.items() if k.startswith("val/")}, f"{method}: best.pt is not the selected epoch"
    assert summary["test"] == {k: v for k, v in test.items() if k.startswith("test/")}, \
        f"{method}: the test metrics are not those of best.pt"


# -- d: every modality learns, with every fusion --------------------------------------------------------
def trained_modalities(kit: Kit) -> list[str]:
    """The modalities whose encoder the method optimises (``unimodal`` trains one)."""
    optimised = {id(p) for g in kit.optimizer.param_groups for p in g["params"]}
    return [m for m in kit.modalities if any(id(p) in optimised for p in kit.params(m).values())]


def assert_modalities_above_chance(kit: Kit, margin: float) -> None:
    kit.fit()
    val = kit.evaluate("val")
    chance = 1.0 / kit.data.n_classes
    trained = trained_modalities(kit)
    assert trained, "the method optimises no encoder"
    low = {m: round(val[f"val/acc/{m}"], 3) for m in trained if val[f"val/acc/{m}"] < chance + margin}
    assert not low, (f"{kit.method.name} with {kit.cfg.model.fusion} fusion: val accuracy of the modality heads "
                     f"{low} not above chance {chance:.3f} + {margin} (all: "
                     f"{ {k: round(v, 3) for k, v in val.items() if k.startswith('val/acc/')} })")


# Options for the learning check below where a method's paper defaults are not meant for 420 training rows:
# G-Blending's paper rule w ~ G / O^2 on the ~34 rows it holds out hands a super-epoch to whichever branch's
# noisy O is nearest 0 (engine/methods/gblending.py); its sampling-variance option is the small-data form.
SMALL_DATA = {"gblending": {"sampling_variance": True}}


@pytest.mark.parametrize("method, fusion", BY_FUSION)
def test_every_trained_modality_learns_with_every_fusion_on_synthetic_data(method, fusion, one_thread):
    """600 rows (420 train, 90 val), 3 classes, 8 epochs of 14 steps, each method with its paper's optimiser:
    each modality's head reaches about 0.55-0.75 (joint, every fusion: 0.62-0.77); the margin of 0.1 over
    chance is two standard errors of a 90-row accuracy at chance."""
    kit = Kit.build(method, SMALL_DATA.get(method), modalities=TWO, fusion=fusion, epochs=8,
                    data=synthetic_table(TWO, n_samples=600))
    assert_modalities_above_chance(kit, margin=0.1)


def avdigits_preset(method: str, fusion: str) -> dict:
    """avdigits with small conv2d encoders, Adam at 3e-3 (every method alike), 2 epochs of 76 steps."""
    encoder = {"encoder": "conv2d", "channels": [8, 16, 32], "dim": 32}
    return preset(method, modalities=("audio", "image"), fusion=fusion, epochs=2, batch_size=32, optimizer="adam",
                  lr=3e-3, data={"path": str(SHARED_DATA / "avdigits.parquet")},
                  encoders={"audio": dict(encoder), "image": dict(encoder)})


@pytest.fixture(scope="module")
def avdigits():
    """The avdigits tensors, read once for the module (every case shares them; nothing writes them)."""
    cfg = resolved(avdigits_preset("joint", "concat"))
    return load_data(cfg.data, cfg.columns, cfg.seed, Path(cfg.base_dir), torch.device("cpu"))


@pytest.mark.slow
@needs_shared_data
@pytest.mark.parametrize("method, fusion", BY_FUSION)
def test_every_trained_modality_learns_with_every_fusion_on_avdigits(method, fusion, avdigits, one_thread):
    """10 classes, 270 validation rows: the margin of 0.05 over chance is about three standard errors."""
    kit = Kit(resolved(avdigits_preset(method, fusion)), data=avdigits)
    assert_modalities_above_chance(kit, margin=0.05)


# -- f: live values the dashboard can explain -----------------------------------------------------------
@pytest.mark.parametrize("method, mods", CASES)
def test_live_values_are_declared_and_explained(method, mods, one_thread):
    kit = Kit.build(method, modalities=mods, epochs=2)
    kit.fit()
    cls, info = METHODS.get(method), METHODS.entry(method).info
    declared = set(cls.live_names(list(mods)))
    unexplained = sorted(n for n in declared if not info.meaning(n))
    assert not unexplained, f"{method}: live_names without a meaning in info.live: {unexplained}"
    reported = {k for live in kit.lives for k in live}
    per_epoch = {k for values in kit.epoch_values for k in values}
    assert reported, f"{method} reported no live value"
    undeclared = sorted((reported | per_epoch) - declared)
    assert not undeclared, f"{method}: reported but not among live_names({list(mods)}): {undeclared}"
    bad = sorted({k for live in kit.lives for k, v in live.items()
                  if not (isinstance(v, torch.Tensor) and v.dim() == 0 and v.device == kit.device)})
    assert not bad, f"{method}: live values that are not 0-d tensors on the device: {bad}"


# -- g: train values read when the interval is summed ---------------------------------------------------
@pytest.mark.parametrize("method", METHODS.names())
def test_train_values_read_at_the_interval_equal_those_read_at_each_step(method, one_thread):
    """The interval reads each step's loss, live values and logits when it is summed, not at the step
    (``engine.train.interval``): a method that modified one of them in place after its step (an
    accumulator returned as a live value) would log other values than it computed. The same run with
    every step's values read at once (``RunningSums.copy``, as under CUDA graphs) gives the same train
    records (float64 sums in another order: equal to 1e-12)."""
    records = []
    for copy in (False, True):   # each kit built right before its fit: the same global RNG state
        kit = Kit.build(method, EXERCISE.get(method), modalities=TWO, epochs=EPOCHS)
        kit.trainer.interval.copy = copy
        kit.fit()
        records.append(kit.recorder.split("train"))
    deferred, immediate = records
    assert [sorted(r) for r in deferred] == [sorted(r) for r in immediate]
    assert len(deferred) >= EPOCHS
    for got, want in zip(deferred, immediate):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), f"{method}: {key}"
