"""mses: each modality's smoothed validation metric decides when it stops; a stopped modality's encoder is
rolled back to its best epoch and then frozen bitwise (parameters and BatchNorm statistics) under SGD with
momentum and weight decay and under AdamW; the run ends when every modality has stopped, and a run
resumed across a stop is the uninterrupted one."""

import pytest
import torch
import torch.nn.functional as F

from engine.methods import mses
from engine.methods.mses import ModalityStopper
from engine.run import resume_run, start_run
from engine.store import read_metrics

from methodkit import THREE, TWO, Kit
from runtools import InterruptAt, assert_extension_is_the_planned_run, planned_and_extended, tiny_preset

BN_MLP = {"encoder": "mlp", "hidden": [16], "dim": 8, "dropout": 0.2, "norm": "batchnorm"}


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit pattern (so -0.0 and +0.0 differ)."""
    return t.view(torch.int32) if t.dtype == torch.float32 else t


def losses(kit: Kit, **per_modality: float) -> dict[str, float]:
    return {f"val/loss/{m}": v for m, v in per_modality.items()}


# -- the rule ---------------------------------------------------------------------------------------------
def test_the_smoothed_metric_uses_the_previous_raw_value_and_stops_after_the_patience():
    stopper = ModalityStopper(lower_is_better=True, patience=1, smoothing=0.6)
    raw = [1.0, 0.8, 0.9, 0.85, 0.95]
    decisions = [stopper.observe(epoch, v) for epoch, v in enumerate(raw)]
    # s = 1.0, .6*1.0+.4*.8 = .92, .6*.8+.4*.9 = .84, .6*.9+.4*.85 = .88, .6*.85+.4*.95 = .89
    assert stopper.score == pytest.approx(0.89)
    assert decisions == ["improved", "improved", "improved", "waiting", "stopped"]
    assert (stopper.best, stopper.best_epoch, stopper.stopped_at) == (pytest.approx(0.84), 2, 4)
    # the raw minimum is epoch 1 (0.8); with the smoothed value of an EMA (.6 * s + .4 * v) epoch 2 would be .872


def test_accuracy_is_better_when_higher_and_patience_zero_stops_at_the_first_non_improvement():
    stopper = ModalityStopper(lower_is_better=False, patience=0, smoothing=0.0)
    assert [stopper.observe(e, v) for e, v in enumerate([0.5, 0.6, 0.6])] == ["improved", "improved", "stopped"]


def test_a_stopped_modality_is_rolled_back_to_its_best_epoch_and_the_run_ends_when_all_have_stopped():
    kit = Kit.build("mses", {"patience": 0, "smoothing": 0.0}, dropout=0.0)
    method, model = kit.method, kit.model
    assert method.on_epoch_end(0, model, losses(kit, a=1.0, b=1.0)) == []
    at_best = {k: v.clone() for k, v in model.encoders["a"].state_dict().items()}
    for _ in range(3):
        kit.step()
    assert any(not torch.equal(v, at_best[k]) for k, v in model.encoders["a"].state_dict().items())
    events = method.on_epoch_end(1, model, losses(kit, a=1.5, b=0.5))
    assert events == [{"name": "modality_stopped", "modality": "a", "best_epoch": 0, "best": 1.0, "restored": True}]
    assert all(torch.equal(v, at_best[k]) for k, v in model.encoders["a"].state_dict().items())
    assert method.frozen == ["a"] and method.end_reason is None
    values = method.epoch_values()
    assert values["method/frozen_a"] == 1.0 and values["method/frozen_b"] == 0.0 and values["method/wait_a"] == 1.0
    assert kit.step().live["coef/a"].item() == 0.0
    method.on_epoch_end(2, model, losses(kit, a=0.1, b=0.7))    # a stays stopped even though it improves
    assert method.frozen == ["a", "b"] and "a at epoch 1" in method.end_reason and "b at epoch 2" in method.end_reason


def test_without_restore_best_a_stopped_encoder_is_frozen_where_it_is_and_no_copy_is_kept():
    kit = Kit.build("mses", {"patience": 0, "restore_best": False}, dropout=0.0)
    kit.method.on_epoch_end(0, kit.model, losses(kit, a=1.0, b=1.0))
    kit.step()
    now = {k: v.clone() for k, v in kit.model.encoders["a"].state_dict().items()}
    assert kit.method.on_epoch_end(1, kit.model, losses(kit, a=2.0, b=0.5))[0]["restored"] is False
    assert all(torch.equal(v, now[k]) for k, v in kit.model.encoders["a"].state_dict().items())
    assert kit.method.state_dict()["best_encoders"] == {}


# -- frozen: no update at all ---------------------------------------------------------------------------
OPTIMISERS = [pytest.param("sgd", {"momentum": 0.9, "weight_decay": 1e-2}, id="sgd-momentum-wd"),
              pytest.param("adamw", {"weight_decay": 1e-2}, id="adamw")]


def frozen_kit(optimizer: str, train: dict) -> Kit:
    """Encoders with BatchNorm and dropout; a trained a few steps, then stopped (patience 0) and rolled back,
    with some of its weights set to -0.0 (a zero learning rate would turn them into +0.0)."""
    kit = Kit.build("mses", {"patience": 0}, optimizer=optimizer, train=train,
                    encoders={m: dict(BN_MLP) for m in TWO})
    kit.method.on_epoch_end(0, kit.model, losses(kit, a=1.0, b=1.0))
    for _ in range(3):
        kit.step()
    kit.method.on_epoch_end(1, kit.model, losses(kit, a=2.0, b=0.5))
    with torch.no_grad():
        next(iter(kit.params("a").values()))[0].fill_(-0.0)
    return kit


@pytest.mark.parametrize("optimizer, train", OPTIMISERS)
def test_a_frozen_encoder_is_bitwise_unchanged_over_further_steps(optimizer, train):
    kit = frozen_kit(optimizer, train)
    assert kit.method.frozen == ["a"]
    before = kit.snapshot()
    for _ in range(5):
        result = kit.step()
    changed = kit.changed(before)
    encoder_a = [k for k in before if k.startswith("encoders.a.")]
    assert any(k.endswith("running_mean") for k in encoder_a)
    for k in encoder_a:
        assert torch.equal(bits(kit.snapshot()[k]), bits(before[k])), k
    assert any(k.startswith("encoders.b.") and "running" in k for k in changed)   # b's BatchNorm still learns
    assert any(k.startswith("encoders.b.") for k in changed) and any(k.startswith("fusion.") for k in changed)
    assert result.live["coef/a"].item() == 0.0 and result.live["coef/b"].item() == 1.0


@pytest.mark.parametrize("optimizer, train", OPTIMISERS)
def test_a_zero_gradient_as_in_the_release_would_still_move_the_frozen_encoder(optimizer, train, monkeypatch):
    """The release multiplies a stopped modality's gradients by 0: momentum, weight decay and Adam's first
    moment still move the weights, which is why mses removes the gradients instead."""
    kit = frozen_kit(optimizer, train)
    monkeypatch.setattr(mses, "drop_gradients", lambda params: [p.grad.zero_() for p in params])
    before = kit.snapshot()
    for _ in range(2):
        kit.step()
    assert any(k.startswith("encoders.a.") and k.endswith("weight") for k in kit.changed(before))


def test_a_zero_learning_rate_is_not_a_bitwise_freeze():
    """scale_lr(group, 0) keeps the values but not the bits: p - 0 * buf turns some -0.0 into +0.0."""
    p = torch.nn.Parameter(torch.full((64,), -0.0))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=1e-2)
    p.grad = torch.randn(64, generator=torch.Generator().manual_seed(0))
    opt.param_groups[0]["lr"] = 0.0
    opt.step()
    assert torch.equal(p.detach(), torch.zeros(64)) and not torch.equal(bits(p.detach()), bits(torch.full((64,), -0.0)))


# -- the loss -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_the_loss_is_the_fused_plus_the_weighted_unimodal_cross_entropies(fusion):
    kit = Kit.build("mses", {"unimodal_weight": 0.5}, fusion=fusion, dropout=0.0)
    x, y = kit.batch(12)
    out = kit.model(x)
    expected = F.cross_entropy(out.fused, y) + 0.5 * (F.cross_entropy(out.logits["a"], y)
                                                      + F.cross_entropy(out.logits["b"], y))
    result = kit.step(x, y)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert "method/head_ce" not in result.live and result.live["coef/a"].item() == 1.0


def test_with_unimodal_weight_zero_the_loss_is_the_fused_one_and_the_side_heads_learn_apart():
    kit = Kit.build("mses", {"unimodal_weight": 0.0}, fusion="gated", dropout=0.0)
    x, y = kit.batch(12)
    expected = F.cross_entropy(kit.model(x).fused, y)
    result = kit.step(x, y)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6) and "method/head_ce" in result.live


# -- runs -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mods", [TWO, THREE], ids=["2mod", "3mod"])
def test_a_run_freezes_stopped_modalities_at_their_best_epoch_and_ends_early(mods, one_thread):
    kit = Kit.build("mses", {"patience": 1, "metric": "acc"}, modalities=mods, epochs=12)
    after_epoch: list[dict] = []
    on_epoch_end = kit.method.on_epoch_end

    def recording(epoch, model, val):
        after_epoch.append({m: {k: v.clone() for k, v in model.encoders[m].state_dict().items()} for m in mods})
        return on_epoch_end(epoch, model, val)

    kit.method.on_epoch_end = recording
    kit.fit()
    stops = {f["modality"]: f for name, _, f in kit.recorder.events if name == "modality_stopped"}
    assert set(stops) == set(mods), stops
    assert [name for name, _, _ in kit.recorder.events].count("method_end") == 1
    assert len(kit.recorder.split("val")) == len(after_epoch) < 12
    for m, f in stops.items():   # the final encoder is the one of its best epoch
        final = kit.model.encoders[m].state_dict()
        assert all(torch.equal(final[k], v) for k, v in after_epoch[f["best_epoch"]][m].items()), m
    last_stop = max(kit.method.stoppers[m].stopped_at for m in mods)
    first_stop = min(kit.method.stoppers[m].stopped_at for m in mods)
    assert last_stop == len(after_epoch) - 1
    steps = len(kit.lives) // len(after_epoch)
    first = min(mods, key=lambda m: kit.method.stoppers[m].stopped_at)
    assert all(live[f"coef/{first}"].item() == 0.0 for live in kit.lives[(first_stop + 1) * steps:])
    assert all(live[f"coef/{first}"].item() == 1.0 for live in kit.lives[:(first_stop + 1) * steps])


def resumable_preset(epochs: int) -> str:
    """Two modalities (synthetic, 7 steps per epoch), Adam, one thread; b stops after epoch 2, a after 6."""
    return tiny_preset('name = "mses"\npatience = 1\nmetric = "acc"', name="ext", seed=2, epochs=epochs,
                       optimizer="adam", lr=0.01, modalities={m: {"dim": 8} for m in TWO}, train={"threads": 1})


def test_runs_resumed_across_a_stop_are_the_uninterrupted_run(tmp_path):
    """Extended from 2 to 8 epochs, and interrupted in epoch 2: the stops (epochs 2 and 6) come after the
    resume, so the stoppers and the best-epoch encoders come from the checkpoint."""
    planned, extended = planned_and_extended(tmp_path, resumable_preset,
                                             first=2, epochs=8)
    assert_extension_is_the_planned_run(planned.run_dir, extended.run_dir)
    stops = [[(e["step"], e["modality"]) for e in read_metrics(r.run_dir / "metrics.jsonl").events()
              if e["name"] == "modality_stopped"] for r in (planned, extended)]
    assert stops[0] == stops[1] and len(stops[0]) == 2 and min(s for s, _ in stops[0]) > 2 * 7
    threads = torch.get_num_threads()
    try:
        first = start_run(tmp_path / "p8.toml", runs_dir=tmp_path / "cut", reporter=InterruptAt(17))
        assert first.state == "interrupted"
        assert resume_run(str(first.run_dir), [], runs_dir=tmp_path / "cut").state == "finished"
    finally:
        torch.set_num_threads(threads)
    assert_extension_is_the_planned_run(planned.run_dir, first.run_dir)
