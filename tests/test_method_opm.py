"""OPM (on-the-fly prediction modulation): drop probabilities, masks and rescaling on known values, which
encoder the loss reaches when the dominant feature is dropped, warm-up, the global-batch draw of a
multi-process run, exact resume, and 2- and 3-modality runs."""

import math

import pytest
import torch
import torch.nn.functional as F

import engine.methods.opm as opm
from engine.methods.opm import draw_keep, drop_probabilities, dropped_features, rescale_factor
from engine.methods.ogm import discrepancy_ratios
from engine.run import resume_run, start_run

from methodkit import THREE, Kit
from runtools import InterruptAt, last_checkpoint, metric_rows, same_tensors, tiny_preset

ALWAYS = {"warmup_epochs": 0, "p_exe": 1.0}


# -- the pieces on hand-made numbers -----------------------------------------------------------------
def test_drop_probability_of_the_leading_modality_only():
    s = torch.tensor([3.0, 1.0])
    q = drop_probabilities(s, discrepancy_ratios(s), q_base=0.5, lam=0.5)
    assert q.tolist() == pytest.approx([0.5 * (1 + 0.5 * math.tanh(2.0)), 0.0])   # rho_a = 3, rho_b = 1/3
    q = drop_probabilities(s, discrepancy_ratios(s), q_base=0.9, lam=1.0)
    assert q.tolist() == [1.0, 0.0]                                                # clipped to 1
    s = torch.tensor([3.0, 1.0, 2.0])                                              # rho = 2, 0.4, 1 (a tie)
    q = drop_probabilities(s, discrepancy_ratios(s), q_base=0.4, lam=0.5)
    assert q.tolist() == pytest.approx([0.4 * (1 + 0.5 * math.tanh(1.0)), 0.0, 0.0])
    s = torch.tensor([2.0, 2.0])
    assert drop_probabilities(s, discrepancy_ratios(s), 0.5, 0.5).tolist() == [0.0, 0.0]   # balanced: no drop


def test_the_lowest_score_is_never_dropped_even_if_rounding_puts_its_ratio_above_one():
    q = drop_probabilities(torch.tensor([1.0, 2.0, 2.0]), torch.tensor([1.0 + 1e-7, 1.2, 1.2]), 0.5, 0.5)
    assert q[0] == 0 and q[1] > 0.5 and q[2] > 0.5


def test_masks_keep_with_probability_one_minus_q_and_rescale_by_the_dropped_feature_share():
    u = torch.tensor([[0.1, 0.9], [0.6, 0.2]])
    q = torch.tensor([0.5, 0.0])
    on, off = torch.tensor(True), torch.tensor(False)
    assert draw_keep(u, q, on).tolist() == [[False, True], [True, True]]
    assert draw_keep(u, q, off).all()
    dims = torch.tensor([8.0, 4.0])
    assert rescale_factor(q, dims, on).item() == pytest.approx(1 / (1 - 4 / 12))    # theta = 8 * 0.5 / 12
    assert rescale_factor(q, dims, off).item() == 1.0
    z = {"a": torch.ones(2, 3), "b": torch.full((2, 2), 2.0)}
    out = dropped_features(z, draw_keep(u, q, on), torch.tensor(1.5))
    assert out["a"].tolist() == [[0.0] * 3, [1.5] * 3] and out["b"].tolist() == [[3.0] * 2] * 2


# -- a training step ----------------------------------------------------------------------------------
def test_a_dropped_dominant_feature_sends_no_gradient_to_its_encoder():
    kit = Kit.build("opm", {**ALWAYS, "q_base": 1.0, "lam": 0.0}, dropout=0.0)  # q = 1: always dropped
    x, y = kit.batch(24)
    out = kit.model(x)
    lead = max("ab", key=lambda m: F.softmax(out.logits[m], -1).gather(1, y[:, None]).sum().item())
    weak = "b" if lead == "a" else "a"
    theta = 8 * 1.0 / 16                                                  # both features of width 8
    expected = F.cross_entropy(kit.model.head({lead: out.features[lead] * 0,
                                               weak: out.features[weak] / (1 - theta)})[0], y)
    result, grads = kit.step_grads(x, y)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert result.live[f"method/q/{lead}"].item() == 1.0 and result.live[f"method/dropped/{lead}"].item() == 1.0
    assert result.live[f"coef/{lead}"].item() == 0.0 and result.live[f"coef/{weak}"].item() == 1.0
    assert result.live[f"method/dropped/{weak}"].item() == 0.0 and result.live["method/executed"].item() == 1.0
    assert all(g.abs().sum() == 0 for n, g in grads.items() if n.startswith(f"encoders.{lead}."))  # x 0
    assert any(n.startswith(f"encoders.{weak}.") and g.abs().sum() > 0 for n, g in grads.items())
    torch.testing.assert_close(result.output.fused, out.fused)           # train metrics: the clean prediction


