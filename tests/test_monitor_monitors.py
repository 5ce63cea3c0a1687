"""Monitors as the trainer uses them: gradient norms, online updates, interval values, switches,
checkpoint round trip, and no effect on training."""

import io
import math

import pytest
import torch
import torch.nn.functional as F

from engine.models import ModalitySpec, ModelOutput, ModelSpec, build_model
from engine.monitor import MonitorConfig, Monitors
from engine.monitor.probe import information_bound, label_entropy
from engine.schema import build

CPU = torch.device("cpu")
MODS = ["a", "b", "c"]
C = 3


pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(fusion="concat", seed=0):
    torch.manual_seed(seed)
    spec = ModelSpec(tuple(ModalitySpec(m, "mlp", {"hidden": [8], "dim": 4}) for m in MODS), fusion)
    return build_model(spec, {"a": (5,), "b": (6,), "c": (7,)}, C)


def batch(seed, n=32):
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(n, d, generator=g) for m, d in zip(MODS, (5, 6, 7))}
    y = (x["a"][:, 0] > 0).long() + (x["b"][:, 0] > 0.5).long()
    return x, y


def monitors(**kw):
    """Monitors without the overhead budget (every update and evaluation runs) unless ``kw`` sets one."""
    return Monitors(MonitorConfig(**{"max_overhead": 0.0, **kw}), MODS, {m: 4 for m in MODS}, C,
                    torch.tensor([0.3, 0.4, 0.3]), CPU)


