"""Issue #18, the engine's per-step work: the batched forms equal the loops they replace, the sampled
Shapley values keep their stated error, the evaluation time budget adapts the rows, and the batched
calls launch a fixed number of operators whatever the number of tensors."""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from engine.methods.aug import true_class_confidence
from engine.methods.ogm import modulate_
from engine.models import ModelOutput
from engine.monitor import MonitorConfig, Monitors, coalition_masks, shapley_matrix
from engine.monitor import budget as budget_module
from engine.monitor.budget import EvalBudget
from engine.monitor.infonce import PairCritics, modality_pairs
from engine.monitor.permutation import (context_features, neighbour_rows, neighbours_of_every_modality,
                                        replacement_rows, replacement_rows_all)
from engine.monitor.probe import information_bound, mean_cross_entropies
from engine.monitor.shapley import masks_of_codes, sampled_shapley_matrix

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


class OpCounter(TorchDispatchMode):
    """ATen operators dispatched, by name."""

    def __init__(self):
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def features(n=40, dims=(5, 3, 7, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"m{i}": torch.randn(n, d, generator=g) * (i + 1) for i, d in enumerate(dims)}


# -- sampled Shapley values --------------------------------------------------------------------------
def coalition_values(m: int, seed: int) -> torch.Tensor:
    """(2^M,) an accuracy-like game in [0, 1]: grows with the coalition, with interactions."""
    g = torch.Generator().manual_seed(seed)
    masks = coalition_masks(m).double()
    weights = torch.rand(m, generator=g, dtype=torch.float64)
    pair = torch.rand(m, m, generator=g, dtype=torch.float64) * 0.3
    raw = masks @ weights + torch.einsum("ci,ij,cj->c", masks, pair, masks)
    return raw / raw.max()


@pytest.mark.parametrize("m,k", [(3, 64), (4, 256), (5, 100)])
def test_sampled_shapley_is_within_its_stated_error_of_the_exact_values(m, k):
    v = coalition_values(m, seed=m)
    exact = shapley_matrix(m).double() @ v
    codes, w = sampled_shapley_matrix(m, k, torch.Generator().manual_seed(k))
    estimate = w @ v[codes]
    assert codes[0].item() == 0 and codes[-1].item() == 2 ** m - 1          # the empty and full coalitions
    assert len(codes) <= k * (m - 1) + 2
    assert estimate.sum().item() == pytest.approx((v[-1] - v[0]).item(), abs=1e-12)   # efficiency, exactly
    assert (estimate - exact).abs().max().item() <= 2.72 / math.sqrt(k)     # the docstring's 95% bound
    assert not torch.allclose(estimate, exact)                              # sampled, not the exact formula


def test_sampled_shapley_is_unbiased_over_the_orders():
    m, v = 4, coalition_values(4, seed=7)
    exact = shapley_matrix(m).double() @ v
    draws = []
    for seed in range(200):
        codes, w = sampled_shapley_matrix(m, 8, torch.Generator().manual_seed(seed))
        draws.append(w @ v[codes])
    mean = torch.stack(draws).mean(0)
    assert (mean - exact).abs().max().item() < 0.02        # 1600 orders: standard error < 1 / 40


def test_sampled_shapley_with_every_order_equals_the_exact_values():
    # with many orders every coalition of M = 3 appears, and the mean over orders converges to phi
    m, v = 3, coalition_values(3, seed=1)
    codes, w = sampled_shapley_matrix(m, 20000, torch.Generator().manual_seed(0))
    assert codes.tolist() == list(range(2 ** m))
    assert torch.allclose(w @ v, shapley_matrix(m).double() @ v, atol=0.02)
    assert masks_of_codes(torch.tensor([0b101]), 3).tolist() == [[True, False, True]]


def test_monitors_sample_the_shapley_values_above_the_exact_limit():
    from test_monitor_shapley import evaluate, random_problem, shapley_only
    head, feats, y = random_problem(4)
    k = 64
    with torch.no_grad():
        exact = evaluate(shapley_only(), head, feats, y, n_classes=4)
        sampled = evaluate(shapley_only(shapley_max_modalities=3, shapley_permutations=k), head, feats, y,
                           n_classes=4)
        skipped = evaluate(shapley_only(shapley_max_modalities=3), head, feats, y, n_classes=4)
    assert "shapley/m0" not in skipped
    phi = torch.stack([exact[f"shapley/m{i}"] for i in range(4)])
    phi_hat = torch.stack([sampled[f"shapley/m{i}"] for i in range(4)])
    assert (phi_hat - phi).abs().max().item() <= 2.72 / math.sqrt(k)
    assert phi_hat.sum().item() == pytest.approx(phi.sum().item(), abs=1e-12)
    assert sampled["imbalance"].item() == pytest.approx((phi_hat.max() - phi_hat.min()).item())


# -- the stacked evaluations equal the loops ---------------------------------------------------------
def test_one_neighbour_search_for_every_modality_equals_one_per_modality():
    feats = features(n=70)
    batched = neighbours_of_every_modality(feats, k=6, chunk_cells=70 * 4 * 9)   # several chunks
    for m in feats:
        context = context_features(feats, [o for o in feats if o != m])
        assert torch.equal(batched[m], neighbour_rows(context, 6)), m
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    plain = replacement_rows_all(feats, 4, False, g1)
    assert all(torch.equal(plain[m], replacement_rows(feats, m, 4, False, g2)) for m in feats)


def test_pair_embeddings_gather_equals_the_per_pair_loop():
    torch.manual_seed(0)
    feats = features(n=12)
    mods = list(feats)
    critics = PairCritics({m: z.shape[1] for m, z in feats.items()}, hidden=8, embed=5)
    left, right = critics.pair_embeddings(feats)
    emb = {m: net(feats[m]).unflatten(-1, (-1, 5)) for m, net in critics.nets.items()}
    pairs = modality_pairs(mods)
    assert left.shape == right.shape == (len(pairs), 12, 5)
    for p, (a, b) in enumerate(pairs):
        assert torch.equal(left[p], emb[a][:, critics._slot(a, b)])
        assert torch.equal(right[p], emb[b][:, critics._slot(b, a)])


def test_batched_cross_entropies_and_confidences_equal_the_loops():
    g = torch.Generator().manual_seed(1)
    logits = [torch.randn(9, 4, generator=g) for _ in range(3)]
    y = torch.randint(0, 4, (9,), generator=g)
    loop = torch.stack([F.cross_entropy(z, y) for z in logits])
    assert torch.allclose(mean_cross_entropies(logits, y), loop, atol=1e-6)
    odd = [logits[0], torch.randn(9, 6, generator=g)]             # different shapes: one call each
    assert torch.equal(mean_cross_entropies(odd, y), torch.stack([F.cross_entropy(z, y) for z in odd]))
    stacked = true_class_confidence(torch.stack(logits), y)
    assert torch.allclose(stacked, torch.stack([true_class_confidence(z, y) for z in logits]))


def test_online_task_information_equals_the_per_modality_bounds_with_and_without_own_logits():
    from test_monitor_monitors import C, batch, fake_output, monitors
    x, y = batch(4, n=50)
    out = fake_output(x, y)
    for logits in (out.logits, {"a": out.logits["a"]}, {}):
        mon = monitors(pairwise=False, update_every=1)
        probes_before = {m: lin(out.features[m].float()) for m, lin in mon.probes.linears.items()}
        mon.observe_step(ModelOutput(out.fused, logits, out.features), y, 0)
        got = mon.interval_values()
        h_y = -(torch.tensor([0.3, 0.4, 0.3]).double().log() * torch.tensor([0.3, 0.4, 0.3])).sum()
        for m in ("a", "b", "c"):
            candidates = [F.cross_entropy(probes_before[m], y)]
            if m in logits:
                candidates.append(F.cross_entropy(logits[m].float(), y))
            expected = information_bound(h_y, [c.detach() for c in candidates])
            assert got[f"mi/{m}"].item() == pytest.approx(expected.item(), abs=1e-6), (m, list(logits))
    assert C == 3


# -- OGM-GE's modulation in a fixed number of operators ----------------------------------------------
def gradients(n_tensors: int, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3 + i, 2, generator=g) for i in range(n_tensors)] + [torch.randn(1, generator=g)]


