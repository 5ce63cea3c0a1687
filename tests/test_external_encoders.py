"""The user's own encoders and weights: ``module:function`` encoders, entry points, transformers / timm /
torchvision adapters, ``init`` and ``freeze``, each through a preset where it matters."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import load_preset
from engine.data.writer import write_dataset
from engine.errors import PresetError
from engine.methods import METHODS
from engine.models import ENCODERS, ModalitySpec, ModelSpec, build_model
from engine.run import NullReporter, start_run
from engine.store import load_checkpoint, RunPaths

from methodkit import to_toml
from runtools import tiny_doc

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # nothing here may reach the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ENCODER_MODULE = '''
import torch
from torch import nn


def small(input_shape, width=8, scale=1.0):
    """a flatten + linear encoder for tests"""
    net = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), width), nn.ReLU())
    return net


def declared(input_shape, out_dim):
    net = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], out_dim))
    net.out_dim = out_dim
    return net


def wrong_rank(input_shape):
    return nn.Identity()            # (B, d) stays (B, d): fine for vectors


def image_out(input_shape):
    return nn.Unflatten(1, (2, -1))  # (B, 2, d/2): not (B, out_dim)


def broken(input_shape):
    raise RuntimeError("no GPU kernel for this")
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A module ``mmbal_test_encoders`` on sys.path, with a dist-info declaring entry points."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "mmbal_test_encoders.py").write_text(ENCODER_MODULE)
    (folder / "mmbal_test_method.py").write_text(textwrap.dedent('''
        from engine.methods import METHODS
        from engine.methods.joint import Joint, JointConfig

        @METHODS.register("plugin_joint", config=JointConfig, help="joint training from a plugin", optimizer="sgd",
                          cost="1F + 1B")
        class PluginJoint(Joint):
            pass
    '''))
    info = folder / "mmbal_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mmbal-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mmbal.encoders]\nplugged = mmbal_test_encoders:small\n"
                                           "missing_dep = mmbal_test_nowhere:small\n\n"
                                           "[mmbal.methods]\nplugin_joint = mmbal_test_method:PluginJoint\n")
    monkeypatch.syspath_prepend(str(folder))
    saved = {registry: dict(registry._entries) for registry in (ENCODERS, METHODS)}
    for registry in saved:
        registry.plugins.tried.clear()
    yield folder
    for registry, entries in saved.items():   # later tests see the registries as they were
        registry._entries.clear()
        registry._entries.update(entries)
        registry.plugins.tried.clear()
        registry.plugins.failures.clear()
    for name in ("mmbal_test_encoders", "mmbal_test_method"):
        sys.modules.pop(name, None)


def preset_file(folder: Path, doc: dict) -> Path:
    path = folder / "preset.toml"
    path.write_text(to_toml(doc))
    return path


def run_doc(folder: Path, doc: dict):
    return start_run(preset_file(folder, doc), runs_dir=folder / "runs", reporter=NullReporter())


def problems_of(folder: Path, doc: dict) -> list[str]:
    with pytest.raises(PresetError) as info:
        cfg, _ = load_preset(preset_file(folder, doc))
        from engine.run.parts import build_parts
        build_parts(cfg, torch.device("cpu"))
    return info.value.problems


def test_a_module_function_encoder_trains_through_a_preset(plugin_dir, tmp_path):
    doc = tiny_doc(epochs=1, modalities={"a": {"encoder": "mmbal_test_encoders:small", "width": 5,
                                               "hidden": None, "dim": None, "dropout": None}})
    result = run_doc(tmp_path, doc)
    assert result.state == "finished"
    state = load_checkpoint(RunPaths(result.run_dir).best)
    assert state["model"]["encoders.a.1.weight"].shape == (5, 8)   # the function's Linear(8 -> width 5)
    assert state["model"]["fusion.linear.weight"].shape[1] == 5 + 8   # out_dim measured: 5 (a) + 8 (b)
    config = (Path(result.run_dir) / "config.json").read_text()
    assert '"encoder": "mmbal_test_encoders:small"' in config and '"width": 5' in config


def test_module_function_problems_name_the_key(plugin_dir, tmp_path):
    def doc(table):
        return tiny_doc(modalities={"a": {"hidden": None, "dim": None, "dropout": None, **table}})
    assert problems_of(tmp_path, doc({"encoder": "mmbal_test_encoders:small", "widht": 3})) == [
        "modalities.a.widht: unknown key; mmbal_test_encoders:small takes width, scale (did you mean 'width'?)"]
    assert problems_of(tmp_path, doc({"encoder": "mmbal_test_encoders:declared"})) == [
        "modalities.a.out_dim: required key is missing (mmbal_test_encoders:declared has no default for it)"]
    missing = problems_of(tmp_path, doc({"encoder": "no_such_pkg.nets:small"}))
    assert missing == ["modalities.a.encoder: cannot import module 'no_such_pkg.nets' for encoder "
                       "'no_such_pkg.nets:small': ModuleNotFoundError: No module named 'no_such_pkg' "
                       f"(is its package installed, or its folder on PYTHONPATH, the preset's folder {tmp_path}?)"]
    assert "has no 'smal' (did you mean 'small'?)" in problems_of(
        tmp_path, doc({"encoder": "mmbal_test_encoders:smal"}))[0]
    typed = problems_of(tmp_path, doc({"encoder": "mmbal_test_encoders:small", "width": "x"}))[0]
    assert typed.startswith("modalities.a.encoder: 'mmbal_test_encoders:small' called with width='x', "
                            "input_shape=(8,) raised TypeError at ")
    raised = problems_of(tmp_path, doc({"encoder": "mmbal_test_encoders:broken"}))[0]
    assert "raised RuntimeError at " in raised and "mmbal_test_encoders.py:" in raised and "no GPU kernel" in raised
    shape = problems_of(tmp_path, doc({"encoder": "mmbal_test_encoders:image_out"}))[0]
    assert shape.endswith("must map a batch (B, *[8]) to features (B, out_dim); for B = 2 it returned [2, 2, 4]")
    wrong = problems_of(tmp_path, doc({"encoder": "mmbal_test_encoders:declared", "out_dim": 0}))
    assert wrong == ["modalities.a.out_dim: expected a positive integer (the feature size), got 0"]


def test_a_module_beside_the_preset_is_found_from_any_working_directory(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "mmbal_beside_nets.py").write_text(ENCODER_MODULE)
    monkeypatch.setattr(sys, "path", list(sys.path))   # the folder appended for this test only
    monkeypatch.chdir(tmp_path)
    saved = dict(ENCODERS._entries)
    try:
        doc = tiny_doc(epochs=1, modalities={"a": {"encoder": "mmbal_beside_nets:small", "width": 3,
                                                   "hidden": None, "dim": None, "dropout": None}})
        result = run_doc(folder, doc)
        assert result.state == "finished"
        assert load_checkpoint(RunPaths(result.run_dir).best)["model"]["encoders.a.1.weight"].shape == (3, 8)
        assert sys.path[-1] == str(folder.resolve())
    finally:
        ENCODERS._entries.clear()
        ENCODERS._entries.update(saved)
        sys.modules.pop("mmbal_beside_nets", None)


def test_entry_points_add_encoders_and_methods_lazily(plugin_dir, tmp_path):
    doc = tiny_doc("name = \"plugin_joint\"", epochs=1,
                   modalities={"a": {"encoder": "plugged", "width": 4, "hidden": None, "dim": None, "dropout": None}})
    result = run_doc(tmp_path, doc)
    assert result.state == "finished" and result.summary["method"] == "plugin_joint"
    assert ENCODERS.entry("plugged").help == "a flatten + linear encoder for tests"
    assert "plugin_joint" in METHODS.names()
    bad = problems_of(tmp_path, tiny_doc(modalities={"a": {"encoder": "missing_dep"}}))
    assert bad == ["modalities.a.encoder: encoder 'missing_dep' comes from the entry point 'missing_dep = "
                   "mmbal_test_nowhere:small' (group mmbal.encoders), which failed to load: ModuleNotFoundError: "
                   "No module named 'mmbal_test_nowhere'"]


def test_methods_listing_includes_entry_point_methods(plugin_dir):
    from typer.testing import CliRunner
    from mmbal_cli.app import app
    out = CliRunner().invoke(app, ["methods"])
    assert out.exit_code == 0 and "plugin_joint" in out.output


# -- init and freeze ------------------------------------------------------------------------------
def mlp_spec(**setup) -> ModelSpec:
    table = {"hidden": [6], "dim": 4}
    return ModelSpec((ModalitySpec("a", "mlp", table, **setup), ModalitySpec("b", "mlp", table)))


def test_init_loads_a_state_dict_and_a_mismatch_names_the_keys(tmp_path):
    torch.manual_seed(5)
    source = build_model(mlp_spec(), {"a": (3,), "b": (2,)}, 3)
    path = tmp_path / "enc.pt"
    torch.save(source.encoders["a"].state_dict(), path)
    torch.manual_seed(6)
    model = build_model(mlp_spec(init=str(path)), {"a": (3,), "b": (2,)}, 3)
    for k, v in source.encoders["a"].state_dict().items():
        assert torch.equal(model.encoders["a"].state_dict()[k], v)
    with pytest.raises(PresetError) as info:
        build_model(mlp_spec(init=str(path)), {"a": (5,), "b": (2,)}, 3)
    assert info.value.problems == [f"modalities.a.init: {path} does not fit this modality's encoder: other shapes: "
                                   f"net.0.weight [6, 3] (the encoder's: [6, 5])"]
    torch.save({"net.0.weight": torch.zeros(6, 3)}, path)
    with pytest.raises(PresetError) as info:
        build_model(mlp_spec(init=str(path)), {"a": (3,), "b": (2,)}, 3)
    assert "missing keys net.0.bias, net.4.weight, net.4.bias" in info.value.problems[0]
    path.write_bytes(b"not a torch file")
    with pytest.raises(PresetError, match="cannot be loaded with torch.load\\(weights_only=True\\)"):
        build_model(mlp_spec(init=str(path)), {"a": (3,), "b": (2,)}, 3)


def test_init_from_another_runs_checkpoint_through_a_preset(tmp_path):
    first = run_doc(tmp_path, tiny_doc(epochs=1))
    best = RunPaths(first.run_dir).best
    trained = {k: v for k, v in load_checkpoint(best)["model"].items() if k.startswith("encoders.a.")}
    second = tmp_path / "second"
    second.mkdir()
    doc = tiny_doc(epochs=1, modalities={"a": {"init": str(best), "freeze": True}})
    result = run_doc(second, doc)
    after = load_checkpoint(RunPaths(result.run_dir).last)
    for k, v in trained.items():
        assert torch.equal(after["model"][k], v), k            # loaded, and frozen: unchanged by training
    n_trainable = sum(v.numel() > 0 for k, v in after["model"].items() if not k.startswith("encoders.a."))
    assert 0 < len(after["optimizer"]["state"]) <= n_trainable     # momentum buffers of trained parameters only
    missing = problems_of(tmp_path, tiny_doc(modalities={"a": {"init": "nowhere.pt"}}))
    assert missing == [f"modalities.a.init: the weights file {tmp_path / 'nowhere.pt'} does not exist"]


def test_frozen_parameters_get_no_gradient_and_no_optimizer_state(tmp_path):
    doc = tiny_doc(epochs=1, optimizer="adam", lr=0.01, modalities={"a": {"freeze": ["stage0"]}, "b": {"freeze": 1}})
    path = preset_file(tmp_path, doc)
    cfg, _ = load_preset(path)
    from engine.run.parts import build_parts
    data, model, method = build_parts(cfg, torch.device("cpu"))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"encoders.a.net.0.weight", "encoders.a.net.0.bias", "encoders.b.net.0.weight",
                      "encoders.b.net.0.bias"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = run_doc(tmp_path, doc)
    state = load_checkpoint(RunPaths(result.run_dir).last)
    n_trained = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(state["optimizer"]["state"]) == n_trained          # no Adam moments for frozen parameters
    for n in frozen:
        assert torch.equal(state["model"][n], before[n]), n
    assert not torch.equal(state["model"]["encoders.a.net.4.weight"], before["encoders.a.net.4.weight"])


def test_freeze_problems_name_the_key(tmp_path):
    doc = tiny_doc(modalities={"a": {"freeze": ["stage7"]}, "b": {"freeze": "yes"}})
    problems = problems_of(tmp_path, doc)
    assert problems == ["modalities.b.freeze: expected true/false, a number of leading stages, or a non-empty list "
                        "of stage names (\"stage0\") and parameter-name prefixes, got 'yes'"]
    problems = problems_of(tmp_path, tiny_doc(modalities={"a": {"freeze": ["stage7"]}, "b": {"freeze": 9}}))
    assert problems == ["modalities.a.freeze: 'stage7' names no parameter of this encoder (its top-level parts: net; "
                        "stages stage0..stage1)",
                        "modalities.b.freeze: 9 stages asked, but this encoder has 2 (0..2)"]


def test_a_frozen_batchnorm_keeps_its_running_statistics():
    table = {"hidden": [6], "dim": 4, "norm": "batchnorm"}
    spec = ModelSpec((ModalitySpec("a", "mlp", table, freeze=True), ModalitySpec("b", "mlp", table)))
    model = build_model(spec, {"a": (3,), "b": (2,)}, 3).train()
    norm_a, norm_b = model.encoders["a"].net[1], model.encoders["b"].net[1]
    model({"a": torch.randn(8, 3) + 5, "b": torch.randn(8, 2) + 5})
    assert not norm_a.training and torch.equal(norm_a.running_mean, torch.zeros(6))
    assert norm_b.training and not torch.equal(norm_b.running_mean, torch.zeros(6))


# -- transformers ---------------------------------------------------------------------------------
TINY_BERT = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 32, "vocab_size": 40, "max_position_embeddings": 16}
TINY_VIT = {"model_type": "vit", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 32, "patch_size": 4}


def token_and_image_data(path: Path, n: int = 96) -> Path:
    """Token ids [10] (padded with 0) whose first token tells the class, and 3x8x8 images of noise."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    ids = rng.integers(3, 40, (n, 10)).astype(np.float32)
    ids[:, 0] = 1 + labels
    ids[np.arange(n) % 3 == 0, 7:] = 0
    images = rng.normal(size=(n, 3, 8, 8)).astype(np.float32)
    split = np.array(["train"] * (n - 32) + ["val"] * 16 + ["test"] * 16)
    write_dataset(path, {"text": ids, "image": images}, labels, split, ["x", "y"], "tokens",
                  kinds={"text": "sequence", "image": "image"})
    return path


