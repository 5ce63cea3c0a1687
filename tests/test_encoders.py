"""Encoders: output shapes, out_dim, gradients, ResNet-18 fidelity, option validation."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from torch import nn

from engine.models.encoders import ENCODERS, UnsupportedShape
from engine.models.encoders.conv import Conv1dConfig, Conv2dConfig
from engine.models.encoders.mlp import MLPConfig
from engine.models.encoders.resnet import ResNet18Config
from engine.models.encoders.transformer import TransformerConfig
from engine.schema import build, describe

CASES = [
    ("mlp", MLPConfig(), (100,), 128),
    ("mlp", MLPConfig(hidden=[16, 8], dim=5, norm="batchnorm", activation="gelu"), (28, 28), 5),
    ("mlp", MLPConfig(hidden=[], dim=7, norm="layernorm"), (3, 32, 32), 7),
    ("conv1d", Conv1dConfig(channels=[8, 16], dim=12), (20, 6), 12),
    ("conv1d", Conv1dConfig(channels=[8], kernel_size=3, dim=9, norm="groupnorm"), (50,), 9),
    ("conv2d", Conv2dConfig(channels=[4, 8, 8], dim=10), (28, 28), 10),
    ("conv2d", Conv2dConfig(channels=[4, 8, 8], dim=10, norm="none"), (40, 32), 10),
    ("conv2d", Conv2dConfig(channels=[4, 8], dim=6, dropout=0.5), (3, 32, 32), 6),
    ("resnet18", ResNet18Config(width=4, stem="small"), (28, 28), 32),
    ("resnet18", ResNet18Config(width=4, dim=10), (3, 32, 32), 10),
    ("resnet18", ResNet18Config(width=4), (40, 32), 32),
    ("transformer", TransformerConfig(d_model=16, n_heads=2), (12, 6), 16),
    ("transformer", TransformerConfig(d_model=8, n_heads=2, n_layers=1, pooling="mean"), (9,), 8),
]


def build_encoder(name, cfg, shape):
    torch.manual_seed(0)
    return ENCODERS.get(name)(cfg, shape)


def test_registry_has_every_required_encoder():
    builtin = {"mlp", "conv1d", "conv2d", "resnet18", "transformer"}
    adapters = {"hf", "transformers", "timm", "torchvision"}  # third-party backbones (tests/test_external_encoders.py)
    assert builtin | adapters <= set(ENCODERS.names())
    for entry in ENCODERS.entries():
        assert entry.help and entry.config is not None
        assert all(help_text for _, _, _, help_text in describe(entry.config))


@pytest.mark.parametrize("name,cfg,shape,dim", CASES, ids=[f"{c[0]}-{'x'.join(map(str, c[2]))}" for c in CASES])
def test_output_shape_out_dim_and_gradients(name, cfg, shape, dim):
    enc = build_encoder(name, cfg, shape)
    assert enc.out_dim == dim
    x = torch.randn(3, *shape)
    out = enc(x)
    assert out.shape == (3, dim) and out.dtype == torch.float32
    # a non-symmetric loss: out.sum() would give BatchNorm'd paths an exactly zero gradient
    (out.square() * torch.randn(3, dim)).sum().backward()
    for pname, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name,cfg,shape,dim", CASES, ids=[f"{c[0]}-{'x'.join(map(str, c[2]))}" for c in CASES])
def test_eval_mode_batch_of_one_matches_batched_rows(name, cfg, shape, dim):
    enc = build_encoder(name, cfg, shape).eval()
    x = torch.randn(4, *shape)
    with torch.no_grad():
        torch.testing.assert_close(enc(x[2:3]), enc(x)[2:3], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,cfg", [("conv2d", Conv2dConfig(channels=[4, 8])),
                                      ("resnet18", ResNet18Config(width=4))])
def test_channels_last_inputs_give_the_same_features(name, cfg):
    enc = build_encoder(name, cfg, (3, 16, 16)).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(enc(x.to(memory_format=torch.channels_last)), enc(x), atol=1e-5, rtol=1e-5)


def test_mlp_flattens_any_shape_and_is_one_linear_without_hidden():
    enc = build_encoder("mlp", MLPConfig(hidden=[], dim=4), (3, 4, 5))
    x = torch.randn(2, 3, 4, 5)
    linear = enc.net[0]
    assert isinstance(linear, nn.Linear) and linear.in_features == 60 and len(enc.net) == 1
    torch.testing.assert_close(enc(x), x.reshape(2, 60) @ linear.weight.T + linear.bias)


def test_conv1d_reads_time_first_and_features_as_channels():
    enc = build_encoder("conv1d", Conv1dConfig(channels=[8, 8, 8], dim=4), (5, 6))
    first_conv = enc.features[0][0]
    assert isinstance(first_conv, nn.Conv1d) and first_conv.in_channels == 6
    # T=5 -> 2 -> 1 -> 1: the third block skips pooling instead of shrinking to 0
    assert enc.features(torch.randn(2, 6, 5)).shape == (2, 8, 1)
    assert not any(isinstance(m, nn.MaxPool1d) for m in enc.features[2])


def test_conv2d_pools_small_inputs_without_shrinking_below_one():
    enc = build_encoder("conv2d", Conv2dConfig(channels=[4, 4, 4], dim=3), (40, 32))
    assert enc.features(torch.randn(2, 1, 40, 32)).shape == (2, 4, 5, 4)
    enc = build_encoder("conv2d", Conv2dConfig(channels=[4] * 6, dim=3), (28, 28))
    assert enc.features(torch.randn(2, 1, 28, 28)).shape == (2, 4, 1, 1)  # 14, 7, 3, 1, then no pooling
    enc = build_encoder("conv2d", Conv2dConfig(channels=[4, 4], dim=3), (1, 6))
    assert enc.features(torch.randn(2, 1, 1, 6)).shape == (2, 4, 1, 1)  # only W is pooled: 6 -> 3 -> 1


def test_resnet18_parameter_count_matches_torchvision_without_fc():
    # torchvision.models.resnet18(): 11,689,512 parameters, of which fc (512*1000 + 1000) = 513,000
    enc = ENCODERS.get("resnet18")(ResNet18Config(), (3, 224, 224))
    assert sum(p.numel() for p in enc.parameters()) == 11_689_512 - 513_000 == 11_176_512
    assert enc.out_dim == 512
    one_channel = ENCODERS.get("resnet18")(ResNet18Config(), (40, 32))
    assert sum(p.numel() for p in one_channel.parameters()) == 11_176_512 - 2 * 64 * 7 * 7
    projected = ENCODERS.get("resnet18")(ResNet18Config(width=8, dim=10), (3, 8, 8))
    plain = ENCODERS.get("resnet18")(ResNet18Config(width=8), (3, 8, 8))
    assert sum(p.numel() for p in projected.parameters()) - sum(p.numel() for p in plain.parameters()) == 64 * 10 + 10


def test_resnet18_kaiming_fan_out_init_and_zero_init_residual():
    enc = build_encoder("resnet18", ResNet18Config(), (3, 32, 32))
    w = enc.layer4[1].conv2.weight
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / (512 * 9)), rel=0.02)
    assert torch.all(enc.layer1[0].bn2.weight == 1) and torch.all(enc.layer1[0].bn2.bias == 0)
    zero = build_encoder("resnet18", ResNet18Config(width=4, zero_init_residual=True), (3, 8, 8))
    assert all(torch.all(b.bn2.weight == 0) for layer in (zero.layer1, zero.layer4) for b in layer)


def spatial_sizes(enc, x):
    sizes = {}
    hooks = [getattr(enc, n).register_forward_hook(lambda mod, i, o, n=n: sizes.__setitem__(n, tuple(o.shape[2:])))
             for n in ("stem", "layer1", "layer2", "layer3", "layer4")]
    enc(x)
    for h in hooks:
        h.remove()
    return sizes


def test_resnet18_stems_spatial_sizes():
    small = build_encoder("resnet18", ResNet18Config(width=4, stem="small"), (28, 28))
    assert spatial_sizes(small, torch.randn(2, 28, 28)) == {
        "stem": (28, 28), "layer1": (28, 28), "layer2": (14, 14), "layer3": (7, 7), "layer4": (4, 4)}
    imagenet = build_encoder("resnet18", ResNet18Config(width=4), (3, 64, 64))
    assert spatial_sizes(imagenet, torch.randn(2, 3, 64, 64)) == {
        "stem": (16, 16), "layer1": (16, 16), "layer2": (8, 8), "layer3": (4, 4), "layer4": (2, 2)}


def test_transformer_mean_pooling_ignores_token_order_without_positions():
    enc = build_encoder("transformer", TransformerConfig(d_model=8, n_heads=2, pooling="mean"), (6, 3)).eval()
    assert enc.pos.shape == (1, 6, 8) and enc.cls is None
    with torch.no_grad():
        enc.pos.zero_()
        x = torch.randn(2, 6, 3)
        torch.testing.assert_close(enc(x[:, torch.randperm(6)]), enc(x), atol=1e-5, rtol=1e-5)
    cls = build_encoder("transformer", TransformerConfig(d_model=8, n_heads=2), (6, 3))
    assert cls.pos.shape == (1, 7, 8) and cls.cls.shape == (1, 1, 8)
    layer = cls.blocks.layers[0]
    assert layer.norm_first and layer.self_attn.batch_first


def test_unsupported_shapes_raise_with_the_encoder_name():
    for name, cfg, shape in [("conv2d", Conv2dConfig(), (10,)), ("conv1d", Conv1dConfig(), (3, 4, 5)),
                             ("resnet18", ResNet18Config(), (2, 3, 4, 5)),
                             ("transformer", TransformerConfig(), (2, 3, 4))]:
        with pytest.raises(UnsupportedShape, match=f"encoder '{name}'"):
            ENCODERS.get(name)(cfg, shape)


@pytest.mark.parametrize("cls,raw,expected", [
    (Conv2dConfig, {"channels": []}, "modalities.audio: channels must list at least one"),
    (Conv2dConfig, {"channels": [32, -4]}, "modalities.audio.channels[1]: must be >= 1, got -4"),
    (Conv1dConfig, {"kernel_size": 0}, "modalities.audio.kernel_size: must be >= 1, got 0"),
    (Conv1dConfig, {"kernel_size": 4}, "modalities.audio: kernel_size must be odd"),
    (MLPConfig, {"activation": "rellu"},
     "modalities.audio.activation: expected one of 'relu', 'gelu', got 'rellu' (did you mean 'relu'?)"),
    (MLPConfig, {"hidden": [0]}, "modalities.audio.hidden[0]: must be >= 1, got 0"),
    (ResNet18Config, {"stem": "cifar"}, "modalities.audio.stem: expected one of 'imagenet', 'small', got 'cifar'"),
    (ResNet18Config, {"widht": 32}, "modalities.audio.widht: unknown key (did you mean 'width'?)"),
    (TransformerConfig, {"d_model": 10, "n_heads": 4}, "modalities.audio: n_heads (4) must divide d_model (10)"),
    (TransformerConfig, {"dropout": 1.0}, "modalities.audio.dropout: must be < 1.0, got 1.0"),
])
def test_option_validation_names_the_key_path(cls, raw, expected):
    problems: list[str] = []
    assert build(cls, raw, "modalities.audio", problems) is None
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_options_from_a_table_build_the_configured_encoder():
    problems: list[str] = []
    cfg = build(Conv2dConfig, {"channels": [4, 6], "dim": 5, "kernel_size": 5}, "m", problems)
    assert problems == [] and cfg == Conv2dConfig(channels=[4, 6], kernel_size=5, dim=5)
    enc = ENCODERS.get("conv2d")(cfg, (12, 12))
    assert enc.features[1][0].weight.shape == (6, 4, 5, 5) and enc.out_dim == 5


# -- stages (for mid-fusion) --------------------------------------------------------------------
def legacy_forward(enc, x):
    """Each encoder's forward as written before it had stages (the reference the staged forward must equal)."""
    if hasattr(enc, "net"):  # mlp
        return enc.net(x.reshape(x.shape[0], enc.in_features))
    if hasattr(enc, "layer4"):  # resnet18
        x = x.unsqueeze(1) if enc.one_channel_input else x
        x = enc.layer4(enc.layer3(enc.layer2(enc.layer1(enc.stem(x)))))
        return enc.proj(torch.flatten(enc.avgpool(x), 1))
    if hasattr(enc, "blocks"):  # transformer
        x = x.unsqueeze(-1) if enc.vector_input else x
        h = enc.embed(x)
        if enc.cls is not None:
            h = torch.cat([enc.cls.expand(h.shape[0], -1, -1), h], dim=1)
        h = enc.norm(enc.blocks(enc.drop(h + enc.pos)))
        return h[:, 0] if enc.cls is not None else h.mean(dim=1)
    x = x.transpose(1, 2) if enc.layout == "time_first" else x.unsqueeze(1) if enc.layout == "one_channel" else x
    return enc.proj(enc.dropout(torch.flatten(enc.pool(enc.features(x)), 1)))


