"""The method interface through the two baseline methods: joint and unimodal."""

import pytest
import torch
import torch.nn.functional as F

from engine.methods import METHODS, MethodContext, StepContext
from engine.models import ModalitySpec, ModelSpec, build_model
from engine.models.encoders.mlp import MLPConfig
from engine.models.fusion.concat import ConcatConfig


def make(method_name, **options):
    torch.manual_seed(0)
    spec = ModelSpec((ModalitySpec("a", "mlp", MLPConfig(hidden=[8], dim=4)),
                      ModalitySpec("b", "mlp", MLPConfig(hidden=[8], dim=4))), "concat", ConcatConfig())
    model = build_model(spec, {"a": (5,), "b": (3,)}, 3)
    ctx = MethodContext(modalities=["a", "b"], n_classes=3, epochs=1, steps_per_epoch=1, device=torch.device("cpu"))
    entry = METHODS.entry(method_name)
    method = entry.builder(entry.config(**options), ctx)
    method.setup(model)
    groups = method.parameter_groups(model)
    opt = torch.optim.SGD(groups, lr=0.1)

    def step_opt():
        opt.step()
        opt.zero_grad(set_to_none=True)

    step = StepContext(model=model, optimizer=opt, epoch=0, step=0, batch_in_epoch=0,
                       autocast=__import__("contextlib").nullcontext, backward=lambda l: l.backward(),
                       step_optimizer=step_opt)
    x = {"a": torch.randn(6, 5), "b": torch.randn(6, 3)}
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return model, method, step, x, y


def test_joint_minimises_fused_cross_entropy_and_reports_unit_coefficients():
    model, method, step, x, y = make("joint")
    expected = F.cross_entropy(model(x).fused, y)
    result = method.train_step(x, y, step)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert {k: v.item() for k, v in result.live.items()} == {"coef/a": 1.0, "coef/b": 1.0}


def test_unimodal_updates_only_its_modality_and_predicts_with_it():
    model, method, step, x, y = make("unimodal", modality="a")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = F.cross_entropy(model(x).logits["a"], y)
    result = method.train_step(x, y, step)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and all(not k.startswith("encoders.b") for k in changed)
    assert any(k.startswith("encoders.a") for k in changed)
    out = method.predict(model, x)
    assert torch.equal(out.fused, out.logits["a"])
    assert {k: v.item() for k, v in result.live.items()} == {"coef/a": 1.0, "coef/b": 0.0}


def test_unimodal_rejects_an_unknown_modality():
    with pytest.raises(ValueError, match="'c' is not one of the run's modalities"):
        make("unimodal", modality="c")
