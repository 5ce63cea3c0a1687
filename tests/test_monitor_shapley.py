"""Shapley values of accuracy over modality coalitions: efficiency, hand-computed values, batching."""

import pytest
import torch

from engine.models.fusion import FUSIONS
from engine.monitor import MonitorConfig, Monitors, coalition_masks, shapley_matrix, shapley_values
from engine.monitor.passes import additive_passes, head_passes

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def shapley_only(**kw) -> MonitorConfig:
    return MonitorConfig(mi=False, cmi=False, pairwise=False, grad=False, **kw)


def evaluate(cfg, head, feats, y, n_classes=2):
    mods = list(feats)
    mon = Monitors(cfg, mods, {m: z.shape[1] for m, z in feats.items()}, n_classes,
                   torch.full((n_classes,), 1.0 / n_classes), CPU)
    fused, logits = head(feats)
    return mon.evaluate(head, feats, logits, fused, y)


def random_problem(m: int, n: int = 300, d: int = 5, c: int = 4, fusion: str = "gated"):
    g = torch.Generator().manual_seed(m)
    mods = [f"m{i}" for i in range(m)]
    torch.manual_seed(m)
    entry = FUSIONS.entry(fusion)
    head = entry.builder(entry.config(), {k: d for k in mods}, c).eval()
    feats = {k: torch.randn(n, d, generator=g) + 0.5 for k in mods}
    y = head(feats)[0].argmax(1)
    y = torch.where(torch.rand(n, generator=g) < 0.3, torch.randint(0, c, (n,), generator=g), y)
    return head, feats, y


@pytest.mark.parametrize("m", [2, 3, 6])
@pytest.mark.parametrize("fill", ["zero", "mean"])
def test_shapley_values_sum_to_full_minus_empty_accuracy(m, fill):
    head, feats, y = random_problem(m)
    with torch.no_grad():
        out = evaluate(shapley_only(shapley_fill=fill), head, feats, y, n_classes=4)
        fill_of = (lambda z: torch.zeros_like(z)) if fill == "zero" else (lambda z: z.mean(0).expand_as(z))
        acc_full = (head(feats)[0].argmax(1) == y).double().mean()
        acc_empty = (head({k: fill_of(z) for k, z in feats.items()})[0].argmax(1) == y).double().mean()
    phi = torch.stack([out[f"shapley/m{i}"] for i in range(m)])
    assert phi.sum().item() == pytest.approx((acc_full - acc_empty).item(), abs=1e-12)
    assert out["imbalance"].item() == pytest.approx((phi.max() - phi.min()).item())
    assert phi.abs().max() > 0   # a non-trivial game


def test_shapley_matrix_is_the_textbook_formula():
    # every coalition value v(S) enters phi_i with +|S-1|!(M-|S|)!/M! if i in S, else -|S|!(M-|S|-1)!/M!
    w = shapley_matrix(3)
    assert w[0, 0b001].item() == pytest.approx(1 / 3)        # {0}: 0!2!/3!
    assert w[0, 0b011].item() == pytest.approx(1 / 6)        # {0,1}: 1!1!/3!
    assert w[0, 0b111].item() == pytest.approx(1 / 3)        # {0,1,2}: 2!0!/3!
    assert w[0, 0b010].item() == pytest.approx(-1 / 6)       # {1} without 0: 1!1!/3!
    assert w[0, 0b000].item() == pytest.approx(-1 / 3)       # {} without 0: 0!2!/3!
    for m in (2, 3, 6):
        total = shapley_matrix(m).sum(0)                     # efficiency: sum_i phi_i = v(all) - v(empty)
        expected = torch.zeros(2 ** m, dtype=torch.float64)
        expected[0], expected[-1] = -1, 1
        torch.testing.assert_close(total, expected)
    assert coalition_masks(2).tolist() == [[False, False], [True, False], [False, True], [True, True]]


def test_two_modalities_closed_form():
    v = torch.tensor([0.1, 0.7, 0.4, 0.9], dtype=torch.float64)  # v(), v(a), v(b), v(ab)
    phi = shapley_values(v)
    assert phi[0].item() == pytest.approx(0.5 * ((0.7 - 0.1) + (0.9 - 0.4)))
    assert phi[1].item() == pytest.approx(0.5 * ((0.4 - 0.1) + (0.9 - 0.7)))


def weighted_vote(feats):
    """Class-1 score 2 z_a + z_b + z_c - 1.5 (features are 1-d)."""
    s = 2 * feats["a"][:, 0] + feats["b"][:, 0] + feats["c"][:, 0] - 1.5
    return torch.stack([torch.zeros_like(s), s], dim=-1), {}


def test_hand_computed_three_modality_example():
    # Row 1: z = (1, 1, 1), y = 1: correct iff a present or both b and c (zero fill):
    #   v1 = {}:0 a:1 b:0 c:0 ab:1 ac:1 bc:1 abc:1 -> phi = (2/3, 1/6, 1/6).
    # Row 2: z = (0.5, 1, 1), y = 1: correct iff at least two present (majority game) -> phi = (1/3, 1/3, 1/3).
    # Accuracy averages the rows, so phi = (1/2, 1/4, 1/4) and imbalance = 1/4.
    feats = {"a": torch.tensor([[1.0], [0.5]]), "b": torch.tensor([[1.0], [1.0]]), "c": torch.tensor([[1.0], [1.0]])}
    y = torch.tensor([1, 1])
    out = evaluate(shapley_only(), weighted_vote, feats, y)
    assert [out[f"shapley/{m}"].item() for m in "abc"] == pytest.approx([0.5, 0.25, 0.25], abs=1e-12)
    assert out["imbalance"].item() == pytest.approx(0.25, abs=1e-12)
    # mean fill: absent b, c get their (constant) mean 1 and absent a gets 0.75 -> every coalition is right
    out = evaluate(shapley_only(shapley_fill="mean"), weighted_vote, feats, y)
    assert [out[f"shapley/{m}"].item() for m in "abc"] == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)


