"""OGM and OGM-GE (on-the-fly gradient modulation) on known values, their noise, window and exact resume."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from engine.config import load_preset
from engine.errors import PresetError
from engine.methods import METHODS, MethodContext
from engine.methods.ogm import discrepancy_ratios, modulate_, modulation_coefficients, score_sums
from engine.models import ModalitySpec, ModelSpec, build_model
from engine.models.encoders.mlp import MLPConfig
from engine.run import resume_run
from engine.store import read_metrics, read_summary
from mmbal_cli.app import app

from methodkit import hand_step
from runtools import last_checkpoint, metric_rows, same_tensors, straight_and_cut, tiny_preset

DIMS = {"a": (5,), "b": (3,), "c": (4,)}
ROOT = Path(__file__).resolve().parents[1]


def make(method="ogm", mods=("a", "b"), fusion="concat", hidden=8, epoch=0, **options):
    """A model with the method, a batch, and a step context whose backward/step do nothing else."""
    torch.manual_seed(0)
    spec = ModelSpec(tuple(ModalitySpec(m, "mlp", MLPConfig(hidden=[hidden], dim=4)) for m in mods), fusion)
    model = build_model(spec, {m: DIMS[m] for m in mods}, 3)
    ctx = MethodContext(modalities=list(mods), n_classes=3, epochs=4, steps_per_epoch=1,
                        device=torch.device("cpu"), seed=0)
    entry = METHODS.entry(method)
    ogm = entry.builder(entry.config(**options), ctx)
    ogm.setup(model)
    step = hand_step(model, epoch=epoch)
    gen = torch.Generator().manual_seed(1)
    x = {m: torch.randn(12, *DIMS[m], generator=gen) for m in mods}
    y = torch.arange(12) % 3
    return model, ogm, step, x, y


def joint_grads(model, x, y):
    """Encoder and head gradients of the plain fused cross-entropy (what joint training would apply)."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x).fused, y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def ogm_step(model, method, step, x, y):
    """Forward, loss, backward and after_backward as ``Method.train_step`` runs them (without the optimiser)."""
    out = method.forward(model, x)
    loss, live = method.loss(out, y, step)
    heads = method.modality_head_loss(out, y, step)
    step.backward(loss if heads is None else loss + heads)
    if heads is not None:
        live["method/head_ce"] = heads.detach()
    live.update(method.after_backward(model, out, y, step))
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, live


def expected_scores(model, x, y):
    """s_m by the release's per-sample loop, as a reference."""
    logits = model(x).logits
    return {m: sum(F.softmax(l, dim=-1)[i][y[i]].item() for i in range(len(y))) for m, l in logits.items()}


# -- the pieces on hand-made numbers -----------------------------------------------------------------
def test_scores_ratios_and_coefficients_on_hand_made_logits():
    ln3 = math.log(3)
    logits = torch.tensor([[[ln3, 0.0], [ln3, 0.0]],      # a: p(y) = 3/4 twice -> s_a = 1.5
                           [[0.0, 0.0], [0.0, 0.0]]])     # b: p(y) = 1/2 twice -> s_b = 1.0
    s = score_sums(logits, torch.tensor([0, 0]))
    assert s.tolist() == pytest.approx([1.5, 1.0])
    rho = discrepancy_ratios(s)
    assert rho.tolist() == pytest.approx([1.5, 1 / 1.5])
    k = modulation_coefficients(rho, 0.5, "paper")
    assert k.tolist() == pytest.approx([1 - math.tanh(0.5 * 1.5), 1.0])
    k = modulation_coefficients(rho, 0.5, "shifted")
    assert k.tolist() == pytest.approx([1 - math.tanh(0.5 * 0.5), 1.0])
    assert modulation_coefficients(rho, 0.0).tolist() == [1.0, 1.0]


def test_two_modality_ratios_are_exact_reciprocal_divisions():
    s = torch.tensor([0.3, 0.7])
    rho = discrepancy_ratios(s)
    assert rho[0] == s[0] / s[1] and rho[1] == s[1] / s[0]


