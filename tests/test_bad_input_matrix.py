"""The bad-input matrix (issue #9): every bad dataset, preset and command line in one table.

Each row builds one bad input in a fresh folder and drives the real CLI on it (in-process with
Typer's runner; one row in a subprocess through ``python -m mmbal_cli``). Every row must give
exit code 2, a message that contains the file (or the command-line option) and the key or column
at fault, no traceback, and nothing left behind: no run directory, no new file at all.

Categories: ``data`` (every case of docs/data-format.md "What is refused", plus unreadable
files, directories and metadata), ``preset`` (unknown keys with "did you mean", wrong types,
out-of-range and non-finite values, unknown registry names, an option of another method, modality
names not in the data, paths that do not exist, settings that cannot train), ``cli`` (options and
arguments the parser or a command refuses) and ``budget`` (data that would need more memory than
``data.memory_budget`` with ``data.mode = "resident"``, refused before any row is read).
Individual cases are also tested closer to their code (test_preset.py, test_data_parquet.py,
test_cli.py); this file is the one list of all of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from mmbal_cli.app import app

import parquet_tools
from parquet_tools import changed, tensor, vec, write_table
from runtools import tiny_preset

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

# The tiny synthetic preset the preset cases edit as text (each edit names the line it changes).
SYNTH = tiny_preset(name="t", seed=None, epochs=1, optimizer=None, lr=None,
                    encoder={"encoder": "mlp", "hidden": [4], "dim": 4},
                    data={"synthetic": {"n_samples": 60, "n_classes": 2, "modalities": None, "dims": [3, 3],
                                        "unique": None, "noise": None}},
                    train={"batch_size": 16, "log_every": None}, monitor={"enabled": False})

PARQUET = """
[data]
path = "d.parquet"
[train]
epochs = 1
batch_size = 8
[monitor]
enabled = false
"""


# -- building inputs ---------------------------------------------------------------------------
def good_columns(n: int = 24) -> dict[str, pa.Array]:
    return parquet_tools.good_columns(n, split_cycle=("train", "train", "val", "test"))


def run_args(tmp: Path, preset: str = "p.toml", *extra: str) -> list[str]:
    return ["run", str(tmp / preset), "--runs-dir", str(tmp / "runs"), *extra]


def nan_at(row: int, shape=(24, 3)) -> np.ndarray:
    values = np.ones(shape)
    values[row].flat[1] = np.nan
    return values


def _parquet_preset(path: str = "d.parquet", data_keys: str = "", extra: str = "") -> str:
    """The Parquet preset for ``path``, with ``data_keys`` lines in its [data] table and ``extra`` tables."""
    text = textwrap.dedent(PARQUET).replace('path = "d.parquet"\n', f'path = "{path}"\n{data_keys}')
    return text + textwrap.dedent(extra)


def data(data_keys: str = "", extra: str = "", meta=None, **changes) -> Callable[[Path], list[str]]:
    """A Parquet dataset ``d.parquet`` with ``changes`` to the good columns (None drops one)."""
    def make(tmp: Path) -> list[str]:
        write_table(tmp / "d.parquet", changed(good_columns(), changes), meta)
        (tmp / "p.toml").write_text(_parquet_preset("d.parquet", data_keys, extra))
        return run_args(tmp)
    return make


def data_file(builder: Callable[[Path], Path], data_keys: str = "") -> Callable[[Path], list[str]]:
    """A dataset made by ``builder(tmp)`` (returns its path), with the Parquet preset pointing at it."""
    def make(tmp: Path) -> list[str]:
        path = builder(tmp)
        (tmp / "p.toml").write_text(_parquet_preset(path.name, data_keys))
        return run_args(tmp)
    return make


def preset(edit: Callable[[str], str] = lambda t: t, *extra: str) -> Callable[[Path], list[str]]:
    """The tiny synthetic preset changed by ``edit``, run with ``extra`` arguments."""
    def make(tmp: Path) -> list[str]:
        (tmp / "p.toml").write_text(edit(SYNTH))
        return run_args(tmp, "p.toml", *extra)
    return make


def cli(*args: str, setup: Callable[[Path], None] | None = None) -> Callable[[Path], list[str]]:
    """Plain command-line arguments; ``{tmp}`` is the case folder, the synthetic preset is at p.toml."""
    def make(tmp: Path) -> list[str]:
        (tmp / "p.toml").write_text(SYNTH)
        if setup:
            setup(tmp)
        return [a.replace("{tmp}", str(tmp)) for a in args]
    return make


def _swap(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)
    return edit


def _append(extra: str) -> Callable[[str], str]:
    return lambda text: text + textwrap.dedent(extra)


def _train(line: str) -> Callable[[str], str]:
    return _swap("batch_size = 16\n", f"batch_size = 16\n{line}\n")


# -- data builders that need more than a column change ----------------------------------------
def _not_parquet(tmp: Path) -> Path:
    (tmp / "d.parquet").write_text("label,a\n1,2\n")
    return tmp / "d.parquet"


def _truncated(tmp: Path) -> Path:
    path = write_table(tmp / "d.parquet", good_columns())
    path.write_bytes(path.read_bytes()[:-100])
    return path


def _empty_dir(tmp: Path) -> Path:
    (tmp / "ds").mkdir()
    (tmp / "ds" / "notes.txt").write_text("no data here")
    return tmp / "ds"


def _schemas_differ(tmp: Path) -> Path:
    (tmp / "ds").mkdir()
    write_table(tmp / "ds" / "p0.parquet", good_columns())
    cols = good_columns()
    cols["a"] = vec(np.ones((24, 4)))
    write_table(tmp / "ds" / "p1.parquet", cols)
    return tmp / "ds"


def _bad_row_in_second_file(tmp: Path) -> Path:
    (tmp / "ds").mkdir()
    write_table(tmp / "ds" / "p0.parquet", good_columns())
    cols = good_columns()
    cols["a"] = vec(nan_at(6))
    write_table(tmp / "ds" / "p1.parquet", cols)
    return tmp / "ds"


def _no_rows(tmp: Path) -> Path:
    return write_table(tmp / "d.parquet", {k: v[:0] for k, v in good_columns().items()})


def _few_rows_no_split(tmp: Path) -> Path:
    cols = good_columns(4)
    cols.pop("split")
    return write_table(tmp / "d.parquet", cols)


def _child_null() -> pa.Array:
    flat = pa.array([1.0] * 13 + [None] + [1.0] * 58, pa.float32())  # row 4, element 1
    return pa.FixedSizeListArray.from_arrays(flat, 3)


def _big_dataset(tmp: Path) -> Path:
    """8 rows of 512x512 float32 tensors: 8 MiB resident, a small file (zeros compress)."""
    cols = good_columns(8)
    cols["b"] = tensor(np.zeros((8, 512, 512), np.float32))
    cols["split"] = pa.array(["train", "train", "val", "test"] * 2)
    return write_table(tmp / "d.parquet", cols)


def _runs_dir_below_a_file(tmp: Path) -> None:
    (tmp / "blocker").write_text("a file where the runs directory should go")


def _finished_run(tmp: Path) -> None:
    res = runner.invoke(app, ["run", str(tmp / "p.toml"), "--runs-dir", str(tmp / "runs")])
    assert res.exit_code == 0, res.output


def _nan_dataset(tmp: Path) -> None:
    cols = good_columns()
    cols["a"] = vec(nan_at(4))
    write_table(tmp / "d.parquet", cols)


# -- the matrix ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    category: str                          # data | preset | cli | budget
    id: str
    make: Callable[[Path], list[str]]      # builds the bad input in the case folder; returns mmbal's arguments
    expect: tuple[str, ...]                # substrings of the output; "{tmp}" is the case folder
    subprocess: bool = False               # run `python -m mmbal_cli` instead of the in-process runner
    forbid_reading: bool = False           # reading the rows (read_dataset) must not happen


D, P, C = "{tmp}/d.parquet", "{tmp}/p.toml", "{tmp}"

CASES = [
    # -- data: the cases of docs/data-format.md "What is refused", then the rest ---------------
    Case("data", "missing label column", data(label=None), (D, "column 'label' (the label) is missing")),
    Case("data", "float labels", data(label=pa.array(np.arange(24) % 2, pa.float64())),
         (D, "column 'label' has type double", "integers")),
    Case("data", "string labels", data(label=pa.array(["0", "1"] * 12)),
         (D, "column 'label' has type string", "`mmbal data import FILE OUT.parquet --label label` converts class names")),
    Case("data", "label above C-1 of the metadata classes",
         data(meta={"classes": ["x", "y"]}, label=pa.array([0, 1, 0, 2] + [0, 1] * 10, pa.int64())),
         (D, "column 'label', row 3", "label 2 is outside 0..1")),
    Case("data", "negative label", data(label=pa.array([0, 1, 0, 1, 0, -1] + [0, 1] * 9, pa.int64())),
         (D, "column 'label', row 5", "-1 is negative")),
    Case("data", "null label", data(label=pa.array([0, 1, None] + [1, 0] * 10 + [1], pa.int64())),
         (D, "column 'label', row 2", "null")),
    Case("data", "label implying more classes than rows (an id column)",
         data(label=pa.array([0] * 23 + [10 ** 12], pa.int64())), (D, "column 'label', row 23", "would make")),
    Case("data", "uint64 label beyond int64", data(label=pa.array([1] * 23 + [2 ** 64 - 1], pa.uint64())),
         (D, "column 'label', row 23", "18446744073709551615")),
    Case("data", "variable-length lists (auto-detected)",
         data(v=pa.array([[1.0, 2.0]] * 23 + [[1.0]], pa.list_(pa.float32()))),
         ("data.path", D, "column 'v'", "variable-length lists")),
    Case("data", "variable-length lists (named in the preset)",
         data(extra="[modalities.a]\n[modalities.v]\n",
              v=pa.array([[1.0, 2.0]] * 23 + [[1.0]], pa.list_(pa.float32()))),
         (P, "modalities.v", D, "column 'v'", "variable-length lists")),
    Case("data", "nested fixed-size lists (auto-detected)",
         data(n=pa.FixedSizeListArray.from_arrays(vec(np.ones((48, 3))), 2)), (D, "column 'n'", "fixed-size lists of")),
    Case("data", "strings named as a modality", data(extra="[modalities.a]\n[modalities.s]\n", s=pa.array(["x"] * 24)),
         (P, "modalities.s", D, "column 's'", "strings")),
    Case("data", "integer tensor named as a modality",
         data(extra="[modalities.a]\n[modalities.t]\n", t=tensor(np.ones((24, 2, 2), np.int32), pa.int32())),
         (P, "modalities.t", D, "column 't'", "int32")),
    Case("data", "NaN in a vector", data(a=vec(nan_at(4))), (D, "column 'a', row 4", "NaN")),
    Case("data", "infinity in a tensor", data(b=tensor(np.where(np.arange(96).reshape(24, 2, 2) == 9, np.inf, 1.0))),
         (D, "column 'b', row 2", "infinite")),
    Case("data", "null element in a present row", data(a=_child_null()), (D, "column 'a', row 4", "null element")),
    Case("data", "empty val split", data(split=pa.array(["train", "test"] * 12)),
         (D, "column 'split'", "no 'val' rows")),
    Case("data", "stratified split leaving an empty split", data_file(_few_rows_no_split),
         (D, "data.val_fraction", "leaves no val")),
    Case("data", "fewer than two modality columns", data(b=None),
         (P, "modalities: at least two modalities are needed", D, "modality column(s): a")),
    Case("data", "split value other than train/val/test",
         data(split=pa.array(["train", "val", "test", "train", "train", "valid"] + ["train", "val", "test"] * 6)),
         (D, "column 'split', row 5", "'valid'")),
    Case("data", "null split value", data(split=pa.array(["train", "val", "test", None] + ["train"] * 20)),
         (D, "column 'split', row 3", "null")),
    Case("data", "split column of integers", data(split=pa.array(np.zeros(24, np.int64))),
         (D, "column 'split' has type int64")),
    Case("data", "no rows", data_file(_no_rows), (D, "no rows")),
    Case("data", "not a Parquet file", data_file(_not_parquet), (D, "cannot be read as a Parquet file")),
    Case("data", "truncated Parquet file", data_file(_truncated), (D, "cannot be read as a Parquet file")),
    Case("data", "directory without Parquet files", data_file(_empty_dir), ("{tmp}/ds", "no .parquet files")),
    Case("data", "directory files with different schemas", data_file(_schemas_differ),
         ("{tmp}/ds/p1.parquet", "p0.parquet", "column 'a'")),
    Case("data", "bad row in the second file of a directory", data_file(_bad_row_in_second_file),
         ("{tmp}/ds/p1.parquet", "column 'a', row 6", "NaN")),
    Case("data", "metadata not JSON", data(meta=b"{nope"), (D, "metadata key 'mmbal'", "not valid JSON")),
    Case("data", "metadata not an object", data(meta=[1, 2]), (D, "'mmbal'", "JSON object")),
    Case("data", "metadata classes not strings", data(meta={"classes": [1, 2]}), (D, "'mmbal.classes'")),
    Case("data", "metadata modality hint not an object", data(meta={"modalities": {"a": 3}}),
         (D, "column 'a'", "'mmbal.modalities.a'")),
    Case("data", "metadata kind unknown", data(meta={"modalities": {"b": {"kind": "imgae"}}}),
         (D, "column 'b'", "'imgae'", "did you mean 'image'")),
    Case("data", "metadata shape differs from the column", data(meta={"modalities": {"a": {"shape": [4]}}}),
         (D, "column 'a'", "[4]", "[3]")),
    Case("data", "metadata shape not a list of integers", data(meta={"modalities": {"a": {"shape": 3}}}),
         (D, "column 'a'", "'mmbal.modalities.a.shape'", "list of integers")),
    Case("data", "label column of data.label_column missing", data('label_column = "target"\n'),
         (D, "column 'target' (the label) is missing")),

    # -- preset --------------------------------------------------------------------------------
    Case("preset", "unknown top-level key", preset(lambda t: "sed = 3\n" + t),
         (P, "sed: unknown key (did you mean 'seed'?)")),
    Case("preset", "unknown key in a table", preset(_swap("epochs = 1", "epoch = 1")),
         (P, "train.epoch: unknown key (did you mean 'epochs'?)")),
    Case("preset", "unknown key in [monitor]", preset(_swap("enabled = false", "enabled = false\nshapely = true")),
         (P, "monitor.shapely: unknown key (did you mean 'shapley'?)")),
    Case("preset", "unknown key in [data.synthetic]", preset(_swap("n_classes = 2", "n_class = 2")),
         (P, "data.synthetic.n_class: unknown key (did you mean 'n_classes'?)")),
    Case("preset", "wrong type", preset(_swap("epochs = 1", 'epochs = "one"')),
         (P, "train.epochs: expected int, got 'one'")),
    Case("preset", "wrong type of a method name", preset(_swap('name = "joint"', 'name = ["joint"]')),
         (P, "method.name: expected the name of a method (a string), got ['joint']")),
    Case("preset", "wrong type of an encoder name", preset(_swap('encoder = "mlp"', "encoder = {mlp = 1}")),
         (P, "modalities.a.encoder: expected the name of an encoder")),
    Case("preset", "wrong type of a fusion name", preset(_append("[model]\nfusion = []\n")),
         (P, "model.fusion: expected the name of a fusion")),
    Case("preset", "wrong type of a column name", preset(_swap('encoder = "mlp"', 'encoder = "mlp"\ncolumn = ["a"]')),
         (P, "modalities.a.column: expected the name of a dataset column")),
    Case("preset", "a section that is not a table", preset(lambda t: t.replace('[method]\nname = "joint"\n', "")
                                                          .replace('name = "t"', 'name = "t"\nmethod = "joint"')),
         (P, "method: expected a table")),
    Case("preset", "out-of-range value", preset(_swap("epochs = 1", "epochs = 0")),
         (P, "train.epochs: must be >= 1, got 0")),
    Case("preset", "out-of-range value from --set", preset(lambda t: t, "--set", "train.lr=-1"),
         (P, "train.lr: must be > 0, got -1")),
    Case("preset", "infinite float", preset(_train("lr = inf")), (P, "train.lr: expected a finite number, got inf")),
    Case("preset", "NaN float", preset(_train("momentum = nan")),
         (P, "train.momentum: expected a finite number, got nan")),
    Case("preset", "integer beyond 64 bits", preset(_swap("epochs = 1", f"epochs = {2 ** 70}")),
         (P, "train.epochs: expected a 64-bit integer")),
    Case("preset", "seed beyond 64 bits", preset(lambda t: f"seed = {2 ** 64}\n" + t),
         (P, "seed: expected an integer from 0")),
    Case("preset", "Adam betas with an unbounded step (found by Hypothesis)", preset(_train("betas = [0.5, 0.0]")),
         (P, "train.betas = [0.5, 0]", "adam needs beta1 <= sqrt(beta2)")),
    Case("preset", "more CPU threads than any machine", preset(_train("threads = 100000")),
         (P, "train.threads: must be <= 1024")),
    Case("preset", "out-of-range method option", preset(_swap('name = "joint"', 'name = "mcr"\ntemperature = 0')),
         (P, "method.temperature: must be >= 0.001, got 0")),
    Case("preset", "temperature whose logits overflow (found by Hypothesis)",
         preset(_swap('name = "joint"', 'name = "mcr"\ntemperature = 5e-324')),
         (P, "method.temperature: must be >= 0.001, got 5e-324")),
    Case("preset", "unknown method", preset(_swap('name = "joint"', 'name = "jiont"')),
         (P, "method.name: unknown method 'jiont' (did you mean 'joint'?)")),
    Case("preset", "unknown encoder", preset(_swap('encoder = "mlp"', 'encoder = "mpl"')),
         (P, "modalities.a.encoder: unknown encoder 'mpl' (did you mean 'mlp'?)")),
    Case("preset", "unknown fusion", preset(_append('[model]\nfusion = "concatt"\n')),
         (P, "model.fusion: unknown fusion 'concatt' (did you mean 'concat'?)")),
    Case("preset", "option of another method", preset(_swap('name = "joint"', 'name = "joint"\nmodality = "a"')),
         (P, "method.modality: unknown key", "an option of method unimodal, not of 'joint'")),
    Case("preset", "option of another encoder", preset(_swap("hidden = [4]", "hidden = [4]\nchannels = [3]")),
         (P, "modalities.a.channels: unknown key")),
    Case("preset", "modality not in the synthetic data", preset(_swap("[modalities.b]", "[modalities.c]")),
         (P, "modalities.c: the dataset has no modality column 'c'")),
    Case("preset", "modality not in the Parquet data", data(extra="[modalities.a]\n[modalities.bb]\n"),
         (P, "modalities.bb: the dataset has no modality column 'bb' (did you mean 'b'?)")),
    Case("preset", "unimodal modality not in the run",
         preset(_swap('name = "joint"', 'name = "unimodal"\nmodality = "z"')),
         (P, "method.modality: 'z' is not one of the modalities (a, b)")),
    Case("preset", "data.path that does not exist",
         preset(_swap('source = "synthetic"', 'path = "nope/missing.parquet"')),
         (P, "data.path:", "{tmp}/nope/missing.parquet", "no such file")),
    Case("preset", "data.path missing for Parquet data", preset(_swap('source = "synthetic"', 'source = "parquet"')),
         (P, "data.path is required")),
    Case("preset", "preset file that does not exist", cli("run", "{tmp}/missing.toml", "--runs-dir", "{tmp}/runs"),
         ("{tmp}/missing.toml", "does not exist")),
    Case("preset", "preset that is a directory", cli("run", "{tmp}", "--runs-dir", "{tmp}/runs"),
         (C, "cannot read the preset")),
    Case("preset", "not valid TOML", preset(lambda t: "name = \n"), (P, "not valid TOML", "line 1")),
    Case("preset", "not UTF-8", cli("run", "{tmp}/p.toml", "--runs-dir", "{tmp}/runs",
                                    setup=lambda tmp: (tmp / "p.toml").write_bytes(b"\xff\xfe name = 1")),
         (P, "cannot read the preset")),
    Case("preset", "select_metric naming no modality", preset(_train('select_metric = "val/acc/c"')),
         (P, "train.select_metric: 'c' is neither 'fused' nor a modality")),
    Case("preset", "warm-up not below the epochs", preset(_train("warmup_epochs = 3")),
         (P, "train.warmup_epochs (3) must be below train.epochs (1)", "--set train.warmup_epochs=0")),
    Case("preset", "one value per modality missing", preset(_swap("dims = [3, 3]", "dims = [3]")),
         (P, "data.synthetic.dims has 1 value(s)")),
    Case("preset", "reserved modality name",
         preset(lambda t: t.replace("dims = [3, 3]", 'dims = [3, 3]\nmodalities = ["fusion", "b"]')
                .replace("[modalities.a]", "[modalities.fusion]")),
         (P, "modalities.fusion: 'fusion' cannot name a modality")),
    Case("preset", "fewer than two modalities",
         preset(lambda t: t.split("[modalities.b]")[0] + "[method]" + t.split("[method]")[1]),
         (P, "modalities: at least two modalities are needed, got 1")),
    Case("preset", "encoder that cannot take the shape",
         preset(_swap('encoder = "mlp"\nhidden = [4]', 'encoder = "conv2d"')),
         (P, "modalities.a.encoder: encoder 'conv2d' accepts images")),
    Case("preset", "BatchNorm with a batch of one sample",
         preset(_swap("hidden = [4]", 'hidden = [4]\nnorm = "batchnorm"'), "--set", "train.batch_size=1"),
         (P, "modalities.a: the encoder's BatchNorm cannot train on a batch of one sample", "train.batch_size = 1")),
    Case("preset", "BatchNorm with a last batch of one sample",  # 12 train rows; conv2d pools 2x2 to 1x1
         lambda tmp: data()(tmp) + ["--set", "train.batch_size=11"],
         (P, "modalities.b: the encoder's BatchNorm", "train.batch_size = 11", "12 training rows")),
    Case("preset", "drop_last leaving no batch", preset(_swap("batch_size = 16", "batch_size = 100\ndrop_last = true")),
         (P, "train.batch_size: 100 with train.drop_last = true leaves no training batch")),
    Case("preset", "unknown device", preset(_train('device = "tpu"')), (P, "train.device: 'tpu'")),
    Case("preset", "device that is not there", preset(_train('device = "cuda:99"')), (P, "train.device: 'cuda:99'")),

    # -- command line ----------------------------------------------------------------------------
    Case("cli", "unknown option", cli("run", "{tmp}/p.toml", "--bogus"), ("No such option", "--bogus")),
    Case("cli", "missing argument", cli("run"), ("Missing argument 'preset'",)),
    Case("cli", "unknown command", cli("rnu", "{tmp}/p.toml"), ("No such command 'rnu'", "Did you mean 'run'?")),
    Case("cli", "--set without a value", cli("run", "{tmp}/p.toml", "--set", "train.epochs"),
         ("--set", "'train.epochs': expected KEY=VALUE")),
    Case("cli", "--set below a value", cli("run", "{tmp}/p.toml", "--set", "train.epochs.x=1"),
         ("--set", "'train.epochs.x=1': 'epochs' is not a table")),
    Case("cli", "--device that is no device", cli("run", "{tmp}/p.toml", "--device", "gpu"),
         ("--device gpu", "train.device: 'gpu' is not a device")),
    Case("cli", "--runs-dir that is a file", cli("run", "{tmp}/p.toml", "--runs-dir", "{tmp}/p.toml"),
         ("--runs-dir {tmp}/p.toml", "is a file, not a directory")),
    Case("cli", "--runs-dir below a file", cli("run", "{tmp}/p.toml", "--runs-dir", "{tmp}/blocker/runs",
                                               setup=_runs_dir_below_a_file),
         ("--runs-dir {tmp}/blocker/runs", "{tmp}/blocker is a file")),
    Case("cli", "--format unknown", cli("compare", "latest", "--format", "xml"), ("--format", "'xml'")),
    Case("cli", "--methods unknown", cli("sweep", "{tmp}/p.toml", "--methods", "jiont", "--seeds", "0"),
         ("--methods", "unknown method 'jiont' (did you mean 'joint'?)")),
    Case("cli", "--seeds not integers", cli("sweep", "{tmp}/p.toml", "--methods", "joint", "--seeds", "x"),
         ("--seeds", "'x'")),
    Case("cli", "data synth --samples too few", cli("data", "synth", "{tmp}/o.parquet", "--samples", "3"),
         ("mmbal data synth", "n_samples: must be >= 30")),
    Case("cli", "data synth --samples not a number", cli("data", "synth", "{tmp}/o.parquet", "--samples", "many"),
         ("Invalid value", "--samples")),
    Case("cli", "data synth --set unknown key", cli("data", "synth", "{tmp}/o.parquet", "--set", "dimz=[3,3]"),
         ("mmbal data synth", "dimz: unknown key (did you mean 'dims'?)")),
    Case("cli", "data synth into a folder that does not exist", cli("data", "synth", "{tmp}/nope/o.parquet"),
         ("{tmp}/nope/o.parquet", "{tmp}/nope does not exist")),
    Case("cli", "data synth over an existing file", cli("data", "synth", "{tmp}/d.parquet", setup=_nan_dataset),
         ("mmbal data synth", "{tmp}/d.parquet exists", "--force")),
    Case("cli", "data synth to a .csv name", cli("data", "synth", "{tmp}/o.csv"),
         ("mmbal data synth", "{tmp}/o.csv", "'.csv' names another format", "o.parquet")),
    Case("cli", "data import to a .csv name", cli("data", "import", "{tmp}/d.parquet", "{tmp}/o.csv", setup=_nan_dataset),
         ("mmbal data import", "{tmp}/o.csv", "'.csv' names another format", "o.parquet")),
    Case("cli", "ls --runs-dir that is a file", cli("ls", "--runs-dir", "{tmp}/p.toml"),
         ("--runs-dir {tmp}/p.toml", "is a file, not a directory")),
    Case("cli", "data synth larger than the memory",
         cli("data", "synth", "{tmp}/o.parquet", "--set", "dims=[1000000000,3]"),
         ("mmbal data synth", "needs about", "dims")),
    Case("cli", "resume --set with an unknown key",
         cli("resume", "latest", "--set", "train.epoch=3", setup=_finished_run),
         ("{tmp}/runs/", "preset.toml", "train.epoch: unknown key (did you mean 'epochs'?)")),
    Case("cli", "data inspect of a missing file", cli("data", "inspect", "{tmp}/nope.parquet"),
         ("{tmp}/nope.parquet", "no such file")),
    Case("cli", "data inspect of bad data", cli("data", "inspect", "{tmp}/d.parquet", setup=_nan_dataset),
         (D, "column 'a', row 4", "NaN")),
    Case("cli", "bench with a missing preset", cli("bench", "{tmp}/missing.toml"),
         ("{tmp}/missing.toml", "does not exist")),

    # -- memory budget ---------------------------------------------------------------------------
    Case("budget", "resident data over the budget",
         data_file(_big_dataset, 'mode = "resident"\nmemory_budget = "4MiB"\n'),
         (D, 'data.mode = "resident"', "data.memory_budget"), forbid_reading=True),
    Case("budget", "memory budget that is no size", data('memory_budget = "lots"\n'),
         (P, "data.memory_budget: expected a number of bytes")),
    Case("budget", "resident synthetic data over the budget",
         preset(_swap('source = "synthetic"', 'source = "synthetic"\nmode = "resident"\nmemory_budget = 1000')),
         (P, "data.synthetic", "data.memory_budget = 1000")),
    Case("budget", "synthetic data whose generation exceeds the budget",  # Gumbel noise alone: 60 x 1e9 doubles
         preset(_swap("n_classes = 2", "n_classes = 1_000_000_000")), (P, "data.synthetic", "data.memory_budget")),
    # -- one through the real console entry point, in its own process ----------------------------
    Case("data", "NaN in a vector (subprocess)", data(a=vec(nan_at(4))), (D, "column 'a', row 4", "NaN"),
         subprocess=True),
]


def _ids(case: Case) -> str:
    return f"{case.category}: {case.id}"


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _invoke(args: list[str], tmp: Path, in_subprocess: bool) -> tuple[int, str, BaseException | None]:
    env = {"MMBAL_RUNS_DIR": str(tmp / "runs"), "COLUMNS": "200"}
    if in_subprocess:
        proc = subprocess.run([sys.executable, "-m", "mmbal_cli", *args], capture_output=True, text=True,
                              env={**os.environ, **env}, cwd=ROOT, timeout=120)
        return proc.returncode, proc.stdout + proc.stderr, None
    res = runner.invoke(app, args, env=env)
    crash = None if res.exception is None or isinstance(res.exception, SystemExit) else res.exception
    return res.exit_code, res.output, crash


@pytest.fixture()
def no_reading(monkeypatch):
    """Makes reading a dataset's rows fail loudly (a budget refusal must come before it)."""
    import engine.data.dataset as dataset

    def refuse(*args, **kwargs):
        raise AssertionError("read_dataset was called: the budget was not checked before reading the rows")
    monkeypatch.setattr(dataset, "read_dataset", refuse)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_bad_input_exits_2_names_the_culprit_and_leaves_nothing(case, tmp_path, request, one_thread):
    tmp = tmp_path / "case"
    tmp.mkdir()
    args = case.make(tmp)
    if case.forbid_reading:
        request.getfixturevalue("no_reading")
    before = _tree(tmp)
    code, output, crash = _invoke(args, tmp, case.subprocess)
    assert crash is None, f"{type(crash).__name__}: {crash}"
    assert "Traceback" not in output, output
    assert code == 2, output
    flat = " ".join(output.split())  # Rich may wrap a long message
    for part in case.expect:
        part = part.replace("{tmp}", str(tmp))
        assert part in output or " ".join(part.split()) in flat, f"{part!r} not in:\n{output}"
    assert _tree(tmp) == before, f"left behind: {sorted(_tree(tmp) - before)}"