def test_modulate_scales_and_adds_noise_scaled_by_each_gradients_std():
    grads = gradients(4)
    before = [g.clone() for g in grads]
    k = [torch.tensor(0.5)] * 3 + [torch.tensor(0.25)] * 2
    gates = [torch.tensor(1.0)] * 2 + [torch.tensor(0.0)] * 3
    modulate_(grads, k, gates, torch.Generator().manual_seed(9))
    noisy = before[:-1]                                            # one-element tensors get no noise
    draw = torch.randn(sum(g.numel() for g in noisy), generator=torch.Generator().manual_seed(9))
    for i, (g, b) in enumerate(zip(grads, before)):
        expected = k[i] * b
        if i < len(noisy):
            offset = sum(x.numel() for x in noisy[:i])
            expected = expected + draw[offset:offset + b.numel()].view_as(b) * b.std() * gates[i]
        assert torch.allclose(g, expected, atol=1e-6), i
    plain = gradients(2)
    modulate_(plain, torch.tensor(2.0))
    assert all(torch.equal(a, 2 * b) for a, b in zip(plain, gradients(2)))


@pytest.mark.parametrize("n_tensors", [3, 12])
def test_modulate_draws_its_noise_once_whatever_the_number_of_gradients(n_tensors):
    grads = gradients(n_tensors)
    with OpCounter() as count:
        modulate_(grads, [torch.tensor(0.9)] * len(grads), [torch.tensor(1.0)] * len(grads),
                  torch.Generator().manual_seed(0))
    assert count.ops["normal_"] + count.ops["randn"] == 1
    assert count.ops["_foreach_addcmul_"] == 1 and count.ops["_foreach_mul_"] == 1
    assert count.ops["add_"] == 0