def test_three_modalities_compare_each_with_the_mean_of_the_others():
    rho = discrepancy_ratios(torch.tensor([3.0, 1.0, 2.0]))
    assert rho.tolist() == pytest.approx([2.0, 0.4, 1.0])          # 3 / 1.5, 1 / 2.5, 2 / 2
    k = modulation_coefficients(rho, 0.3)
    assert k.tolist() == pytest.approx([1 - math.tanh(0.6), 1.0, 1.0])  # a tie (rho = 1) is not modulated
    rho = discrepancy_ratios(torch.tensor([3.0, 2.5, 1.0]))
    k = modulation_coefficients(rho, 0.3)
    assert rho.tolist() == pytest.approx([3 / 1.75, 2.5 / 2, 1 / 2.75])
    assert k.tolist() == pytest.approx([1 - math.tanh(0.3 * 3 / 1.75), 1 - math.tanh(0.3 * 1.25), 1.0])


# -- after_backward on a model -------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["paper", "shifted"])
def test_encoder_gradients_are_the_joint_gradients_times_the_coefficient(rule):
    model, method, step, x, y = make("ogm", alpha=0.7, rule=rule)
    joint = joint_grads(model, x, y)
    s = expected_scores(model, x, y)
    grads, live = ogm_step(model, method, step, x, y)
    rho = {"a": s["a"] / s["b"], "b": s["b"] / s["a"]}
    strong = max(rho, key=rho.get)
    weak = "b" if strong == "a" else "a"
    excess = rho[strong] if rule == "paper" else rho[strong] - 1
    k = 1 - math.tanh(0.7 * excess)
    assert live[f"coef/{strong}"].item() == pytest.approx(k, rel=1e-5) and live[f"coef/{weak}"].item() == 1.0
    for m in ("a", "b"):
        assert live[f"score/{m}"].item() == pytest.approx(s[m] / 12, rel=1e-5)
        assert live[f"method/ratio/{m}"].item() == pytest.approx(rho[m], rel=1e-5)
    for name, g in grads.items():
        if name.startswith(f"encoders.{strong}."):
            torch.testing.assert_close(g, joint[name] * k, rtol=1e-5, atol=1e-7)
            assert not torch.equal(g, joint[name])
        else:  # the weak encoder and the fusion head: untouched
            assert torch.equal(g, joint[name]), name


def test_three_modalities_scale_every_encoder_by_its_own_coefficient():
    model, method, step, x, y = make("ogm", mods=("a", "b", "c"), alpha=0.4)
    joint = joint_grads(model, x, y)
    s = expected_scores(model, x, y)
    grads, live = ogm_step(model, method, step, x, y)
    for m in ("a", "b", "c"):
        rho = s[m] / (sum(v for o, v in s.items() if o != m) / 2)
        k = 1 - math.tanh(0.4 * rho) if rho > 1 else 1.0
        assert live[f"method/ratio/{m}"].item() == pytest.approx(rho, rel=1e-5)
        assert live[f"coef/{m}"].item() == pytest.approx(k, rel=1e-5)
        for name, g in grads.items():
            if name.startswith(f"encoders.{m}."):
                torch.testing.assert_close(g, joint[name] * k, rtol=1e-5, atol=1e-7)
    assert any(live[f"coef/{m}"].item() < 1 for m in ("a", "b", "c"))


@pytest.mark.parametrize("method", ["ogm", "ogm_ge"])
@pytest.mark.parametrize("epoch, window", [(0, dict(modulation_start=1)), (3, dict(modulation_start=1, modulation_end=3))])
def test_no_modulation_outside_the_epoch_window(method, epoch, window):
    model, ogm, step, x, y = make(method, epoch=epoch, alpha=0.9, **window)
    joint = joint_grads(model, x, y)
    grads, live = ogm_step(model, ogm, step, x, y)
    assert all(torch.equal(g, joint[n]) for n, g in grads.items())
    assert live["coef/a"].item() == 1.0 and live["coef/b"].item() == 1.0
    assert max(live["method/ratio/a"].item(), live["method/ratio/b"].item()) > 1  # still measured and logged
    model2, ogm2, step2, *_ = make(method, epoch=1, alpha=0.9, **window)  # inside the window: modulated
    grads2, live2 = ogm_step(model2, ogm2, step2, x, y)
    assert min(live2["coef/a"].item(), live2["coef/b"].item()) < 1
    assert not all(torch.equal(g, joint[n]) for n, g in grads2.items())