def seeded(fn, *args, **kwargs):
    torch.manual_seed(7)  # the same dropout masks for both sides of a comparison
    return fn(*args, **kwargs)


@pytest.mark.parametrize("name,cfg,shape,dim", CASES, ids=[f"{c[0]}-{'x'.join(map(str, c[2]))}" for c in CASES])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_stages_compose_to_the_forward_of_before_bitwise(name, cfg, shape, dim, train):
    enc = build_encoder(name, cfg, shape).train(train)
    x = torch.randn(3, *shape)

    def by_hand():
        h = enc.enter(x)
        for stage, expected in zip(enc.stages, enc.stage_shapes):
            h = stage(h)
            assert tuple(h.shape) == (3, *expected.shape)
        return enc.exit(h)

    reference = seeded(legacy_forward, enc, x)
    assert len(enc.stages) == enc.n_stages >= 1
    assert torch.equal(seeded(enc, x), reference)
    assert torch.equal(seeded(by_hand), reference)
    for k in range(1, enc.n_stages + 1):  # split after any stage: the first k stages, then the rest
        assert torch.equal(seeded(lambda: enc(enc(x, stop=k), start=k)), reference)


def test_stage_shapes_on_known_values():
    shapes = [
        ("mlp", MLPConfig(hidden=[16, 8], dim=5), (28, 28), [((16,), 0), ((8,), 0), ((5,), 0)]),
        ("mlp", MLPConfig(hidden=[], dim=7), (3, 4), [((7,), 0)]),
        ("conv1d", Conv1dConfig(channels=[8, 8, 8]), (5, 6), [((8, 2), 0), ((8, 1), 0), ((8, 1), 0)]),
        ("conv2d", Conv2dConfig(channels=[4, 6]), (1, 6), [((4, 1, 3), 0), ((6, 1, 1), 0)]),
        ("resnet18", ResNet18Config(width=4), (3, 64, 64),
         [((4, 16, 16), 0), ((4, 16, 16), 0), ((8, 8, 8), 0), ((16, 4, 4), 0), ((32, 2, 2), 0)]),
        ("resnet18", ResNet18Config(width=4, stem="small"), (28, 27),
         [((4, 28, 27), 0), ((4, 28, 27), 0), ((8, 14, 14), 0), ((16, 7, 7), 0), ((32, 4, 4), 0)]),
        ("transformer", TransformerConfig(d_model=8, n_heads=2, n_layers=3), (6, 3), [((7, 8), 1)] * 3),
        ("transformer", TransformerConfig(d_model=8, n_heads=2, pooling="mean"), (9,), [((9, 8), 1)] * 2),
    ]
    for name, cfg, shape, expected in shapes:
        enc = build_encoder(name, cfg, shape)
        assert [(s.shape, s.channel_axis) for s in enc.stage_shapes] == expected, name
        assert [s.channels for s in enc.stage_shapes] == [s[e] for s, e in expected]


