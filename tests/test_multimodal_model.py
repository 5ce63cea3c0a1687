"""MultimodalModel: forward shapes, encode + head == forward, parameter groups, build errors."""

from __future__ import annotations

import pytest
import torch

from engine.errors import PresetError
from engine.models import (ENCODERS, FUSIONS, ModalitySpec, ModelOutput, ModelSpec, MultimodalModel, build_model,
                           default_encoder)
from engine.models.encoders.conv import Conv1dConfig, Conv2dConfig
from engine.models.encoders.mlp import MLPConfig
from engine.models.fusion.film import FiLMConfig

SHAPES = {"fou": (76,), "image": (28, 28), "audio": (20, 6)}
C = 10


def three_modality_spec(fusion: str = "concat", fusion_options=None) -> ModelSpec:
    return ModelSpec(
        modalities=(ModalitySpec("fou", "mlp", MLPConfig(hidden=[32], dim=16)),
                    ModalitySpec("image", "conv2d", Conv2dConfig(channels=[4, 8], dim=12)),
                    ModalitySpec("audio", "conv1d", Conv1dConfig(channels=[8], dim=8))),
        fusion=fusion, fusion_options=fusion_options)


def inputs(batch: int = 3) -> dict[str, torch.Tensor]:
    return {m: torch.randn(batch, *s) for m, s in SHAPES.items()}


def model_for(fusion: str = "concat") -> MultimodalModel:
    torch.manual_seed(0)
    return build_model(three_modality_spec(fusion), SHAPES, C)


@pytest.mark.parametrize("fusion", ["concat", "sum", "film", "gated"])
def test_forward_shapes_for_three_mixed_encoders(fusion):
    model = model_for(fusion)
    assert model.modalities == ["fou", "image", "audio"]
    out = model(inputs())
    assert isinstance(out, ModelOutput)
    assert out.fused.shape == (3, C)
    assert {m: tuple(v.shape) for m, v in out.logits.items()} == {m: (3, C) for m in SHAPES}
    assert {m: tuple(v.shape) for m, v in out.features.items()} == {"fou": (3, 16), "image": (3, 12), "audio": (3, 8)}


@pytest.mark.parametrize("fusion", ["concat", "film"])
def test_encode_then_head_equals_forward(fusion):
    model = model_for(fusion).eval()
    x = inputs()
    with torch.no_grad():
        out = model(x)
        features = model.encode(x)
        fused, logits = model.head(features)
    for m in SHAPES:
        assert torch.equal(features[m], out.features[m])
        assert torch.equal(logits[m], out.logits[m])
    assert torch.equal(fused, out.fused)


def test_head_scores_permuted_features_in_one_call():
    model = model_for("concat").eval()
    with torch.no_grad():
        out = model(inputs(4))
        perm = torch.tensor([1, 2, 3, 0])
        shuffled = {**out.features, "image": out.features["image"][perm]}
        both = {m: torch.cat([out.features[m], shuffled[m]]) for m in SHAPES}
        fused, logits = model.head(both)
    torch.testing.assert_close(fused[:4], out.fused)
    torch.testing.assert_close(logits["image"][4:], out.logits["image"][perm])
    torch.testing.assert_close(logits["fou"][4:], out.logits["fou"])


@pytest.mark.parametrize("fusion", ["concat", "sum", "film", "gated"])
def test_parameter_groups_partition_every_parameter(fusion):
    model = model_for(fusion)
    groups = model.parameter_groups()
    assert list(groups) == ["fou", "image", "audio", "fusion"]
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids))                                  # no overlap
    assert set(ids) == {id(p) for p in model.parameters()}           # none missing
    assert sum(p.numel() for ps in groups.values() for p in ps) == sum(p.numel() for p in model.parameters())
    assert [id(p) for p in groups["image"]] == [id(p) for p in model.encoders["image"].parameters()]
    assert [id(p) for p in model.head_parameters()] == [id(p) for p in model.fusion.parameters()]
    assert [id(p) for p in model.encoder_parameters("fou")] == [id(p) for p in groups["fou"]]


def test_gradients_reach_every_parameter():
    model = model_for("gated")
    out = model(inputs())
    loss = torch.nn.functional.cross_entropy(out.fused, torch.tensor([0, 1, 2]))
    loss = loss + sum(torch.nn.functional.cross_entropy(v, torch.tensor([0, 1, 2])) for v in out.logits.values())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_forward_on_the_meta_device_creates_no_tensors_elsewhere():
    spec = ModelSpec((ModalitySpec("a", "mlp"), ModalitySpec("b", "conv2d"), ModalitySpec("c", "resnet18"),
                      ModalitySpec("d", "transformer")), "gated")
    shapes = {"a": (7,), "b": (3, 12, 12), "c": (12, 12), "d": (5, 4)}
    model = build_model(spec, shapes, 3).to("meta")
    out = model({m: torch.empty(2, *s, device="meta") for m, s in shapes.items()})
    assert out.fused.device.type == "meta" and out.fused.shape == (2, 3)