# -- gradient norms -----------------------------------------------------------------------------------
def test_grad_norms_equal_the_norm_of_each_encoders_gradients():
    model = small_model()
    x, y = batch(0)
    F.cross_entropy(model(x).fused, y).backward()
    model.encoders["c"].net[0].bias.grad = None                 # a parameter without gradient counts as 0
    for p in model.encoders["b"].parameters():                   # an encoder without any gradient reports 0
        p.grad = None
    norms = monitors().grad_norms(model)
    assert list(norms) == ["grad/a", "grad/b", "grad/c"]
    for m in MODS:
        grads = [p.grad.flatten() for p in model.encoders[m].parameters() if p.grad is not None]
        expected = torch.linalg.vector_norm(torch.cat(grads)) if grads else torch.zeros(())
        assert norms[f"grad/{m}"].dim() == 0
        assert norms[f"grad/{m}"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert norms["grad/b"].item() == 0.0 and norms["grad/a"].item() > 0
    assert monitors(grad=False).grad_norms(model) == {}


def test_grad_norms_use_the_norms_already_taken_and_take_only_the_others():
    model = small_model()
    x, y = batch(0)
    F.cross_entropy(model(x).fused, y).backward()
    fresh = monitors().grad_norms(model)
    a = [p for p in model.encoders["a"].parameters() if p.grad is not None]
    known = {id(p): torch.linalg.vector_norm(p.grad) for p in a}   # the trainer's fused norm, for encoder a
    shared = monitors().grad_norms(model, known)
    assert all(torch.allclose(shared[k], fresh[k], rtol=1e-6) for k in fresh)
    known = {id(p): torch.tensor(1.0) for p in a}                   # the given values are the ones used
    assert monitors().grad_norms(model, known)["grad/a"].item() == pytest.approx(len(a) ** 0.5)
    assert torch.equal(monitors().grad_norms(model, known)["grad/b"], fresh["grad/b"])


# -- online updates and interval values ----------------------------------------------------------------
def fake_output(x, y, model=None):
    model = model or small_model()
    with torch.no_grad():
        return model(x)


def test_updates_run_only_every_k_steps_and_interval_values_average_them():
    mon = monitors(update_every=3)
    assert mon.interval_values() == {}                           # nothing before the first update
    x, y = batch(1)
    out = fake_output(x, y)
    before = {k: v.clone() for k, v in mon.probes.state_dict().items()}
    mon.observe_step(out, y, 1)
    mon.observe_step(out, y, 2)
    assert all(torch.equal(v, mon.probes.state_dict()[k]) for k, v in before.items())
    assert mon.count == 0
    mon.observe_step(out, y, 3)
    assert mon.count == 1
    assert not torch.equal(before["linears.a.weight"], mon.probes.state_dict()["linears.a.weight"])
    first = mon.interval_values()
    assert list(first) == ["mi/a", "mi/b", "mi/c", "mi/a;b", "mi/a;c", "mi/b;c"] == mon.interval_names()
    assert all(v.dim() == 0 for v in first.values())
    assert mon.interval_values() == first                        # no update since: the last means again
    mon.observe_step(out, y, 6)
    mon.observe_step(out, y, 9)
    second = mon.interval_values()
    assert mon.count == 0 and second["mi/a;b"].item() != first["mi/a;b"].item()


def test_running_task_information_starts_at_zero_and_uses_the_better_bound():
    mon = monitors(pairwise=False, update_every=1)
    x, _ = batch(2, n=300)
    y = torch.tensor([0] * 90 + [1] * 120 + [2] * 90)            # exactly the class prior (0.3, 0.4, 0.3)
    out = fake_output(x, y)
    h_y = -sum(p * math.log(p) for p in (0.3, 0.4, 0.3))
    # the probe starts as the prior: CE = H(Y), bound 0 (the model's untrained logits are worse)
    mon.observe_step(out, y, 0)
    assert mon.interval_values()["mi/a"].item() == pytest.approx(0.0, abs=1e-6)
    # logits that give the true label probability 0.9 everywhere: the bound is H(Y) - (-log 0.9)
    good = torch.full((300, C), math.log(0.05)).scatter(1, y[:, None], math.log(0.9))
    out = ModelOutput(out.fused, {"a": good, "b": out.logits["b"], "c": out.logits["c"]}, out.features)
    mon.observe_step(out, y, 1)
    assert mon.interval_values()["mi/a"].item() == pytest.approx(h_y + math.log(0.9), abs=1e-5)


def test_information_bound_and_label_entropy():
    y = torch.tensor([0, 0, 1, 1])
    assert label_entropy(y, 3).item() == pytest.approx(math.log(2))
    assert information_bound(torch.tensor(math.log(2)), [torch.tensor(0.5), torch.tensor(0.3)]).item() == \
        pytest.approx(math.log(2) - 0.3)
    assert information_bound(torch.tensor(0.2), [torch.tensor(0.5)]).item() == 0.0


# -- evaluation -------------------------------------------------------------------------------------
def evaluate(mon, model, seed=3, n=200):
    x, y = batch(seed, n)
    model.eval()
    with torch.no_grad():
        out = model(x)
        return mon.evaluate(model.head, out.features, out.logits, out.fused, y)


def test_evaluate_reports_every_switched_on_estimator_as_0d_tensors():
    model = small_model()
    out = evaluate(monitors(), model)
    assert list(out) == monitors().eval_names()
    assert set(out) == {"mi/a", "mi/b", "mi/c", "cmi/a", "cmi/b", "cmi/c", "mi/a;b", "mi/a;c", "mi/b;c",
                        "shapley/a", "shapley/b", "shapley/c", "imbalance"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
    only = evaluate(monitors(mi=False, pairwise=False, shapley=False), model)
    assert list(only) == ["cmi/a", "cmi/b", "cmi/c"]
    for key in only:
        assert only[key].item() == pytest.approx(out[key].item(), abs=1e-12)


def test_switched_off_monitors_do_nothing():
    mon = monitors(enabled=False)
    assert mon.probes is None and mon.critics is None and mon.optimizer is None
    x, y = batch(4)
    model = small_model()
    mon.observe_step(fake_output(x, y, model), y, 0)
    assert mon.interval_values() == {} and mon.grad_norms(model) == {} and evaluate(mon, model) == {}
    assert mon.eval_names() == [] and mon.interval_names() == [] and mon.grad_names() == []


def test_large_splits_are_subsampled_at_evenly_spaced_rows():
    model = small_model()
    x, y = batch(5, n=500)
    rows = torch.arange(100) * 500 // 100
    model.eval()
    with torch.no_grad():
        out = model(x)
        mon = monitors(eval_max_samples=100, cmi=False, shapley=False)
        big = mon.evaluate(model.head, out.features, out.logits, out.fused, y)
        pick = lambda t: t[rows]  # noqa: E731
        small = mon.evaluate(model.head, {m: pick(z) for m, z in out.features.items()},
                             {m: pick(z) for m, z in out.logits.items()}, pick(out.fused), pick(y))
    assert big.keys() == small.keys()
    for k in big:
        assert big[k].item() == pytest.approx(small[k].item(), abs=1e-12)


def test_observe_step_works_inside_autocast_with_low_precision_features():
    mon = monitors()
    x, y = batch(6)
    out = fake_output(x, y)
    out = ModelOutput(out.fused.bfloat16(), {m: v.bfloat16() for m, v in out.logits.items()},
                      {m: v.bfloat16() for m, v in out.features.items()})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mon.observe_step(out, y, 0)
    assert all(p.dtype == torch.float32 for p in mon.critics.parameters())
    assert all(torch.isfinite(v) for v in mon.interval_values().values())


# -- checkpoints ------------------------------------------------------------------------------------
def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_state_dict_round_trip_continues_identically():
    x, y = batch(7)
    out = fake_output(x, y)
    a = monitors(update_every=1)
    for step in range(4):
        a.observe_step(out, y, step)
    b = monitors(update_every=1, seed=9)        # other initial weights: everything must come from the state
    b.load_state_dict(roundtrip(a.state_dict()))
    assert b.skipped_on_load == []
    for step in range(4, 7):
        x2, y2 = batch(step)
        out2 = fake_output(x2, y2)
        a.observe_step(out2, y2, step)
        b.observe_step(out2, y2, step)
    va, vb = a.interval_values(), b.interval_values()
    assert va.keys() == vb.keys() and all(torch.equal(va[k], vb[k]) for k in va)
    for k, v in a.state_dict()["critics"].items():
        assert torch.equal(v, b.state_dict()["critics"][k])
    model = small_model()
    ea, eb = evaluate(a, model), evaluate(b, model)
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_a_changed_critic_starts_fresh_and_the_probes_load():
    x, y = batch(8)
    a = monitors(update_every=1)
    a.observe_step(fake_output(x, y), y, 0)
    b = monitors(update_every=1, critic_hidden=16)
    b.load_state_dict(roundtrip(a.state_dict()))
    assert b.skipped_on_load == ["critics", "optimizer"]
    assert torch.equal(b.probes.linears["a"].weight, a.probes.linears["a"].weight)
    c = monitors(update_every=1, pairwise=False)        # names changed: running sums are dropped
    c.load_state_dict(roundtrip(a.state_dict()))
    assert c.count == 0 and set(c.interval_values()) <= {"mi/a", "mi/b", "mi/c"}


# -- the overhead budget --------------------------------------------------------------------------------
class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_overhead_budget_lets_the_monitors_work_only_within_their_share():
    from engine.monitor.overhead import OverheadBudget
    clock = Clock()
    budget = OverheadBudget(0.1, clock)
    assert budget.allows()                           # nothing measured yet
    with budget.timed():
        clock.now += 1.0                             # the monitors: 1 s
    clock.now += 5.0                                 # training: 5 s, so 1 > 0.1 * 5
    assert not budget.allows()
    clock.now += 5.0                                 # 10 s of training: 1 <= 0.1 * 10
    assert budget.allows() and budget.allows()
    assert budget.monitor_s == 1.0 and budget.other_s == 10.0
    clock.now += 1.0
    assert budget.allows(key=7)
    with budget.timed():
        clock.now += 2.0
    assert budget.allows(key=7)                      # the same step asked again: the same answer
    assert not budget.allows(key=8)                  # 3 > 0.1 * 11
    resumed = OverheadBudget(0.1, clock)
    resumed.load_state_dict(budget.state_dict())
    clock.now += 100.0                               # the pause between the runs is not counted
    assert not resumed.allows() and resumed.other_s == 11.0
    free = OverheadBudget(0.0, clock)
    with free.timed():
        clock.now += 50.0
    assert free.allows() and free.monitor_s == 0.0   # 0: no budget, nothing timed


def test_updates_and_evaluations_beyond_the_budget_are_skipped_the_first_ones_always_run():
    clock = Clock()
    mon = monitors(update_every=1, max_overhead=0.2)                # 0.1 for the updates, 0.1 for the evaluations
    mon.overhead.clock = mon.eval_overhead.clock = clock
    x, y = batch(3)
    out = fake_output(x, y)
    real_update = mon._update

    def slow_update(*args):                              # each update takes 1 s
        clock.now += 1.0
        real_update(*args)
    mon._update = slow_update
    ran = []
    for step in range(40):
        before = mon.count
        mon.observe_step(out, y, step)
        ran.append(mon.count > before)
        clock.now += 1.0                                # each training step: 1 s
    assert ran[0] and sum(ran) == 4                     # steps 0, 10, 21, 32: 4 s <= 0.1 x 36 s
    assert mon.overhead.monitor_s <= 0.1 * mon.overhead.other_s + 1.0
    assert mon.evaluates()                              # the first evaluation always runs
    evaluate(mon, small_model())
    assert mon.evaluations == 1
    with mon.overhead.timed():
        clock.now += 100.0
    assert mon.evaluates()                              # the updates' time is not the evaluations'
    with mon.eval_overhead.timed():
        clock.now += 100.0
    assert not mon.evaluates()
    assert monitors(update_every=1, max_overhead=0.1, enabled=False).evaluates() is False
    assert monitors(max_overhead=0.1).overhead.active
    assert not Monitors(MonitorConfig(max_overhead=0.1), MODS, {m: 4 for m in MODS}, C,
                        torch.tensor([0.3, 0.4, 0.3]), CPU, distributed=True).eval_overhead.active


# -- no effect on training ------------------------------------------------------------------------
def train(with_monitors: bool, fusion: str):
    model = small_model(fusion)
    mon = monitors(update_every=2) if with_monitors else None   # built after the model, before training
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(8):
        x, y = batch(100 + step)
        out = model(x)
        F.cross_entropy(out.fused, y).backward()
        if mon is not None:
            mon.grad_norms(model)
        opt.step()
        opt.zero_grad()
        if mon is not None:
            mon.observe_step(out, y, step)
            if step % 4 == 3:
                evaluate(mon, model)
                model.train()
    return model, torch.rand(3)   # the global RNG must be where it would be without monitors


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_monitors_leave_training_bit_for_bit_unchanged(fusion):
    plain, rng_plain = train(False, fusion)
    watched, rng_watched = train(True, fusion)
    for (k, v), w in zip(plain.state_dict().items(), watched.state_dict().values()):
        assert torch.equal(v, w), k
    assert torch.equal(rng_plain, rng_watched)


# -- the preset table -----------------------------------------------------------------------------
def test_preset_table_is_validated():
    problems = []
    cfg = build(MonitorConfig, {"cmi_permutations": 4, "shapley_fill": "mean"}, "monitor", problems)
    assert problems == [] and cfg.cmi_permutations == 4 and cfg.shapley_fill == "mean" and cfg.pairwise
    build(MonitorConfig, {"shapley_max_modalities": 7, "shapley_fill": "median", "update_evry": 2,
                          "max_modalities": 1}, "monitor", problems)
    text = "\n".join(problems)
    assert "monitor.shapley_max_modalities: must be <= 6" in text
    assert "monitor.shapley_fill: expected one of 'zero', 'mean'" in text
    assert "monitor.update_evry: unknown key (did you mean 'update_every'?)" in text