KEYS_BEFORE_STAGES = [  # state-dict keys of these encoders as they were before stages (checkpoints must load)
    ("mlp", MLPConfig(hidden=[16, 8], dim=5, norm="layernorm"), (28, 28),
        ["net.0.weight", "net.0.bias", "net.1.weight", "net.1.bias", "net.4.weight", "net.4.bias",
         "net.5.weight", "net.5.bias", "net.8.weight", "net.8.bias"]),
    ("conv1d", Conv1dConfig(channels=[8, 16], dim=12), (20, 6),
        [f"features.{i}.{k}" for i in (0, 1) for k in ("0.weight", "1.weight", "1.bias", "1.running_mean",
                                                      "1.running_var", "1.num_batches_tracked")]
        + ["proj.weight", "proj.bias"]),
    ("transformer", TransformerConfig(d_model=8, n_heads=2, n_layers=2), (12, 6),
        ["pos", "cls", "embed.weight", "embed.bias"]
        + [f"blocks.layers.{i}.{k}" for i in (0, 1) for k in (
            "self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
            "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
            "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias")]
        + ["norm.weight", "norm.bias"]),
]


def test_state_dict_keys_are_those_of_before_stages():
    for name, cfg, shape, keys in KEYS_BEFORE_STAGES:
        assert list(build_encoder(name, cfg, shape).state_dict()) == keys, name
    resnet = list(build_encoder("resnet18", ResNet18Config(width=4, dim=10), (3, 32, 32)).state_dict())
    assert len(resnet) == 122 and not any(k.startswith("stages") for k in resnet)
    assert hashlib.sha256("\n".join(resnet).encode()).hexdigest()[:16] == "27cfae741319b2a6"  # keys before stages