def test_transformers_text_and_vision_encoders_from_tiny_configs_train_through_a_preset(tmp_path):
    pytest.importorskip("transformers")
    data = token_and_image_data(tmp_path / "tokens.parquet")
    doc = {"name": "hf", "seed": 0, "data": {"path": str(data), "standardize": "none"},
           "modalities": {"text": {"encoder": "hf", "config": TINY_BERT, "freeze": ["backbone.embeddings"]},
                          "image": {"encoder": "transformers", "config": TINY_VIT, "pooling": "mean"}},
           "method": {"name": "joint"},
           "train": {"epochs": 4, "batch_size": 16, "optimizer": "adamw", "lr": 0.003}}
    result = run_doc(tmp_path, doc)
    assert result.state == "finished"
    state = load_checkpoint(RunPaths(result.run_dir).last)["model"]
    assert state["encoders.text.backbone.embeddings.word_embeddings.weight"].shape == (40, 16)
    assert state["fusion.linear.weight"].shape == (2, 32)            # out_dim 16 + 16
    assert result.summary["test"]["test/acc/text"] > 0.8            # the first token tells the class


def test_transformers_problems(tmp_path):
    pytest.importorskip("transformers")
    data = token_and_image_data(tmp_path / "tokens.parquet")
    base = {"name": "hf", "data": {"path": str(data)}, "method": {"name": "joint"}}
    doc = {**base, "modalities": {"text": {"encoder": "hf", "config": TINY_BERT}, "image": {"encoder": "conv2d"}}}
    assert problems_of(tmp_path, doc) == [
        "data.standardize: modality 'text' holds token ids for its hf encoder, which standardisation would change; "
        "set data.standardize = \"none\" (and give other modalities already scaled values)"]
    doc = {**base, "data": {"path": str(data), "standardize": "none"},
           "modalities": {"text": {"encoder": "hf", "config": {**TINY_BERT, "max_position_embeddings": 8}},
                          "image": {"encoder": "hf", "config": {**TINY_VIT, "image_size": 16}}}}
    assert problems_of(tmp_path, doc) == [
        "modalities.text.encoder: the token sequences have length 10, above the model's max_position_embeddings = 8",
        "modalities.image.encoder: the images are 8x8, the model's image_size is 16x16"]
    doc["modalities"] = {"text": {"encoder": "hf"}, "image": {"encoder": "hf", "config": {"hidden_size": 4}}}
    assert problems_of(tmp_path, doc) == [
        "modalities.text: give either model = \"<name or folder>\" or config = { model_type = \"...\", ... }, "
        "not both and not neither",
        "modalities.image: config needs model_type = \"bert\" (or vit, roberta, ...): the architecture to build"]


