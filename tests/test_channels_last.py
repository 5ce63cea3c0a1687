"""``train.channels_last``: the 2-D conv encoders in NHWC give the same outputs and gradients as in
NCHW, report channels-last weights, and checkpoints move between the two layouts (with optimiser
state re-laid to match: the fused kernels would otherwise pair elements of different positions)."""

import copy
import textwrap

import numpy as np
import pytest
import torch

from engine.config import load_preset
from engine.data import write_dataset
from engine.errors import PresetError
from engine.models import ModalitySpec, ModelSpec, build_model
from engine.models.encoders.conv import Conv2dConfig
from engine.models.encoders.mlp import MLPConfig
from engine.models.encoders.resnet import ResNet18Config
from engine.run import resume_run, start_run
from engine.train.device import channels_last_enabled
from engine.train.optim import match_parameter_layout
from runtools import last_checkpoint

CL = torch.channels_last


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def small_model():
    spec = ModelSpec((ModalitySpec("img", "conv2d", Conv2dConfig(channels=[4, 8], dim=6)),
                      ModalitySpec("rgb", "resnet18", ResNet18Config(width=4, stem="small", dim=6)),
                      ModalitySpec("seq", "conv1d"), ModalitySpec("vec", "mlp", MLPConfig(hidden=[8], dim=6))))
    torch.manual_seed(0)
    return build_model(spec, {"img": (10, 10), "rgb": (3, 9, 9), "seq": (12, 3), "vec": (5,)}, 3)


def inputs(n=5):
    g = torch.Generator().manual_seed(1)
    return {"img": torch.randn(n, 10, 10, generator=g), "rgb": torch.randn(n, 3, 9, 9, generator=g),
            "seq": torch.randn(n, 12, 3, generator=g), "vec": torch.randn(n, 5, generator=g)}


def test_conv2d_and_resnet18_in_channels_last_match_contiguous():
    plain = small_model()
    nhwc = copy.deepcopy(plain)
    assert nhwc.to_channels_last() == ["img", "rgb"]
    for m in ("img", "rgb"):
        convs = [p for p in nhwc.encoders[m].parameters() if p.dim() == 4]
        assert convs and all(p.is_contiguous(memory_format=CL) for p in convs)
        assert any(not p.is_contiguous() for p in convs)  # (a 1-channel kernel is both)
    for m in ("seq", "vec"):
        assert not getattr(nhwc.encoders[m], "channels_last", False)
    assert plain.state_dict().keys() == nhwc.state_dict().keys()
    x = inputs()
    outs = [model(x) for model in (plain, nhwc)]  # train mode: batch statistics
    for m in ("img", "rgb"):
        assert torch.allclose(outs[0].features[m], outs[1].features[m], atol=1e-5)
    for out in outs:
        out.fused.square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), nhwc.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name
        if b.dim() == 4:
            assert b.grad.is_contiguous(memory_format=CL), name
    plain.eval(), nhwc.eval()
    with torch.no_grad():
        assert torch.allclose(plain(x).fused, nhwc(x).fused, atol=1e-5)


def test_auto_is_on_for_cuda_only():
    assert channels_last_enabled("auto", torch.device("cuda")) and not channels_last_enabled("auto", torch.device("cpu"))
    assert channels_last_enabled(True, torch.device("cpu")) and not channels_last_enabled(False, torch.device("cuda"))


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_loaded_optimiser_state_takes_the_parameters_layout(opt):
    """A state saved in one layout, loaded for a parameter in the other: after matching, a fused step
    gives what the same state in the parameter's own layout gives (without it, a mix of elements)."""
    g = torch.Generator().manual_seed(0)
    w, grad, s1, s2 = (torch.randn(6, 3, 3, 3, generator=g) for _ in range(4))

    def make(layout):
        p = torch.nn.Parameter(w.clone().contiguous(memory_format=layout))
        o = (torch.optim.Adam([p], lr=0.1, fused=True) if opt == "adam"
             else torch.optim.SGD([p], lr=0.1, momentum=0.9, fused=True))
        return p, o

    ref_p, ref_o = make(CL)
    p, o = make(CL)
    for param, optim, layout in ((ref_p, ref_o, CL), (p, o, torch.contiguous_format)):
        saved = ({"exp_avg": s1, "exp_avg_sq": s2.abs(), "step": torch.tensor(3.0)} if opt == "adam"
                 else {"momentum_buffer": s1})
        state = {k: v.clone(memory_format=layout) if v.dim() == 4 else v for k, v in saved.items()}
        optim.load_state_dict({"state": {0: state}, "param_groups": optim.state_dict()["param_groups"]})
    match_parameter_layout(o)
    assert all(v.stride() == p.stride() for v in o.state[p].values() if v.dim() == 4)
    for param, optim in ((ref_p, ref_o), (p, o)):
        param.grad = grad.clone().contiguous(memory_format=CL)
        optim.step()
    assert torch.allclose(p, ref_p, atol=1e-6)


PRESET = """
name = "cl"
seed = 1
[data]
path = "{path}"
[modalities.img]
encoder = "conv2d"
channels = [4, 8]
dim = 8
[modalities.vec]
encoder = "mlp"
hidden = [8]
dim = 8
[train]
epochs = 2
batch_size = 16
optimizer = "sgd"
lr = 0.05
momentum = 0.9
log_every = 5
[monitor]
enabled = false
"""


@pytest.fixture()
def image_preset(tmp_path):
    rng = np.random.default_rng(0)
    n = 96
    y = rng.integers(0, 3, n)
    img = rng.normal(size=(n, 8, 8)).astype(np.float32) + y[:, None, None] * 0.5
    vec = rng.normal(size=(n, 4)).astype(np.float32) + y[:, None] * 0.3
    write_dataset(tmp_path / "d.parquet", {"img": img, "vec": vec}, y, np.array([0] * 64 + [1] * 16 + [2] * 16),
                  ["a", "b", "c"], "cl-test", kinds={"img": "image", "vec": "vector"})
    path = tmp_path / "cl.toml"
    path.write_text(textwrap.dedent(PRESET.format(path=tmp_path / "d.parquet")))
    return path


@pytest.mark.parametrize("first, second", [(True, False), (False, True)])
def test_checkpoints_move_between_layouts(first, second, image_preset, tmp_path):
    runs = tmp_path / "runs"
    flag = {True: "true", False: "false"}
    straight = start_run(image_preset, [f"train.channels_last={flag[second]}"], runs_dir=runs)
    part = start_run(image_preset, [f"train.channels_last={flag[first]}", "train.epochs=1"], runs_dir=runs)
    saved = last_checkpoint(part.run_dir)
    conv = saved["model"]["encoders.img.features.1.0.weight"]
    assert conv.is_contiguous(memory_format=CL) == first  # saved as trained: the layout travels, the keys do not change
    resumed = resume_run(part.run_id, [f"train.channels_last={flag[second]}", "train.epochs=2"], runs_dir=runs)
    a, b = last_checkpoint(resumed.run_dir)["model"], last_checkpoint(straight.run_dir)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


def test_the_option_takes_auto_true_or_false(image_preset):
    for value in ('"auto"', "true", "false"):
        load_preset(image_preset, [f"train.channels_last={value}"])
    with pytest.raises(PresetError, match="train.channels_last"):
        load_preset(image_preset, ['train.channels_last="yes"'])
