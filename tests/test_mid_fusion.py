"""Mid-fusion: MMTM (Joze et al. 2020) on known values, its placement between encoder stages, the hooks
Greedy (Wu et al. 2022) needs, training with three modalities, and the preset's errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from engine.config import resolve
from engine.errors import PresetError
from engine.models import MID_FUSIONS, ModalitySpec, ModelSpec, MultimodalModel, build_model
from engine.models.encoders.conv import Conv1dConfig, Conv2dConfig
from engine.models.encoders.mlp import MLPConfig
from engine.models.encoders.resnet import ResNet18Config
from engine.models.encoders.stages import StageShape
from engine.models.encoders.transformer import TransformerConfig
from engine.models.mid_fusion.mmtm import MMTM, MMTMConfig
from engine.schema import describe

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = {"vec": (6,), "img": (10, 10), "seq": (8, 3)}


def three_modalities(mid_options=None, mid="mmtm") -> ModelSpec:
    return ModelSpec((ModalitySpec("vec", "mlp", MLPConfig(hidden=[8], dim=4)),
                      ModalitySpec("img", "conv2d", Conv2dConfig(channels=[4, 6], dim=5)),
                      ModalitySpec("seq", "transformer", TransformerConfig(d_model=8, n_heads=2, dropout=0.0))),
                     "concat", None, mid, mid_options)


def build(spec: ModelSpec = None, shapes=SHAPES, seed: int = 0) -> MultimodalModel:
    torch.manual_seed(seed)
    return build_model(spec or three_modalities(), shapes, 3)


def inputs(batch: int = 4, shapes=SHAPES) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {m: torch.randn(batch, *s, generator=g) for m, s in shapes.items()}


def zero_mmtms(model: MultimodalModel) -> None:
    with torch.no_grad():
        for p in model.mid_fusion_parameters():
            p.zero_()


def test_registry_lists_mmtm_with_documented_options():
    assert MID_FUSIONS.names() == ["mmtm"]
    entry = MID_FUSIONS.entry("mmtm")
    assert entry.config is MMTMConfig and entry.help
    assert {name: default for name, _, default, _ in describe(MMTMConfig)} == {"stages": [-2, -1], "ratio": 4}


def test_placement_follows_each_encoders_own_stages():
    model = build(three_modalities(MMTMConfig(stages=[0, -1])))
    # mlp: hidden block, final linear (2 stages); conv2d: 2 blocks; transformer: 2 layers
    assert model.mid_fusion_stages == [{"vec": 0, "img": 0, "seq": 0}, {"vec": 1, "img": 1, "seq": 1}]
    first, last = model.mid_fusions
    assert first.channels == {"vec": 8, "img": 4, "seq": 8} and last.channels == {"vec": 4, "img": 6, "seq": 8}
    assert first.bottleneck == int(2 * 20 / 4) == 10
    seen = []

    def record(module, args):
        seen.append({m: tuple(t.shape) for m, t in args[0].items()})

    hooks = [mf.register_forward_pre_hook(record) for mf in model.mid_fusions]
    features = model.encode(inputs())
    for h in hooks:
        h.remove()
    assert seen == [{"vec": (4, 8), "img": (4, 4, 5, 5), "seq": (4, 9, 8)},
                    {"vec": (4, 4), "img": (4, 6, 2, 2), "seq": (4, 9, 8)}]
    assert {m: tuple(z.shape) for m, z in features.items()} == {"vec": (4, 4), "img": (4, 5), "seq": (4, 8)}


def test_encoders_of_different_depths_align_from_the_last_stage():
    spec = ModelSpec((ModalitySpec("a", "mlp", MLPConfig(hidden=[], dim=3)),
                      ModalitySpec("b", "resnet18", ResNet18Config(width=2, stem="small"))),
                     mid_fusion="mmtm", mid_fusion_options={"stages": [-1]})
    model = build(spec, {"a": (5,), "b": (8, 8)})
    assert model.mid_fusion_stages == [{"a": 0, "b": 4}]
    assert model.mid_fusions[0].channels == {"a": 3, "b": 16}


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_zeroed_mmtm_gates_are_exactly_one_and_encode_is_unchanged(train):
    model = build(three_modalities(MMTMConfig(stages=[0, 1]))).train(train)
    zero_mmtms(model)
    plain = MultimodalModel(dict(model.encoders), model.fusion).train(train)  # the same encoders, no mid-fusion
    x = inputs()
    h = {m: model.encoders[m](x[m], stop=1) for m in SHAPES}
    gates = model.mid_fusions[0].gates(h)
    assert all(torch.equal(g, torch.ones_like(g)) for g in gates.values())
    torch.manual_seed(3)
    with_mmtm = model.encode(x)
    torch.manual_seed(3)
    without = plain.encode(x)
    assert all(torch.equal(with_mmtm[m], without[m]) for m in SHAPES)


def hand_mmtm() -> MMTM:
    """a: a map [2 channels, 3 positions]; b: tokens [2, 1 channel]; ratio 6 -> a bottleneck of 2 * 3 / 6 = 1."""
    mmtm = MMTM(MMTMConfig(stages=[0], ratio=6), {"a": StageShape((2, 3), 0), "b": StageShape((2, 1), 1)})
    assert mmtm.bottleneck == 1
    with torch.no_grad():
        mmtm.joint.weight.copy_(torch.tensor([[1.0, -1.0, 2.0]]))
        mmtm.joint.bias.fill_(2.5)
        mmtm.excite["a"].weight.copy_(torch.tensor([[1.0], [-2.0]]))
        mmtm.excite["a"].bias.copy_(torch.tensor([0.0, 1.0]))
        mmtm.excite["b"].weight.fill_(3.0)
        mmtm.excite["b"].bias.fill_(-1.0)
    return mmtm


def two_sigmoid(v: float) -> float:
    return 2.0 / (1.0 + math.exp(-v))


def test_a_gate_computed_by_hand():
    mmtm = hand_mmtm().eval()
    h_a = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    h_b = torch.tensor([[[-1.0], [3.0]]])
    # squeeze: S_a = (2, 5), S_b = (1); Z = relu(2 - 5 + 2 * 1 + 2.5) = 1.5
    # E_a = (1.5, -2 * 1.5 + 1) = (1.5, -2); E_b = 3 * 1.5 - 1 = 3.5
    ga, gb = two_sigmoid(1.5), two_sigmoid(-2.0)
    gates = mmtm.gates({"a": h_a, "b": h_b})
    torch.testing.assert_close(gates["a"], torch.tensor([[ga, gb]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(gates["b"], torch.tensor([[two_sigmoid(3.5)]]), rtol=0, atol=1e-6)
    out = mmtm({"a": h_a, "b": h_b})
    torch.testing.assert_close(out["a"], torch.tensor([[[ga, 2 * ga, 3 * ga], [4 * gb, 5 * gb, 6 * gb]]]),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(out["b"], h_b * two_sigmoid(3.5), rtol=0, atol=1e-5)


def test_running_gate_is_the_mean_over_training_steps_and_frozen_gates_cut_the_cross_modal_path():
    mmtm = hand_mmtm()
    assert torch.equal(mmtm.running_gate, torch.ones(3))
    g = torch.Generator().manual_seed(0)
    batches = [{"a": torch.randn(4, 2, 3, generator=g), "b": torch.randn(4, 2, 1, generator=g)} for _ in range(3)]
    means = []
    for batch in batches[:2]:
        gates = mmtm.gates(batch)
        means.append(torch.cat([gates["a"].mean(0), gates["b"].mean(0)]).detach())
        mmtm.train()(batch)
    mmtm.eval()(batches[2])  # evaluation does not move the running mean
    assert int(mmtm.gate_steps) == 2
    torch.testing.assert_close(mmtm.running_gate, (means[0] + means[1]) / 2, rtol=0, atol=1e-6)

    mmtm.freeze_gates(["a"])
    h = {m: t.clone().requires_grad_(True) for m, t in batches[2].items()}
    out = mmtm.eval()(h)
    running = mmtm.running_gates()
    torch.testing.assert_close(out["a"], h["a"] * running["a"].view(1, 2, 1), rtol=0, atol=0)
    # a's gate is a constant now: nothing flows from b into a; b still hears a through its own gate
    assert torch.autograd.grad(out["a"].sum(), h["b"], retain_graph=True, allow_unused=True)[0] is None
    assert torch.autograd.grad(out["b"].square().sum(), h["a"])[0].abs().sum() > 0
    mmtm.freeze_gates(())
    assert torch.equal(mmtm.eval()(batches[2])["a"], batches[2]["a"] * mmtm.broadcastable(
        mmtm.gates(batches[2])["a"], batches[2]["a"], "a"))
    with pytest.raises(KeyError, match="no modality 'c'"):
        mmtm.freeze_gates(["c"])


def test_bypass_parameters_are_the_joint_layer_and_the_modalitys_excitation():
    mmtm = hand_mmtm()
    assert mmtm.bypass_parameters("a") == [mmtm.joint.weight, mmtm.joint.bias,
                                           mmtm.excite["a"].weight, mmtm.excite["a"].bias]


def test_mid_fusion_parameters_join_the_fusion_group_once():
    model = build(three_modalities(MMTMConfig(stages=[-1])))
    groups = model.parameter_groups()
    mid = {id(p) for p in model.mid_fusion_parameters()}
    assert len(mid) == 2 + 2 * 3
    assert mid <= {id(p) for p in groups["fusion"]}
    listed = [id(p) for ps in groups.values() for p in ps]
    assert sorted(listed) == sorted(id(p) for p in model.parameters())
    state = model.state_dict()
    assert "mid_fusions.0.joint.weight" in state and "mid_fusions.0.running_gate" in state
    plain = build(three_modalities(mid=None))
    assert not any(k.startswith("mid_fusions") for k in plain.state_dict())


def test_a_three_modality_model_with_mmtm_trains():
    """A toy problem: the class is the sign pattern of one input value per modality; 30 Adam steps."""
    model = build(three_modalities(MMTMConfig(stages=[0, 1])))
    x = inputs(batch=32)
    y = ((x["vec"][:, 0] > 0).long() + (x["img"][:, 0, 0] > 0).long() + (x["seq"][:, 0, 0] > 0).long()) % 3
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    start = model.mid_fusions[0].joint.weight.detach().clone()
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x).fused, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert not torch.equal(model.mid_fusions[0].joint.weight, start)  # the MMTM itself learnt
    assert int(model.mid_fusions[1].gate_steps) == 30


def problems_of(spec: ModelSpec, shapes=SHAPES) -> list[str]:
    with pytest.raises(PresetError) as info:
        build_model(spec, shapes, 3)
    assert info.value.exit_code == 2 and info.value.source == "model"
    return info.value.problems


def test_build_errors_name_the_mid_fusion_keys():
    assert problems_of(three_modalities(mid="mmt")) == [
        "model.mid_fusion: unknown mid-fusion 'mmt' (did you mean 'mmtm'?); known: mmtm"]
    assert problems_of(three_modalities({"stages": [-3, 1]})) == [
        "model.mid_fusion_options.stages: stage -3 is out of range for modality 'vec', whose encoder has 2 stages "
        "(0 to 1, or -2 to -1)",
        "model.mid_fusion_options.stages: stage -3 is out of range for modality 'img', whose encoder has 2 stages "
        "(0 to 1, or -2 to -1)",
        "model.mid_fusion_options.stages: stage -3 is out of range for modality 'seq', whose encoder has 2 stages "
        "(0 to 1, or -2 to -1)"]
    assert problems_of(three_modalities({"stages": [1, 0]})) == [
        f"model.mid_fusion_options.stages: [1, 0] must give increasing stages for every modality, but gives [1, 0] "
        f"for modality '{m}'" for m in SHAPES]
    assert problems_of(three_modalities({"ratio": 0, "stage": [1]})) == [
        "model.mid_fusion_options.stage: unknown key (did you mean 'stages'?); known: stages, ratio",
        "model.mid_fusion_options.ratio: must be >= 1, got 0"]
    assert problems_of(three_modalities({"stages": []})) == [
        "model.mid_fusion_options: stages must list at least one stage, got []"]


PRESET = {
    "name": "t", "seed": 1,
    "data": {"source": "synthetic", "synthetic": {"n_samples": 64, "modalities": ["a", "b", "c"], "dims": [4, 3, 5],
                                                  "unique": [1.0, 0.5, 0.5], "noise": [0.5, 0.5, 0.5]}},
    "modalities": {"a": {"encoder": "mlp"}, "b": {"encoder": "mlp"}, "c": {"encoder": "mlp"}},
    "method": {"name": "joint"}, "train": {"epochs": 1},
}


def preset(**model) -> dict:
    return {**PRESET, "model": model}


def preset_problems(raw: dict) -> list[str]:
    with pytest.raises(PresetError) as info:
        resolve(raw, source="p.toml", base_dir=Path("."))
    assert info.value.exit_code == 2
    return info.value.problems


def test_preset_selects_mmtm_with_its_options():
    cfg = resolve(preset(fusion="concat", mid_fusion="mmtm", mid_fusion_options={"stages": [-1], "ratio": 8}),
                  source="p.toml", base_dir=Path("."))
    assert cfg.model.mid_fusion == "mmtm" and cfg.model.mid_fusion_options == MMTMConfig(stages=[-1], ratio=8)
    assert cfg.to_dict()["model"] == {"fusion": "concat", "dropout": 0.0, "mid_fusion": "mmtm",
                                      "mid_fusion_options": {"stages": [-1], "ratio": 8}}
    defaults = resolve(preset(mid_fusion="mmtm"), source="p.toml", base_dir=Path("."))
    assert defaults.model.mid_fusion_options == MMTMConfig()
    model = build_model(cfg.model, {"a": (4,), "b": (3,), "c": (5,)}, 2)
    assert model.mid_fusion_stages == [{"a": 1, "b": 1, "c": 1}]


def test_a_preset_without_mid_fusion_keeps_its_config_as_before():
    for model in ({}, {"mid_fusion": "none"}):
        cfg = resolve(preset(**model), source="p.toml", base_dir=Path("."))
        assert cfg.model.mid_fusion is None and cfg.to_dict()["model"] == {"fusion": "concat", "dropout": 0.0}


def test_preset_errors_name_the_key():
    assert preset_problems(preset(mid_fusion="mmtn")) == [
        "model.mid_fusion: unknown mid-fusion 'mmtn' (did you mean 'mmtm'?); known: mmtm, or \"none\""]
    assert preset_problems(preset(mid_fusion_options={"ratio": 2})) == [
        "model.mid_fusion_options: given, but model.mid_fusion names no mid-fusion (known: mmtm)"]
    assert preset_problems(preset(mid_fusion="mmtm", mid_fusion_options={"ratio": "4"})) == [
        "model.mid_fusion_options.ratio: expected int, got '4'"]
    assert preset_problems(preset(mid_fusion="mmtm", mid_fusion_options=3)) == [
        "model.mid_fusion_options: expected a table ([model.mid_fusion_options]), got 3"]


def test_mmtm_keeps_channels_last_maps_and_runs_on_the_meta_device():
    spec = ModelSpec((ModalitySpec("img", "conv2d", Conv2dConfig(channels=[4, 6], dim=5)),
                      ModalitySpec("aud", "conv1d", Conv1dConfig(channels=[4], dim=3))),
                     mid_fusion="mmtm", mid_fusion_options={"stages": [-1]})
    shapes = {"img": (3, 8, 8), "aud": (6, 2)}
    model = build(spec, shapes).eval()
    x = inputs(shapes=shapes)
    with torch.no_grad():
        before = model.encode(x)
        assert model.to_channels_last() == ["img"]
        after = model.encode(x)
    assert all(torch.allclose(after[m], before[m], atol=1e-5) for m in shapes)
    meta = build(spec, shapes).to("meta")
    out = meta({m: torch.empty(2, *s, device="meta") for m, s in shapes.items()})
    assert out.fused.device.type == "meta" and out.fused.shape == (2, 3)


def test_with_and_without_mmtm_the_encoders_and_head_start_alike():
    with_mmtm = build(three_modalities(MMTMConfig(stages=[-1]))).state_dict()
    without = build(three_modalities(mid=None)).state_dict()
    assert set(without) < set(with_mmtm)
    assert all(torch.equal(with_mmtm[k], v) for k, v in without.items())