# -- timm and torchvision: only where they import beside this torch -------------------------------
def importable(package: str):
    """``package``, or skip with the reason (torchvision's compiled operators may not load beside this torch)."""
    try:
        return __import__(package)
    except Exception as exc:  # ImportError, or RuntimeError from torchvision's operators
        pytest.skip(f"{package} does not import here: {type(exc).__name__}: {str(exc).splitlines()[0]}")


@pytest.mark.parametrize("encoder,options", [("timm", {"model": "resnet18"}),
                                             ("torchvision", {"model": "resnet18"})])
def test_timm_and_torchvision_backbones_give_num_features(encoder, options):
    importable(encoder)
    spec = ModelSpec((ModalitySpec("a", encoder, options), ModalitySpec("b", "mlp", {"hidden": [4], "dim": 4})))
    model = build_model(spec, {"a": (3, 32, 32), "b": (2,)}, 3)
    assert model.encoders["a"].out_dim == 512
    out = model({"a": torch.randn(2, 3, 32, 32), "b": torch.randn(2, 2)})
    assert out.features["a"].shape == (2, 512)


def test_timm_and_torchvision_missing_is_a_preset_problem_naming_the_extra(monkeypatch):
    for name in ("timm", "torchvision"):
        monkeypatch.setitem(sys.modules, name, None)   # import raises ModuleNotFoundError
    spec = ModelSpec((ModalitySpec("a", "timm", {"model": "resnet18"}),
                      ModalitySpec("b", "torchvision", {"model": "resnet18"})))
    with pytest.raises(PresetError) as info:
        build_model(spec, {"a": (3, 8, 8), "b": (3, 8, 8)}, 3)
    assert info.value.problems == [
        "modalities.a.encoder: this encoder needs the timm package, which is not installed; pip install \"mmbal[timm]\"",
        "modalities.b.encoder: this encoder needs the torchvision package, which is not installed; "
        "pip install \"mmbal[torchvision]\""]