def test_identical_modalities_get_identical_values():
    head, feats, y = random_problem(3, n=400, fusion="concat")
    feats["m2"] = feats["m1"].clone()
    with torch.no_grad():
        head.linear.weight[:, 10:15] = head.linear.weight[:, 5:10]   # m2's weights equal m1's
        out = evaluate(shapley_only(), head, feats, y, n_classes=4)
    assert out["shapley/m1"].item() == pytest.approx(out["shapley/m2"].item(), abs=1e-12)
    assert out["shapley/m0"].item() != pytest.approx(out["shapley/m1"].item(), abs=1e-3)


def test_a_small_head_budget_uses_evenly_spaced_rows():
    head, feats, y = random_problem(3, n=400)
    rows = torch.arange(256) * 400 // 256        # 1024 rows / 7 coalitions < 256: the 256-row floor
    with torch.no_grad():
        budget = evaluate(shapley_only(eval_head_rows=1024), head, feats, y, n_classes=4)
        subset = evaluate(shapley_only(), head, {m: z[rows] for m, z in feats.items()}, y[rows], n_classes=4)
    assert budget.keys() == subset.keys()
    for k in budget:
        assert budget[k].item() == pytest.approx(subset[k].item(), abs=1e-12)


def test_head_passes_give_the_same_answer_in_one_call_or_many():
    head, feats, y = random_problem(2, n=50)
    tables = {m: torch.cat([z, torch.zeros(1, z.shape[1])]) for m, z in feats.items()}
    g = torch.Generator().manual_seed(0)
    index = {m: torch.randint(0, 51, (7, 50), generator=g) for m in feats}
    with torch.no_grad():
        one = head_passes(head, tables, index, y, chunk_rows=10_000)
        many = head_passes(head, tables, index, y, chunk_rows=100)      # 2 variants per call
        direct = head({m: tables[m][index[m][3]] for m in feats})[0].log_softmax(-1)
    for a, b in zip(one, many):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(one[0][3], direct.gather(1, y[:, None]).squeeze(1))


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_an_additive_head_gives_the_head_passes_values_from_one_call(fusion):
    head, feats, y = random_problem(3, n=40, fusion=fusion)
    tables = {m: torch.cat([z, torch.zeros(1, z.shape[1])]) for m, z in feats.items()}
    g = torch.Generator().manual_seed(1)
    index = {m: torch.randint(0, 41, (9, 40), generator=g) for m in feats}
    calls = []

    def counted(f):
        calls.append(next(iter(f.values())).shape[0])
        return head(f)
    with torch.no_grad():
        passes = head_passes(head, tables, index, y, chunk_rows=120)
        shortcut = additive_passes(counted, tables, index, y, chunk_rows=120)
    assert calls == [41]                                               # the table rows, once
    torch.testing.assert_close(passes[0], shortcut[0])                 # the same sums, other matmul blocking
    assert torch.equal(passes[1], shortcut[1])


def test_the_monitors_values_are_the_same_with_the_additive_shortcut():
    head, feats, y = random_problem(3, n=60, fusion="concat")
    cfg = MonitorConfig(mi=False, pairwise=False, grad=False, cmi_permutations=4)
    mon = Monitors(cfg, list(feats), {m: 5 for m in feats}, 4, torch.full((4,), 0.25), CPU)
    with torch.no_grad():
        fused, logits = head(feats)
        slow = mon.evaluate(head, feats, logits, fused, y)
        fast = mon.evaluate(head, feats, logits, fused, y, additive=True)
    assert slow.keys() == fast.keys() and any(k.startswith("cmi/") for k in slow)
    for k in slow:
        torch.testing.assert_close(slow[k], fast[k], rtol=1e-5, atol=1e-7, msg=k)


def test_only_the_models_own_additive_head_is_taken_as_additive():
    from engine.models import ModalitySpec, ModelSpec, build_model

    def model(fusion):
        spec = ModelSpec(tuple(ModalitySpec(m, "mlp", {"hidden": [4], "dim": 4}) for m in ("a", "b")), fusion)
        return build_model(spec, {"a": (3,), "b": (3,)}, 2)

    from engine.methods.base import Method
    from engine.methods.mmcosine import MMCosine
    assert Method.head_is_additive(object.__new__(Method), model("concat"))
    assert Method.head_is_additive(object.__new__(Method), model("sum"))
    assert not Method.head_is_additive(object.__new__(Method), model("gated"))
    assert not MMCosine.head_is_additive(object.__new__(MMCosine), model("concat"))   # its own head


def test_shapley_is_skipped_above_the_modality_limit():
    head, feats, y = random_problem(3)
    with torch.no_grad():
        out = evaluate(shapley_only(shapley_max_modalities=2), head, feats, y, n_classes=4)
    assert out == {}
