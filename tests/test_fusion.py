"""Fusion heads: exact additive decompositions, FiLM identity, GMU gates, any M and leading shape."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.models.fusion import FUSIONS
from engine.models.fusion.concat import ConcatConfig
from engine.models.fusion.film import FiLMConfig
from engine.models.fusion.gated import GatedConfig
from engine.models.fusion.sum import SumConfig
from engine.schema import build

C = 5


def dims(n: int) -> dict[str, int]:
    return {f"m{i}": 3 + 2 * i for i in range(n)}


def feats(in_dims: dict[str, int], *lead: int) -> dict[str, torch.Tensor]:
    return {m: torch.randn(*lead, d) for m, d in in_dims.items()}


def make(name: str, in_dims: dict[str, int], cfg=None):
    torch.manual_seed(0)
    entry = FUSIONS.entry(name)
    return entry.builder(cfg if cfg is not None else entry.config(), in_dims, C)


def test_registry_lists_the_four_fusions_with_their_additivity():
    assert set(FUSIONS.names()) == {"concat", "sum", "film", "gated"}
    additive = {name: make(name, dims(2)).additive for name in FUSIONS.names()}
    assert additive == {"concat": True, "sum": True, "film": False, "gated": False}


def test_concat_decomposes_exactly_and_equals_one_linear_over_the_concatenation():
    in_dims = dims(3)
    fusion = make("concat", in_dims).eval()
    z = feats(in_dims, 4)
    fused, logits = fusion(z)
    torch.testing.assert_close(fused, torch.stack(list(logits.values())).sum(0), atol=1e-6, rtol=0)
    w, b = fusion.linear.weight, fusion.linear.bias
    torch.testing.assert_close(fused, F.linear(torch.cat(list(z.values()), -1), w, b), atol=1e-6, rtol=1e-6)
    assert fusion.weight_of("m1").shape == (C, 5)
    torch.testing.assert_close(fusion.weight_of("m1"), w[:, 3:8])
    torch.testing.assert_close(logits["m1"], z["m1"] @ w[:, 3:8].T + b / 3)


def test_concat_weight_slices_receive_only_their_modality_gradient():
    in_dims = dims(2)
    fusion = make("concat", in_dims)
    _, logits = fusion(feats(in_dims, 4))
    logits["m0"].sum().backward()
    assert fusion.linear.weight.grad[:, :3].abs().sum() > 0
    assert torch.all(fusion.linear.weight.grad[:, 3:] == 0)


def test_sum_is_late_fusion_of_per_modality_heads():
    in_dims = dims(3)
    fusion = make("sum", in_dims)
    z = feats(in_dims, 4)
    fused, logits = fusion(z)
    for m in in_dims:
        torch.testing.assert_close(logits[m], fusion.heads[m](z[m]))
    torch.testing.assert_close(fused, sum(fusion.heads[m](z[m]) for m in in_dims), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fused, torch.stack(list(logits.values())).sum(0), atol=1e-6, rtol=0)


def test_film_with_identity_generators_is_the_unmodulated_path():
    in_dims = dims(3)
    fusion = make("film", in_dims, FiLMConfig(hidden=7))
    with torch.no_grad():
        for gen in fusion.generators.values():
            gen.weight.zero_()
            gen.bias.zero_()   # delta_gamma = 0, beta = 0: gamma = 1
    z = feats(in_dims, 4)
    fused, _ = fusion(z)
    expected = fusion.classifier(torch.relu(fusion.project(z["m0"])))
    torch.testing.assert_close(fused, expected)


def test_film_modulates_the_target_by_every_other_modality_in_order():
    in_dims = dims(3)
    fusion = make("film", in_dims, FiLMConfig(hidden=6, target="m1"))
    assert fusion.target == "m1" and list(fusion.generators) == ["m0", "m2"]
    assert fusion.project.in_features == 5
    z = feats(in_dims, 4)
    fused, logits = fusion(z)
    h = fusion.project(z["m1"])
    for m in ("m0", "m2"):
        gb = fusion.generators[m](z[m])
        h = (1 + gb[:, :6]) * h + gb[:, 6:]
    torch.testing.assert_close(fused, fusion.classifier(torch.relu(h)))
    for m in in_dims:
        torch.testing.assert_close(logits[m], fusion.heads[m](z[m]))


def test_film_rejects_an_unknown_target_naming_the_option():
    with pytest.raises(ValueError, match=r"target: unknown modality 'audo' \(did you mean 'audio'\?\)"):
        FUSIONS.get("film")(FiLMConfig(target="audo"), {"audio": 3, "video": 4}, C)


def test_gated_gates_are_distributions_over_modalities_and_define_the_output():
    in_dims = dims(3)
    fusion = make("gated", in_dims, GatedConfig(hidden=6))
    z = feats(in_dims, 4)
    gates = fusion.gates(z)
    assert gates.shape == (4, 3, 6)
    torch.testing.assert_close(gates.sum(dim=1), torch.ones(4, 6))
    assert torch.all(gates > 0)
    values = torch.stack([torch.tanh(fusion.values[m](z[m])) for m in in_dims], dim=1)
    fused, logits = fusion(z)
    torch.testing.assert_close(fused, fusion.classifier((gates * values).sum(1)))
    for m in in_dims:
        torch.testing.assert_close(logits[m], fusion.heads[m](z[m]))


def test_gated_with_two_modalities_is_the_sigmoid_gmu():
    in_dims = dims(2)
    fusion = make("gated", in_dims, GatedConfig(hidden=4))
    z = feats(in_dims, 3)
    logit = fusion.gate(torch.cat([z["m0"], z["m1"]], -1)).view(3, 2, 4)
    g0 = torch.sigmoid(logit[:, 0] - logit[:, 1])
    h = g0 * torch.tanh(fusion.values["m0"](z["m0"])) + (1 - g0) * torch.tanh(fusion.values["m1"](z["m1"]))
    torch.testing.assert_close(fusion(z)[0], fusion.classifier(h))


@pytest.mark.parametrize("name", ["concat", "sum", "film", "gated"])
@pytest.mark.parametrize("m", [2, 3, 6])
def test_every_fusion_handles_m_modalities_and_any_leading_shape(name, m):
    in_dims = dims(m)
    fusion = make(name, in_dims).eval()
    z = feats(in_dims, 4)
    fused, logits = fusion(z)
    assert fused.shape == (4, C) and list(logits) == list(in_dims)
    assert all(v.shape == (4, C) for v in logits.values())
    # several variants of the batch (e.g. one modality permuted, one zeroed) in a single call
    variants = [z, {**z, "m1": z["m1"][torch.randperm(4)]}, {**z, "m0": torch.zeros_like(z["m0"])}]
    flat = {k: torch.cat([v[k] for v in variants]) for k in in_dims}
    stacked = {k: torch.stack([v[k] for v in variants]) for k in in_dims}
    fused_flat, logits_flat = fusion(flat)
    fused_stacked, _ = fusion(stacked)
    assert fused_flat.shape == (12, C) and fused_stacked.shape == (3, 4, C)
    for i, v in enumerate(variants):
        expected, expected_logits = fusion(v)
        torch.testing.assert_close(fused_flat[4 * i:4 * i + 4], expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(fused_stacked[i], expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(logits_flat["m2" if m > 2 else "m1"][4 * i:4 * i + 4],
                                   expected_logits["m2" if m > 2 else "m1"], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["concat", "sum", "film", "gated"])
def test_gradients_reach_every_fusion_parameter(name):
    in_dims = dims(3)
    fusion = make(name, in_dims)
    fused, logits = fusion(feats(in_dims, 4))
    (fused.square().sum() + sum(v.square().sum() for v in logits.values())).backward()
    for pname, p in fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ["concat", "sum", "film", "gated"])
def test_fusion_dropout_is_active_in_train_mode_only(name):
    cfg = {"concat": ConcatConfig(dropout=0.5), "sum": SumConfig(dropout=0.5),
           "film": FiLMConfig(dropout=0.5), "gated": GatedConfig(dropout=0.5)}[name]
    in_dims = dims(2)
    fusion = make(name, in_dims, cfg)
    z = feats(in_dims, 8)
    torch.manual_seed(1)
    train_out = fusion(z)[0]
    fusion.eval()
    assert not torch.allclose(train_out, fusion(z)[0])
    torch.testing.assert_close(fusion(z)[0], fusion(z)[0])


def test_fusion_options_validate_with_key_paths():
    problems: list[str] = []
    assert build(FiLMConfig, {"hidden": 0, "targt": "a"}, "model", problems) is None
    assert problems == ["model.targt: unknown key (did you mean 'target'?); known: hidden, target, dropout",
                        "model.hidden: must be >= 1, got 0"]
    problems = []
    assert build(ConcatConfig, {"dropout": 1.5}, "model", problems) is None
    assert problems == ["model.dropout: must be < 1.0, got 1.5"]
