"""InfoNCE pairwise information mi/<a>;<b>: known answers on correlated Gaussians, the log-rows cap, the formula."""

import math

import pytest
import torch

from engine.models import ModelOutput
from engine.monitor import MonitorConfig, Monitors, modality_pairs, pair_name
from engine.monitor.infonce import infonce

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def correlated(n: int, d: int, rho: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x ~ N(0, I_d), y = rho x + sqrt(1 - rho^2) e: I(X; Y) = -d/2 log(1 - rho^2)."""
    x = torch.randn(n, d, generator=g)
    return x, rho * x + math.sqrt(1 - rho ** 2) * torch.randn(n, d, generator=g)


def pairwise_only(**kw) -> MonitorConfig:
    return MonitorConfig(mi=False, cmi=False, shapley=False, grad=False, update_every=1, max_overhead=0.0, **kw)


def trained_estimate(rho: float, d: int, steps: int = 300, batch: int = 128, n_eval: int = 4096) -> float:
    g = torch.Generator().manual_seed(1)
    cfg = pairwise_only(critic_hidden=64, critic_embed=16, critic_lr=3e-3)
    mon = Monitors(cfg, ["a", "b"], {"a": d, "b": d}, 2, torch.tensor([0.5, 0.5]), CPU)
    labels = torch.zeros(batch, dtype=torch.long)
    for step in range(steps):
        x, y = correlated(batch, d, rho, g)
        mon.observe_step(ModelOutput(None, {}, {"a": x, "b": y}), labels, step)
    x, y = correlated(n_eval, d, rho, g)
    out = mon.evaluate(None, {"a": x, "b": y}, {}, torch.zeros(n_eval, 2), torch.zeros(n_eval, dtype=torch.long))
    return out["mi/a;b"].item()


@pytest.mark.parametrize("rho,d", [(0.5, 4), (0.8, 2), (0.95, 1)])
def test_infonce_recovers_the_mutual_information_of_correlated_gaussians(rho, d):
    true = -0.5 * d * math.log(1 - rho ** 2)   # 0.575, 1.022, 1.164 nats; all far below log(4096)
    assert trained_estimate(rho, d) == pytest.approx(true, rel=0.10)


def test_infonce_is_capped_at_the_log_of_the_rows_scored_together():
    # X = Y (infinite information): a trained critic reaches, but never passes, log N
    g = torch.Generator().manual_seed(0)
    mon = Monitors(pairwise_only(critic_lr=3e-3), ["a", "b"], {"a": 4, "b": 4}, 2, torch.tensor([0.5, 0.5]), CPU)
    for step in range(200):
        x = torch.randn(64, 4, generator=g)
        mon.observe_step(ModelOutput(None, {}, {"a": x, "b": x}), torch.zeros(64, dtype=torch.long), step)
    for n in (16, 256):
        x = torch.randn(n, 4, generator=g)
        est = mon.evaluate(None, {"a": x, "b": x}, {}, torch.zeros(n, 2), torch.zeros(n, dtype=torch.long))["mi/a;b"]
        assert est.item() <= math.log(n) + 1e-6
        assert est.item() >= 0.9 * math.log(n)


def test_infonce_formula_and_its_chunked_form():
    g = torch.Generator().manual_seed(3)
    left, right = torch.randn(2, 10, 3, generator=g), torch.randn(2, 10, 3, generator=g)
    scores = left @ right.transpose(1, 2)                     # (P, N, N)
    diag = scores.diagonal(dim1=1, dim2=2)
    rows = (diag - scores.logsumexp(-1)).mean(-1)             # a -> b direction
    cols = (diag - scores.logsumexp(1)).mean(-1)              # b -> a direction
    expected = math.log(10) + 0.5 * (rows + cols)
    torch.testing.assert_close(infonce(left, right), expected)
    torch.testing.assert_close(infonce(left, right, chunk_rows=3), expected)


def test_pairs_follow_the_modality_order_and_are_named_mi_a_semicolon_b():
    assert modality_pairs(["x", "y", "z"]) == [("x", "y"), ("x", "z"), ("y", "z")]
    assert pair_name("x", "z") == "mi/x;z"
    mon = Monitors(pairwise_only(), ["x", "y", "z"], {"x": 2, "y": 3, "z": 4}, 2, torch.tensor([0.5, 0.5]), CPU)
    feats = {"x": torch.randn(32, 2), "y": torch.randn(32, 3), "z": torch.randn(32, 4)}
    mon.observe_step(ModelOutput(None, {}, feats), torch.zeros(32, dtype=torch.long), 0)
    assert list(mon.interval_values()) == ["mi/x;y", "mi/x;z", "mi/y;z"]
    out = mon.evaluate(None, feats, {}, torch.zeros(32, 2), torch.zeros(32, dtype=torch.long))
    assert list(out) == ["mi/x;y", "mi/x;z", "mi/y;z"]
    assert all(v.dim() == 0 for v in out.values())