@pytest.mark.parametrize("kind,shape,expected", [
    ("vector", (100,), "mlp"), ("vector", (8, 8), "mlp"),
    ("image", (28, 28), "conv2d"), ("image", (3, 64, 64), "conv2d"), ("spectrogram", (40, 32), "conv2d"),
    ("sequence", (50, 20), "conv1d"), ("sequence", (50,), "conv1d"),
    ("", (76,), "mlp"), ("", (28, 28), "conv2d"), ("", (3, 32, 32), "conv2d"), ("", (2, 3, 4, 5), "mlp"),
    ("image", (100,), "mlp"),
])
def test_default_encoder(kind, shape, expected):
    assert default_encoder(kind, shape) == expected
    assert expected in ENCODERS


def test_options_may_be_none_or_a_validated_table():
    spec = ModelSpec((ModalitySpec("a", "mlp", None), ModalitySpec("b", "mlp", {"hidden": [4], "dim": 6})),
                     "film", {"hidden": 5, "target": "b"})
    model = build_model(spec, {"a": (3,), "b": (3,)}, 2)
    assert model.encoders["a"].out_dim == 128 and model.encoders["b"].out_dim == 6
    assert model.fusion.target == "b" and model.fusion.hidden == 5


def problems_of(spec: ModelSpec, shapes) -> list[str]:
    with pytest.raises(PresetError) as info:
        build_model(spec, shapes, 3)
    assert info.value.source == "model"
    return info.value.problems


def test_build_errors_are_collected_with_key_paths():
    spec = ModelSpec((ModalitySpec("a", "conv2dd"), ModalitySpec("b", "conv2d", {"channels": []}),
                      ModalitySpec("c", "conv2d"), ModalitySpec("d", "mlp")), "concat")
    assert problems_of(spec, {"a": (3, 4), "b": (3, 4), "c": (10,)}) == [
        "modalities.a.encoder: unknown encoder 'conv2dd' (did you mean 'conv2d'?); "
        "known: conv1d, conv2d, hf, mlp, resnet18, timm, torchvision, transformer, transformers",
        "modalities.b: channels must list at least one convolution width, got []",
        "modalities.c.encoder: encoder 'conv2d' accepts images or spectrograms [H, W] or [C, H, W], "
        "but this modality's samples have shape [10]",
        "modalities.d: the data has no modality 'd'",
    ]


def test_fusion_errors_name_the_model_table():
    two = (ModalitySpec("audio", "mlp"), ModalitySpec("image", "mlp"))
    shapes = {"audio": (3,), "image": (3,)}
    assert problems_of(ModelSpec(two, "gate"), shapes) == [
        "model.fusion: unknown fusion 'gate' (did you mean 'gated'?); known: concat, film, gated, sum"]
    assert problems_of(ModelSpec(two, "film", FiLMConfig(target="imag")), shapes) == [
        "model.target: unknown modality 'imag' (did you mean 'image'?); modalities: audio, image"]
    assert problems_of(ModelSpec(two, "film", {"hiden": 3}), shapes) == [
        "model.hiden: unknown key (did you mean 'hidden'?); known: hidden, target, dropout"]


@pytest.mark.parametrize("name", ["fusion", "keys", "a.b"])
def test_unusable_modality_names_are_refused(name):
    spec = ModelSpec((ModalitySpec(name, "mlp"), ModalitySpec("other", "mlp")), "concat")
    problems = problems_of(spec, {name: (3,), "other": (3,)})
    assert len(problems) == 1 and problems[0].startswith(f"modalities.{name}: '{name}' cannot name a modality")


def test_registries_are_reexported():
    assert "concat" in FUSIONS and "resnet18" in ENCODERS


def test_a_modality_listed_twice_is_refused():
    spec = ModelSpec((ModalitySpec("a", "mlp"), ModalitySpec("a", "conv2d")), "concat")
    assert problems_of(spec, {"a": (3,)}) == ["modalities: a modality is listed twice (a, a)"]


def test_encode_without_mid_fusion_is_one_plain_call_per_encoder_bitwise():
    model = model_for("concat").train()
    assert len(model.mid_fusions) == 0 and model.mid_fusion_stages == []
    assert not any(k.startswith("mid_fusions") for k in model.state_dict())
    calls = []
    hooks = [model.encoders[m].register_forward_hook(
        lambda mod, args, kwargs, out, m=m: calls.append((m, len(args), kwargs)), with_kwargs=True) for m in SHAPES]
    x = inputs()
    torch.manual_seed(0)
    features = model.encode(x)
    for h in hooks:
        h.remove()
    assert calls == [(m, 1, {}) for m in SHAPES]  # encoders[m](x[m]), as before mid-fusion existed
    torch.manual_seed(0)
    expected = {m: model.encoders[m](x[m]) for m in SHAPES}
    assert all(torch.equal(features[m], expected[m]) for m in SHAPES)
