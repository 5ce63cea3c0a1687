"""greedy (Wu et al., ICML 2022): the balance of conditional learning speeds (BDR) on known values and
against the release's per-parameter formula, when a re-balancing window opens and how long it lasts,
which parameters learn inside one (the caring modality's MMTM gates held, as ``MMTM.freeze_gates``
holds them), three modalities, the conditional utilisation rates, and the state a resume needs."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from engine.methods.greedy import balance_ratios, group_speeds, imbalance, others_mean_matrix
from methodkit import THREE, Kit, hand_step

MMTM = {"mid_fusion": "mmtm"}   # [model] mid_fusion = "mmtm", after both stages of the kit's MLP encoders


def build(options=None, modalities=("a", "b"), mid=True, **kw):
    return Kit.build("greedy", options, modalities=modalities, fusion_options=MMTM if mid else None,
                     dropout=0.0, **kw)


def excite(kit, m):
    """The parameters of m's excitation layer in every MMTM the method re-balances."""
    return [p for mmtm in kit.method.mmtms for p in mmtm.excite[m].parameters()]


def forced_sums(kit, bdr):
    """Speed sums so large that a step's mu does not move them (float32), giving BDR = ``bdr``."""
    bypass = torch.tensor([1e6 * 10.0 ** b for b in bdr])
    kit.method.sums = torch.stack([bypass, torch.full_like(bypass, 1e6)])


# -- the pieces ---------------------------------------------------------------------------------------
def test_bdr_and_one_vs_mean_of_others_on_known_values():
    sums = torch.tensor([[1e-2, 1e-3, 1e-4], [1e-3, 1e-3, 1e-3]])   # bypass row, main row
    bdr = balance_ratios(sums)
    torch.testing.assert_close(bdr, torch.tensor([1.0, 0.0, -1.0]))
    torch.testing.assert_close(imbalance(bdr, others_mean_matrix(3)), torch.tensor([1.5, 0.0, -1.5]))
    two = torch.tensor([0.7, -0.2])
    d = imbalance(two, others_mean_matrix(2))
    assert d[0].item() == pytest.approx(0.9) and d[1].item() == -d[0].item()   # d_1 = -d_BDR exactly


def test_group_speeds_are_gradient_over_weight_square_norms_per_group():
    w = [torch.tensor([3.0, 4.0]), torch.tensor([1.0]), torch.tensor([[2.0]])]     # |w|^2: 25, 1, 4
    g = [torch.tensor([0.3, 0.4]), torch.tensor([2.0]), torch.tensor([[0.0]])]     # |g|^2: 0.25, 4, 0
    member = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    torch.testing.assert_close(group_speeds(w, g, member), torch.tensor([4.25 / 26, 4.0 / 5]))
    g[0] = torch.tensor([float("nan"), 0.0])
    assert group_speeds(w, g, member)[0].item() == 0.0   # a non-finite speed adds nothing


def test_a_steps_bdr_is_the_releases_per_parameter_formula():
    kit = build()
    x, y = kit.batch(24)
    probe = copy.deepcopy(kit.model)
    loss = F.cross_entropy(probe(x).fused, y)
    loss.backward()

    def speed(params):
        params = list(params)
        return sum((p.grad ** 2).sum().item() for p in params) / sum((p ** 2).sum().item() for p in params)

    bdr = {}
    for m in ("a", "b"):
        bypass = [p for mf in probe.mid_fusions for p in [*mf.joint.parameters(), *mf.excite[m].parameters()]]
        bdr[m] = math.log10(speed(bypass) / speed(probe.encoders[m].parameters()))
    live = kit.step(x, y).live
    assert live["method/bdr_a"].item() == pytest.approx(bdr["a"], rel=1e-5)
    assert live["method/bdr_b"].item() == pytest.approx(bdr["b"], rel=1e-5)
    assert live["method/d_bdr"].item() == pytest.approx(bdr["a"] - bdr["b"], rel=1e-4)
    assert live["score/b"].item() == -live["score/a"].item()


# -- windows ------------------------------------------------------------------------------------------
def flags(kit, n, epoch):
    lives = [kit.step(epoch=epoch).live for _ in range(n)]
    return [int(live["method/rebalancing"].item()) for live in lives], lives


def test_no_window_before_the_start_epoch_then_windows_of_the_given_length():
    kit = build({"epsilon": 0.0, "window": 3, "start_epoch": 1})
    assert flags(kit, 4, epoch=0)[0] == [0, 0, 0, 0]
    seen, lives = flags(kit, 9, epoch=1)
    assert seen == [0, 1, 1, 1, 0, 1, 1, 1, 0]
    for opened, window in ((0, lives[1:4]), (4, lives[5:8])):
        d = lives[opened]
        caring = "a" if d["method/d_bdr"].item() > 0 else "b"
        other = "b" if caring == "a" else "a"
        for live in window:   # the caring modality's gates are held; d is the one that opened the window
            assert live[f"coef/{caring}"].item() == 0.0 and live[f"coef/{other}"].item() == 1.0
            assert live["method/d_bdr"].item() == d["method/d_bdr"].item()
    assert all(live["coef/a"].item() == live["coef/b"].item() == 1.0 for live in (lives[0], lives[4], lives[8]))