def test_window_options_are_checked():
    with pytest.raises(ValueError, match="modulation_end"):
        METHODS.entry("ogm").config(modulation_start=5, modulation_end=5)


def test_one_modality_is_a_preset_error():
    ctx = MethodContext(modalities=["a"], n_classes=3, epochs=1, steps_per_epoch=1, device=torch.device("cpu"))
    with pytest.raises(PresetError, match="at least two"):
        METHODS.get("ogm_ge")(METHODS.entry("ogm_ge").config(), ctx)


# -- OGM-GE noise ---------------------------------------------------------------------------------------
def test_ge_noise_has_the_gradient_std_and_zero_mean_on_a_large_parameter():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(300, 200, generator=gen) * 0.03 + 0.01
    original = g.clone()
    k = torch.tensor(0.4)
    modulate_([g], k, torch.tensor(1.0), torch.Generator().manual_seed(5))
    noise = g - original * k
    assert noise.std().item() == pytest.approx(original.std().item(), rel=0.02)  # std of the *unscaled* gradient
    assert abs(noise.mean().item()) < 4 * original.std().item() / math.sqrt(g.numel())
    assert abs(torch.corrcoef(torch.stack([noise.flatten(), original.flatten()]))[0, 1].item()) < 0.02
    again = original.clone()
    modulate_([again], k, torch.tensor(0.0), torch.Generator().manual_seed(5))  # gated off
    assert torch.equal(again, original * k)


def test_ogm_ge_adds_noise_to_every_encoder_and_ogm_adds_none():
    model, method, step, x, y = make("ogm_ge", hidden=256, alpha=0.5)
    joint = joint_grads(model, x, y)
    grads, live = ogm_step(model, method, step, x, y)
    for m in ("a", "b"):
        k = live[f"coef/{m}"]
        w = f"encoders.{m}.net.0.weight"
        assert w in grads and grads[w].numel() >= 768
        noise = grads[w] - joint[w] * k
        assert noise.std().item() == pytest.approx(joint[w].std().item(), rel=0.1)
    assert all(torch.equal(grads[n], joint[n]) for n in grads if n.startswith("fusion."))

    plain, ogm, step2, *_ = make("ogm", hidden=256, alpha=0.5)
    grads2, live2 = ogm_step(plain, ogm, step2, x, y)
    for n, g in grads2.items():
        coef = live2[f"coef/{n.split('.')[1]}"] if n.startswith("encoders.") else 1.0
        torch.testing.assert_close(g, joint[n] * coef, rtol=1e-5, atol=1e-8)


def test_dominant_noise_leaves_the_weak_encoder_untouched():
    model, method, step, x, y = make("ogm_ge", alpha=0.5, noise_on="dominant")
    joint = joint_grads(model, x, y)
    grads, live = ogm_step(model, method, step, x, y)
    weak = "a" if live["method/ratio/a"].item() < 1 else "b"
    strong = "b" if weak == "a" else "a"
    assert all(torch.equal(g, joint[n]) for n, g in grads.items() if n.startswith(f"encoders.{weak}."))
    k = live[f"coef/{strong}"]
    w = f"encoders.{strong}.net.0.weight"
    assert not torch.allclose(grads[w], joint[w] * k)  # noise on the dominant one


def test_noise_stream_is_seeded_and_restored_from_the_method_state():
    model, method, step, x, y = make("ogm_ge")
    state = method.state_dict()
    first, _ = ogm_step(model, method, step, x, y)
    second, _ = ogm_step(model, method, step, x, y)
    assert not torch.equal(first["encoders.a.net.0.weight"], second["encoders.a.net.0.weight"])
    model2, method2, step2, *_ = make("ogm_ge")
    method2.load_state_dict(state)
    again, _ = ogm_step(model2, method2, step2, x, y)
    assert all(torch.equal(again[n], first[n]) for n in first)