def test_matrix_covers_every_category():
    counts = {c: sum(case.category == c for case in CASES) for c in ("data", "preset", "cli", "budget")}
    assert len(CASES) == sum(counts.values())
    assert counts["data"] >= 37 and counts["preset"] >= 43 and counts["cli"] >= 19 and counts["budget"] >= 4, counts
    assert len({_ids(c) for c in CASES}) == len(CASES)


@pytest.mark.parametrize("args", [
    # the synthetic generator had 2^latent_dim synergy codes for n_classes classes and crashed above 16
    lambda tmp: preset(_swap("n_classes = 2", "n_classes = 20"))(tmp),
    lambda tmp: ["data", "synth", str(tmp / "o.parquet"), "--samples", "120", "--classes", "40"],
    # the BatchNorm check must not refuse a batch of one when every BatchNorm sees > 1 value per channel
    lambda tmp: data(b=tensor(np.random.default_rng(0).normal(size=(24, 8, 8))))(tmp) + ["--set", "train.batch_size=1"],
    # ogm's own-head loss ran the fusion head outside autocast: bf16 features met fp32 weights (found by Hypothesis)
    lambda tmp: preset(_append('[model]\nfusion = "gated"\n'), "--set", 'method.name="ogm"',
                       "--set", 'train.precision="bf16"')(tmp),
], ids=["run with 20 synthetic classes", "data synth with 40 classes", "conv2d BatchNorm on 8x8 maps, batches of one",
        "ogm with a gated fusion in bf16"])
def test_inputs_beside_the_matrix_still_work(args, tmp_path, one_thread):
    """Inputs that crashed before the matrix's fixes, or that a refusal must not catch, exit 0."""
    (tmp_path / "p.toml").write_text(SYNTH)
    code, output, crash = _invoke(args(tmp_path), tmp_path, in_subprocess=False)
    assert crash is None and code == 0, output
