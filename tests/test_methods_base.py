"""The method interface through the two baseline methods: joint and unimodal (with tests/methodkit.py)."""

import pytest
import torch
import torch.nn.functional as F

from engine.errors import PresetError
from engine.methods import METHODS, MethodContext

from methodkit import Kit


def test_joint_minimises_fused_cross_entropy_and_reports_unit_coefficients():
    kit = Kit.build("joint", dropout=0.0)
    x, y = kit.batch(6)
    expected = F.cross_entropy(kit.model(x).fused, y)
    result = kit.step(x, y)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert {k: v.item() for k, v in result.live.items()} == {"coef/a": 1.0, "coef/b": 1.0}
    assert F.cross_entropy(kit.model(x).fused, y) < expected  # the step went downhill


def test_unimodal_updates_only_its_modality_and_predicts_with_it():
    kit = Kit.build("unimodal", {"modality": "a"}, dropout=0.0)
    x, y = kit.batch(6)
    before = kit.snapshot()
    expected = F.cross_entropy(kit.model(x).logits["a"], y)
    result = kit.step(x, y)
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    changed = kit.changed(before)
    assert changed & set(kit.params("a")) and not changed & set(kit.params("b"))
    assert changed <= set(kit.params("a")) | set(kit.params("fusion"))
    out = kit.method.predict(kit.model, x)
    assert torch.equal(out.fused, out.logits["a"])
    assert {k: v.item() for k, v in result.live.items()} == {"coef/a": 1.0, "coef/b": 0.0}


def test_unimodal_optimises_only_its_modality_with_the_presets_optimiser():
    kit = Kit.build("unimodal", {"modality": "b"}, modalities=("a", "b", "c"), optimizer="adam")
    assert isinstance(kit.optimizer, torch.optim.Adam)
    optimised = {id(p) for g in kit.optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in [*kit.params("b").values(), *kit.params("fusion").values()]}
    before = kit.snapshot()
    for _ in range(3):
        kit.step()
    assert not kit.changed(before) & (set(kit.params("a")) | set(kit.params("c")))


def test_unimodal_rejects_an_unknown_modality():
    with pytest.raises(PresetError, match="method.modality: 'c' is not one of the modalities"):
        Kit.build("unimodal", {"modality": "c"})
    ctx = MethodContext(modalities=["a", "b"], n_classes=3, epochs=1, steps_per_epoch=1, device=torch.device("cpu"))
    entry = METHODS.entry("unimodal")
    with pytest.raises(ValueError, match="'c' is not one of the run's modalities"):
        entry.builder(entry.config(modality="c"), ctx)