def test_non_additive_fusion_trains_unimodal_heads_on_detached_features():
    model, method, step, x, y = make("ogm", fusion="gated", alpha=0.5)
    joint = joint_grads(model, x, y)
    grads, live = ogm_step(model, method, step, x, y)
    assert live["method/head_ce"].item() > 0
    assert "fusion.heads.a.weight" in grads and "fusion.heads.a.weight" not in joint
    for name, g in grads.items():  # the encoders get the fused loss's gradient only, times k
        if name.startswith("encoders."):
            coef = live[f"coef/{name.split('.')[1]}"]
            torch.testing.assert_close(g, joint[name] * coef, rtol=1e-5, atol=1e-7)


# -- whole runs --------------------------------------------------------------------------------------------
PRESET = tiny_preset('name = "ogm_ge"\nalpha = 0.5\nmodulation_end = 2', name="ogm-resume", seed=3,
                     data={"synthetic": {"unique": [1.0, 0.2], "noise": [0.5, 1.0]}})


def test_ogm_ge_run_logs_live_values_and_resumes_mid_epoch_bitwise(tmp_path):
    runs = tmp_path / "runs"
    straight, cut = straight_and_cut(tmp_path, PRESET, 10)  # cut in epoch 1, batch 3
    train = [r for r in read_metrics(straight.run_dir / "metrics.jsonl").metric_rows() if r["split"] == "train"]
    assert {"coef/a", "coef/b", "score/a", "score/b", "method/ratio/a", "method/ratio/b"} <= set(train[0]["m"])
    assert min(train[0]["m"]["coef/a"], train[0]["m"]["coef/b"]) < 1          # modulated in epochs 0-1
    late = [r["m"] for r in train if r["epoch"] > 2]                           # epoch 2: window closed
    assert late and all(v["coef/a"] == 1 and v["coef/b"] == 1 for v in late)

    assert last_checkpoint(cut.run_dir)["position"] == {"epoch": 1, "batch": 3, "step": 10}
    assert resume_run(cut.run_id, runs_dir=runs).state == "finished"
    a, b = last_checkpoint(straight.run_dir), last_checkpoint(cut.run_dir)
    assert same_tensors(a["model"], b["model"]) and torch.equal(a["method"]["generator"], b["method"]["generator"])
    assert metric_rows(straight.run_dir, ("train", "val")) == metric_rows(cut.run_dir, ("train", "val"))


def test_avdigits_hard_preset_runs_through_the_cli(tmp_path):
    """One epoch of the shipped preset through ``mmbal run`` (narrower conv encoders to keep it quick)."""
    runs = tmp_path / "runs"
    res = CliRunner().invoke(app, ["run", str(ROOT / "presets" / "avdigits_hard_ogm_ge.toml"),
                                   "--set", "train.epochs=1", "--set", "train.warmup_epochs=0",
                                   "--set", "monitor.enabled=false", "--set", "modalities.audio.channels=[8, 16]",
                                   "--set", "modalities.image.channels=[8, 16]"],
                             env={"MMBAL_RUNS_DIR": str(runs)})
    assert res.exit_code == 0, res.output
    run_dir = next(runs.iterdir())
    summary = read_summary(run_dir)
    assert summary["method"] == "ogm_ge" and summary["status"] == "finished"
    assert summary["test"]["test/acc/fused"] > 0.15  # 10 classes
    train = [r["m"] for r in read_metrics(run_dir / "metrics.jsonl").metric_rows() if r["split"] == "train"]
    for values in train:  # interval means: the leading modality is slowed down, coefficients stay in (0, 1]
        lead = max(("audio", "image"), key=lambda m: values[f"method/ratio/{m}"])
        assert values[f"method/ratio/{lead}"] > 1 and 0 < values[f"coef/{lead}"] < 1
        assert all(0 < values[f"coef/{m}"] <= 1 and 0 < values[f"score/{m}"] < 1 for m in ("audio", "image"))


def test_uci_mfeat_preset_is_valid():
    cfg, _ = load_preset(ROOT / "presets" / "uci_mfeat_ogm_ge.toml")
    assert cfg.method_name == "ogm_ge" and len(cfg.modalities) == 6 and cfg.method.noise_on == "all"
