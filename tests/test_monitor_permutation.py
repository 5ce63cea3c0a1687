"""The latent-permutation estimator of I(Y; Z_m | Z_others): known answers with an exact Bayes head."""

import math

import pytest
import torch

from engine.monitor import MonitorConfig, Monitors
from engine.monitor.permutation import conditional_information, neighbour_rows, random_rows

CPU = torch.device("cpu")
MU = 1.0


pytestmark = pytest.mark.usefixtures("one_thread")


def binary_gaussian_information(mu: float, sigma: float) -> float:
    """I(Y; W) for Y = +-1 equiprobable and W = mu Y + N(0, sigma^2), by quadrature: h(W) - h(W | Y)."""
    w = torch.linspace(-mu - 12 * sigma, mu + 12 * sigma, 400_001, dtype=torch.float64)
    dens = lambda c: torch.exp(-(w - c) ** 2 / (2 * sigma ** 2)) / math.sqrt(2 * math.pi * sigma ** 2)  # noqa: E731
    p = 0.5 * (dens(mu) + dens(-mu))
    h_w = -(p * p.clamp_min(1e-300).log()).sum() * (w[1] - w[0])
    return h_w.item() - 0.5 * math.log(2 * math.pi * math.e * sigma ** 2)


def problem(case: str, n: int = 4000):
    """Y uniform in {0, 1}, s = 2Y - 1, z_a = s + N(0, 1); z_b and the exact posterior's log-odds by case."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    s = 2.0 * y - 1
    za = MU * s + torch.randn(n, generator=g)
    if case == "noise":        # z_b independent of everything: I(Y;Z_a|Z_b) = I(Y;Z_a), I(Y;Z_b|Z_a) = 0
        zb, log_odds = torch.randn(n, generator=g), lambda a, b: 2 * MU * a
        truth = (binary_gaussian_information(MU, 1), 0.0)
    elif case == "copy":       # z_b = z_a: both conditional informations are 0
        zb, log_odds = za.clone(), lambda a, b: MU * (a + b)
        truth = (0.0, 0.0)
    else:                      # two conditionally independent views: I(Y; A, B) - I(Y; B) each
        zb, log_odds = MU * s + torch.randn(n, generator=g), lambda a, b: 2 * MU * (a + b)
        both = binary_gaussian_information(2 * MU, math.sqrt(2))
        truth = (both - binary_gaussian_information(MU, 1),) * 2

    def head(f):
        lo = log_odds(f["a"][..., 0], f["b"][..., 0])
        return torch.stack([-lo / 2, lo / 2], dim=-1), {}
    return head, {"a": za[:, None], "b": zb[:, None]}, y, truth


def cmi(case: str, **kw) -> tuple[float, float]:
    head, feats, y, _ = problem(case)
    cfg = MonitorConfig(mi=False, pairwise=False, shapley=False, grad=False, **kw)
    mon = Monitors(cfg, ["a", "b"], {"a": 1, "b": 1}, 2, torch.tensor([0.5, 0.5]), CPU)
    out = mon.evaluate(head, feats, {}, head(feats)[0], y)
    return out["cmi/a"].item(), out["cmi/b"].item()


@pytest.mark.parametrize("case", ["noise", "copy", "views"])
def test_conditional_permutation_matches_the_analytic_conditional_information(case):
    truth = problem(case)[3]            # noise: (0.337, 0); copy: (0, 0); views: (0.163, 0.163) nats
    est = cmi(case)
    assert est == pytest.approx(truth, abs=0.03)


def test_plain_permutation_counts_redundant_information_as_unique():
    # MCR's plain permutation draws z_a from p(z_a), off the data when z_b = z_a: it reports information
    # that the conditional version (and the truth) says is not unique
    plain = cmi("copy", cmi_conditional=False)
    assert min(plain) > 0.05
    assert max(abs(v) for v in cmi("copy")) < 0.01
    # without redundancy both agree on the answer
    assert cmi("noise", cmi_conditional=False) == pytest.approx(cmi("noise"), abs=0.03)


def test_estimator_is_deterministic_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    first = cmi("views", cmi_conditional=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert cmi("views", cmi_conditional=False) == first
    assert cmi("views", cmi_conditional=False, seed=1) != first


def test_neighbour_rows_are_the_nearest_other_rows():
    points = torch.tensor([[0.0], [1.0], [3.0], [3.5], [10.0]])
    rows = neighbour_rows(points, 2, chunk_rows=2)
    assert rows.T.tolist() == [[1, 2], [0, 2], [3, 1], [2, 1], [3, 2]]
    assert neighbour_rows(points, 9).shape == (4, 5)  # never more than the other rows


def test_random_rows_are_seeded_permutations():
    g = torch.Generator().manual_seed(5)
    rows = random_rows(7, 3, g, CPU)
    assert all(sorted(r.tolist()) == list(range(7)) for r in rows)
    assert torch.equal(rows, random_rows(7, 3, torch.Generator().manual_seed(5), CPU))


def test_conditional_information_is_the_mean_log_ratio_to_the_permutation_mixture():
    log_full = torch.log(torch.tensor([0.9, 0.6]))
    log_perm = torch.log(torch.tensor([[0.5, 0.2], [0.3, 0.6]]))     # K = 2 copies of N = 2 rows
    expected = 0.5 * (math.log(0.9 / 0.4) + math.log(0.6 / 0.4))
    assert conditional_information(log_full, log_perm).item() == pytest.approx(expected)