# -- the evaluation time budget ----------------------------------------------------------------------
def test_eval_budget_scales_the_rows_to_the_measured_time(monkeypatch):
    clock = iter([0.0, 4.0, 10.0, 11.0, 20.0, 21.0, 30.0, 31.0])
    monkeypatch.setattr(budget_module.time, "perf_counter", lambda: next(clock))
    b = EvalBudget(1.0, CPU)
    assert EvalBudget(0.0, CPU).rows(5000, 256) == 5000            # no budget: the configured limit
    b.start()
    assert b.rows(4000, 256) == 4000                               # nothing measured yet
    b.stop()                                                       # took 4 s, the budget is 1 s
    b.start()
    assert b.scale == pytest.approx(0.25) and b.rows(4000, 256) == 1000
    assert b.rows(400, 256) == 256 and b.rows(100, 256) == 100     # the floor, never above the limit
    b.stop()                                                       # 1 s: on budget, the scale stays
    b.start()
    assert b.scale == pytest.approx(0.25)
    b.start()                                                      # no new measurement: folded in once only
    assert b.scale == pytest.approx(0.25)


def test_a_time_budget_shrinks_the_rows_the_monitors_score(monkeypatch):
    from test_monitor_shapley import random_problem
    head, feats, y = random_problem(3, n=2000)
    cfg = MonitorConfig(mi=True, cmi=True, pairwise=False, grad=False, shapley=True, eval_time_budget=0.5,
                        eval_max_samples=2000)
    mon = Monitors(cfg, list(feats), {m: z.shape[1] for m, z in feats.items()}, 4, torch.full((4,), 0.25), CPU)
    seen = []
    original = budget_module.EvalBudget.rows
    monkeypatch.setattr(budget_module.EvalBudget, "rows",
                        lambda self, limit, floor: seen.append(original(self, limit, floor)) or seen[-1])
    monkeypatch.setattr(budget_module.time, "perf_counter", iter([0.0, 2.0, 10.0, 10.5]).__next__)
    with torch.no_grad():
        fused, logits = head(feats)
        first = mon.evaluate(head, feats, logits, fused, y)
        second = mon.evaluate(head, feats, logits, fused, y)
    assert seen[0] == 2000 and seen[2] == 500                      # probes: 2000 rows, then a quarter
    assert seen[3] < seen[1]                                       # the head passes shrink too
    assert set(first) == set(second) and all(torch.isfinite(v) for v in second.values())
