"""Presets: resolution with defaults, and one test per bad-preset case with its message."""

import textwrap
from pathlib import Path

import pytest

from engine.config import apply_overrides, load_preset, locked_differences, parse_override
from engine.errors import PresetError

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

BASE = """
name = "t"
seed = 1
[data]
source = "synthetic"
[data.synthetic]
n_samples = 200
modalities = ["a", "b"]
dims = [8, 6]
unique = [1.0, 0.5]
noise = [0.5, 0.5]
[modalities.a]
encoder = "mlp"
[modalities.b]
encoder = "mlp"
[method]
name = "joint"
[train]
epochs = 2
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "p.toml"
    p.write_text(textwrap.dedent(text))
    return p


def problems_of(tmp_path, text, overrides=()):
    with pytest.raises(PresetError) as info:
        load_preset(write(tmp_path, text), list(overrides))
    return info.value.problems, str(info.value)


def test_good_preset_resolves_with_defaults(tmp_path):
    cfg, _ = load_preset(write(tmp_path, BASE))
    assert cfg.modalities == ["a", "b"]
    assert cfg.model.fusion == "concat"
    assert cfg.method_name == "joint"
    assert cfg.train.epochs == 2 and cfg.train.batch_size == 64
    d = cfg.to_dict()
    assert d["modalities"]["a"]["encoder"] == "mlp" and d["modalities"]["a"]["column"] == "a"
    assert d["method"] == {"name": "joint"}


def test_overrides_are_parsed_as_toml_or_strings():
    assert parse_override("train.lr=3e-4") == (["train", "lr"], 3e-4)
    assert parse_override("method.name=unimodal") == (["method", "name"], "unimodal")
    assert parse_override("data.synthetic.dims=[4, 4]") == (["data", "synthetic", "dims"], [4, 4])
    assert apply_overrides({"train": {"epochs": 1}}, ["train.epochs=5", "seed=3"]) == {"train": {"epochs": 5}, "seed": 3}
    with pytest.raises(PresetError, match="expected KEY=VALUE"):
        parse_override("train.epochs")


@pytest.mark.parametrize("edit, overrides, expected", [
    # unknown key with "did you mean"
    (lambda t: t.replace("epochs = 2", "epoch = 2"), (), "train.epoch: unknown key (did you mean 'epochs'?)"),
    (lambda t: "sed = 3\n" + t, (), "sed: unknown key (did you mean 'seed'?)"),
    # wrong type
    (lambda t: t.replace("epochs = 2", 'epochs = "two"'), (), "train.epochs: expected int, got 'two'"),
    # out of range
    (lambda t: t.replace("epochs = 2", "epochs = 0"), (), "train.epochs: must be >= 1, got 0"),
    (lambda t: t, ("train.lr=-1",), "train.lr: must be > 0, got -1"),
    # unknown registry names
    (lambda t: t.replace('name = "joint"', 'name = "jiont"'), (), "method.name: unknown method 'jiont' (did you mean 'joint'?)"),
    (lambda t: t.replace('[modalities.a]\nencoder = "mlp"', '[modalities.a]\nencoder = "mpl"'), (),
     "modalities.a.encoder: unknown encoder 'mpl' (did you mean 'mlp'?)"),
    (lambda t: t + '\n[model]\nfusion = "concatt"\n', (), "model.fusion: unknown fusion 'concatt' (did you mean 'concat'?)"),
    # a parameter of another method
    (lambda t: t.replace('name = "joint"', 'name = "joint"\nmodality = "a"'), (),
     "method.modality: unknown key; known: none ('modality' is an option of method unimodal, not of 'joint')"),
    # encoder option that does not exist
    (lambda t: t.replace('[modalities.a]\nencoder = "mlp"', '[modalities.a]\nencoder = "mlp"\nchannels = [3]'), (),
     "modalities.a.channels: unknown key"),
    # modality name not in the data
    (lambda t: t.replace("[modalities.b]", "[modalities.c]"), (), "modalities.c: the dataset has no modality column 'c'"),
    # unimodal's modality must be one of the run's
    (lambda t: t.replace('name = "joint"', 'name = "unimodal"\nmodality = "z"'), (),
     "method.modality: 'z' is not one of the modalities (a, b)"),
    # path that does not exist
    (lambda t: t.replace('source = "synthetic"', 'path = "nope/missing.parquet"'), (), "missing.parquet"),
    (lambda t: t.replace('source = "synthetic"', 'source = "parquet"'), (), "data.path is required"),
    # select metric naming an unknown modality
    (lambda t: t.replace("epochs = 2", 'epochs = 2\nselect_metric = "val/acc/c"'), (),
     "train.select_metric: 'c' is neither 'fused' nor a modality"),
    (lambda t: t.replace("epochs = 2", "epochs = 2\nwarmup_epochs = 3"), (), "warmup_epochs (3) must be below train.epochs"),
    (lambda t: t.replace("[modalities.b]\nencoder = \"mlp\"", ""), (), "at least two modalities are needed"),
    # a modality's name is part of its metric names
    (lambda t: t.replace("[modalities.b]", '[modalities.fused]\ncolumn = "b"'), (),
     "modalities.fused: 'fused' is the fused model's name in every metric (val/acc/fused)"),
    (lambda t: t.replace("[modalities.b]", '[modalities."x;y"]\ncolumn = "b"'), (),
     "modalities.x;y: 'x;y' contains ';', which separates the parts of metric names"),
    (lambda t: t.replace("[modalities.b]", '[modalities."a/b"]\ncolumn = "b"'), (),
     "rename the table, and keep the data's column with column = \"b\""),
])
def test_bad_preset_cases(tmp_path, edit, overrides, expected):
    problems, message = problems_of(tmp_path, edit(BASE), overrides)
    assert any(expected in p for p in problems), problems
    assert str(tmp_path / "p.toml") in message


def test_all_problems_are_reported_at_once(tmp_path):
    text = BASE.replace("epochs = 2", "epochs = 0\nbatch_sise = 3").replace('name = "joint"', 'name = "nope"')
    problems, message = problems_of(tmp_path, text)
    assert len(problems) == 3
    assert "3 problems" in message


def test_invalid_toml_names_the_line(tmp_path):
    problems, _ = problems_of(tmp_path, "name = \n")
    assert "not valid TOML" in problems[0] and "line 1" in problems[0]


def test_missing_preset_file(tmp_path):
    with pytest.raises(PresetError, match="does not exist"):
        load_preset(tmp_path / "missing.toml")


def test_locked_differences_name_each_key():
    a = {"seed": 0, "method": {"name": "joint"}, "train": {"batch_size": 64, "epochs": 3}}
    b = {"seed": 1, "method": {"name": "unimodal", "modality": "a"}, "train": {"batch_size": 64, "epochs": 9}}
    diffs = locked_differences(a, b)
    assert diffs == ['seed: 0 -> 1', 'method.name: "joint" -> "unimodal"', 'method.modality: null -> "a"']


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not present on this machine")
def test_every_shipped_preset_resolves():
    for preset in sorted((ROOT / "presets").glob("*.toml")):
        cfg, _ = load_preset(preset)
        assert len(cfg.modalities) >= 2, preset


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not present on this machine")
def test_modalities_default_to_every_column_with_encoders_by_kind(tmp_path):
    p = write(tmp_path, f'[data]\npath = "{SHARED / "avdigits.parquet"}"\n')
    cfg, _ = load_preset(p)
    assert [(m.name, m.encoder) for m in cfg.model.modalities] == [("audio", "conv2d"), ("image", "conv2d")]


def test_a_modality_column_of_the_wrong_type_is_named_with_its_type(tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.table({"label": pa.array([0, 1, 0, 1], pa.int64()),
                      "a": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(8, np.float32)), 2),
                      "b": pa.array([[1.0], [1.0, 2.0], [3.0], [4.0]], pa.list_(pa.float32()))})
    pq.write_table(table, tmp_path / "d.parquet")
    text = '[data]\npath = "d.parquet"\n[modalities.a]\nencoder = "mlp"\n[modalities.b]\nencoder = "mlp"\n'
    problems, _ = problems_of(tmp_path, text)
    assert any(p.startswith("modalities.b: column 'b' of") and "variable-length lists" in p for p in problems), problems


def test_a_data_column_named_fused_must_be_mapped_to_another_modality_name(tmp_path):
    """Without [modalities] every column is a modality of its own name; 'fused' would overwrite the fused
    model's metrics (val/acc/fused), so the preset must name it otherwise, and then it trains."""
    import numpy as np

    from engine.data.writer import write_dataset
    rng = np.random.default_rng(0)
    write_dataset(tmp_path / "d.parquet", {"fused": rng.normal(size=(8, 3)), "b": rng.normal(size=(8, 2))},
                  np.arange(8) % 2, None, ["n", "y"], name="d")
    problems, _ = problems_of(tmp_path, '[data]\npath = "d.parquet"\n')
    assert problems == ["data.path: the dataset's modality column 'fused' cannot be a modality's name: 'fused' is "
                        "the fused model's name in every metric (val/acc/fused), so a modality of that name would "
                        "overwrite its figures; name it in the preset: [modalities.<name>] with column = \"fused\""]
    cfg, _ = load_preset(write(tmp_path, '[data]\npath = "d.parquet"\n[modalities.f]\ncolumn = "fused"\n'
                                         '[modalities.b]\n'))
    assert cfg.modalities == ["f", "b"] and cfg.columns == {"f": "fused", "b": "b"}