def test_without_a_drop_the_step_is_joint_training_bit_for_bit():
    a = Kit.build("joint", optimizer="adamw", dropout=0.0)
    b = Kit.build("opm", {"warmup_epochs": 0, "p_exe": 0.0}, optimizer="adamw", dropout=0.0)
    for _ in range(3):
        ra, rb = a.step(), b.step()
        assert torch.equal(ra.loss, rb.loss) and rb.live["method/executed"].item() == 0.0
        assert all(rb.live[f"coef/{m}"].item() == 1.0 for m in "ab")
    assert same_tensors(a.snapshot(), b.snapshot())


def test_no_drop_during_warm_up_then_dropping_starts():
    kit = Kit.build("opm", {"warmup_epochs": 2, "p_exe": 1.0})
    warm = kit.step(epoch=1)
    assert warm.live["method/executed"].item() == 0.0 and max(warm.live[f"method/q/{m}"].item() for m in "ab") > 0
    assert all(warm.live[f"coef/{m}"].item() == 1.0 and warm.live[f"method/dropped/{m}"].item() == 0 for m in "ab")
    on = kit.step(epoch=2)
    assert on.live["method/executed"].item() == 1.0
    assert min(on.live[f"coef/{m}"].item() for m in "ab") < 1


def test_ranks_take_their_rows_of_one_global_draw(monkeypatch):
    kit = Kit.build("opm", ALWAYS)
    q = torch.tensor([0.6, 0.0])
    start = kit.method.generator.get_state()
    whole, executed, dropped = kit.method._draw(q, 8)
    parts = []
    for r in range(2):
        monkeypatch.setattr(opm, "world_size", lambda: 2)
        monkeypatch.setattr(opm, "rank", lambda r=r: r)
        kit.method.generator.set_state(start)
        mine, ex, dr = kit.method._draw(q, 4)
        assert torch.equal(ex, executed) and torch.equal(dr, dropped)   # the same on every rank
        parts.append(mine)
    assert torch.equal(torch.cat(parts), whole) and not whole[:, 0].all() and whole[:, 1].all()


# -- whole runs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mods", [("a", "b"), THREE])
def test_a_run_drops_leading_modalities_at_about_their_rate_and_every_modality_learns(mods):
    kit = Kit.build("opm", {"warmup_epochs": 1, "p_exe": 0.7}, modalities=mods, epochs=3)
    kit.fit()
    lives = [{k: v.item() for k, v in live.items()} for live in kit.lives]
    assert all(v["method/executed"] == 0 for v in lives[:7])                # epoch 0: warm-up
    late = lives[7:]
    assert 0.3 < sum(v["method/executed"] for v in late) / len(late) < 1   # p_exe 0.7 over 14 steps
    for v in late:
        weakest = min(mods, key=lambda m: v[f"score/{m}"])
        assert v[f"method/q/{weakest}"] == 0 and v[f"method/dropped/{weakest}"] == 0
        for m in mods:
            assert v[f"coef/{m}"] == (1 - v[f"method/q/{m}"] if v["method/executed"] else 1.0)
    dropped = sum(v[f"method/dropped/{m}"] for v in late for m in mods)
    expected = sum(v[f"method/q/{m}"] * v["method/executed"] for v in late for m in mods)
    assert expected > 0 and dropped == pytest.approx(expected, rel=0.25)
    val = kit.recorder.split("val")[-1]
    assert all(val[f"val/acc/{m}"] > 0.4 for m in mods)                     # 3 classes


def test_an_interrupted_run_resumes_bitwise(tmp_path):
    preset = tmp_path / "opm.toml"
    preset.write_text(tiny_preset('name = "opm"\nwarmup_epochs = 1', name="opm-resume", epochs=3,
                                  optimizer="adamw", lr=0.01))
    runs = tmp_path / "runs"
    straight = start_run(preset, runs_dir=runs)
    cut = start_run(preset, runs_dir=runs, reporter=InterruptAt(10))         # epoch 1: dropping
    assert cut.state == "interrupted"
    assert resume_run(cut.run_id, runs_dir=runs).state == "finished"
    a, b = last_checkpoint(straight.run_dir), last_checkpoint(cut.run_dir)
    assert same_tensors(a["model"], b["model"]) and torch.equal(a["method"]["generator"], b["method"]["generator"])
    rows = metric_rows(straight.run_dir, ("train", "val"))
    assert rows == metric_rows(cut.run_dir, ("train", "val"))
    assert any(m.get("method/executed", 0) > 0 for _, split, m in rows if split == "train")