@pytest.mark.parametrize("epsilon, opens", [(0.99, True), (1.01, False)])
def test_a_window_opens_when_the_largest_d_exceeds_epsilon(epsilon, opens):
    kit = build({"epsilon": epsilon, "window": 2, "start_epoch": 0})
    forced_sums(kit, [1.0, 0.0])   # d = (1, -1): caring a when it opens
    first = kit.step().live
    assert first["method/d_bdr"].item() == pytest.approx(1.0, abs=1e-5)
    assert kit.method.left.item() == (2 if opens else 0)
    second = kit.step().live
    assert second["method/rebalancing"].item() == float(opens)
    assert second["coef/a"].item() == (0.0 if opens else 1.0) and second["coef/b"].item() == 1.0


def test_inside_a_window_only_the_caring_modalitys_gates_are_held():
    kit = build({"window": 4})
    kit.method.left.fill_(4)
    kit.method.caring.fill_(1)            # b
    x, y = kit.batch(24)
    reference = copy.deepcopy(kit.model)  # the same state, b's gates held by MMTM's own freeze
    for mf in reference.mid_fusions:
        mf.freeze_gates(["b"])
    F.cross_entropy(reference(x).fused, y).backward()
    sums = kit.method.sums.clone()
    kit.model.train()
    result = kit.method.train_step(x, y, hand_step(kit.model, None, epoch=1))   # no optimiser: grads stay
    assert result.live["method/rebalancing"].item() == 1.0 and result.live["coef/b"].item() == 0.0
    grads = dict(kit.model.named_parameters())
    for name, p in reference.named_parameters():   # the reference leaves b's excitation out of the graph
        want = torch.zeros_like(p) if p.grad is None else p.grad
        torch.testing.assert_close(grads[name].grad, want, msg=name)
    assert all(torch.count_nonzero(p.grad) == 0 for p in excite(kit, "b"))
    assert all(torch.count_nonzero(p.grad) > 0 for p in excite(kit, "a"))
    learning = [*kit.params("a").values(), *kit.params("b").values(), *kit.params("fusion").values()]
    learning = [p for p in learning if all(p is not q for q in excite(kit, "b"))]
    assert all(torch.count_nonzero(p.grad) > 0 for p in learning)
    assert kit.method.left.item() == 3 and torch.equal(kit.method.sums, sums)   # not counted in the BDR


@pytest.mark.parametrize("mid", [True, False], ids=["mmtm", "own-mmtm"])
def test_three_modalities_care_for_the_largest_d(mid):
    kit = build({"epsilon": 0.5, "window": 2, "start_epoch": 0}, modalities=THREE, mid=mid)
    assert (kit.method.own is None) == mid
    forced_sums(kit, [0.0, -1.0, 1.0])   # d = (0, -1.5, 1.5): caring c
    opened = kit.step().live
    assert [opened[f"score/{m}"].item() for m in THREE] == pytest.approx([0.0, -1.5, 1.5], abs=1e-5)
    x, y = kit.batch(24)
    live = kit.method.train_step(x, y, hand_step(kit.model, None, epoch=1)).live
    assert [live[f"coef/{m}"].item() for m in THREE] == [1.0, 1.0, 0.0]
    assert all(torch.count_nonzero(p.grad) == 0 for p in excite(kit, "c"))
    assert all(torch.count_nonzero(p.grad) > 0 for m in ("a", "b") for p in excite(kit, m))
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in kit.params("c").values())


# -- the diagnostic and the state ---------------------------------------------------------------------
def test_utilisation_rate_is_the_fused_accuracy_gain_over_the_held_branch():
    kit = build({"start_epoch": 0}, epochs=2)
    kit.fit()
    values = kit.epoch_values[-1]
    fused = kit.evaluate("val")["val/acc/fused"]
    model = copy.deepcopy(kit.model).eval()
    for m in ("a", "b"):
        for mf in model.mid_fusions:
            mf.freeze_gates([m])
        with torch.no_grad():
            right = sum((model(x).logits[m].argmax(-1) == y).sum().item()
                        for x, y in kit.data.eval_batches("val", 1024))
        alone = right / kit.data.split_size("val")
        assert values[f"method/util_given_{m}"] == pytest.approx((fused - alone) / fused, abs=1e-9)


def test_state_dict_holds_the_window_and_the_speed_sums():
    kit = build({"epsilon": 0.0, "window": 5, "start_epoch": 0})
    for _ in range(3):
        kit.step()
    state = kit.method.state_dict()
    assert state["left"].item() == 3
    _, fresh = kit.loaded({"model": kit.model.state_dict(), "method": state})
    for key in ("sums", "left", "caring"):
        assert torch.equal(getattr(fresh, key), getattr(kit.method, key))
    assert fresh.sums.abs().sum() > 0
