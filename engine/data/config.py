"""Options of the data layer: the preset's ``[data]`` table and its ``[data.synthetic]`` sub-table
(both described in ``docs/presets.md``; the dataset format in ``docs/data-format.md``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ..schema import opt


def _check_fractions(prefix: str, val: float, test: float) -> None:
    if not (0.0 < val < 1.0 and 0.0 < test < 1.0):
        raise ValueError(f"{prefix}val_fraction and {prefix}test_fraction must each lie strictly between 0 and 1 "
                         f"(got {val} and {test})")
    if val + test >= 1.0:
        raise ValueError(f"{prefix}val_fraction + {prefix}test_fraction must be below 1 so that rows are left "
                         f"for training (got {val} + {test} = {val + test:g})")


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3,
          "t": 1000 ** 4, "tb": 1000 ** 4, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}


def parse_size(value: int | str, key: str) -> int:
    """Bytes of ``value``: an integer, or a number with a unit (B, kB/MB/GB/TB = powers of 1000,
    KiB/MiB/GiB/TiB = powers of 1024), e.g. ``"512MiB"``, ``"2GB"``, ``"1.5 GiB"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*", str(value))
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(f"{key}: expected a number of bytes or a size such as \"512MiB\" or \"2GB\" "
                             f"(units B, kB, MB, GB, TB, KiB, MiB, GiB, TiB) or \"auto\", got {value!r}")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"{key}: must be above 0 bytes, got {value!r}")
    return size


@dataclass(frozen=True)
class SynthConfig:
    """Options of the built-in synthetic generator (preset table ``[data.synthetic]``).

    Each modality sees its own unique latent block, the shared block and a nuisance block through a
    fixed random projection plus Gaussian noise; the label mixes unique, shared (redundant) and
    synergistic (XOR-like) information. See :func:`engine.data.synthetic.generate`.
    """

    n_samples: int = opt(3000, ge=30, help="number of samples (rows)")
    n_classes: int = opt(4, ge=2, help="number of classes")
    modalities: list[str] = opt(["a", "b"], help="modality names (at least two)")
    dims: list[int] = opt([32, 32], ge=1, help="observed dimensionality of each modality")
    unique: list[float] = opt([1.0, 0.3], ge=0, help="strength of each modality's unique label information")
    noise: list[float] = opt([0.5, 1.0], ge=0, help="observation noise scale of each modality")
    shared: float = opt(0.5, ge=0, help="strength of the label information shared by all modalities (redundancy)")
    synergy: float = opt(0.0, ge=0, help="strength of XOR-like label information that only all modalities together carry")
    latent_dim: int = opt(4, ge=1, help="size of each latent block (unique, shared, nuisance)")
    label_noise: float = opt(0.5, ge=0, help="scale of the Gumbel noise added to the class scores")
    val_fraction: float = opt(0.15, gt=0, lt=1, help="fraction of each class put in the validation split")
    test_fraction: float = opt(0.15, gt=0, lt=1, help="fraction of each class put in the test split")
    seed: int = opt(0, ge=0, help="generator seed (independent of the training seed)")

    def __post_init__(self) -> None:
        m = len(self.modalities)
        if m < 2:
            raise ValueError(f"data.synthetic.modalities needs at least two names, got {list(self.modalities)}")
        if any(not name for name in self.modalities):
            raise ValueError("data.synthetic.modalities: names must not be empty")
        if len(set(self.modalities)) != m:
            dup = sorted({n for n in self.modalities if list(self.modalities).count(n) > 1})
            raise ValueError(f"data.synthetic.modalities: duplicate name(s) {', '.join(repr(d) for d in dup)}")
        for key in ("dims", "unique", "noise"):
            values = getattr(self, key)
            if len(values) != m:
                raise ValueError(f"data.synthetic.{key} has {len(values)} value(s) but data.synthetic.modalities "
                                 f"names {m}; give one value per modality")
        _check_fractions("data.synthetic.", self.val_fraction, self.test_fraction)


@dataclass(frozen=True)
class DataConfig:
    """The preset's ``[data]`` table: where the samples come from and how they are split and scaled."""

    source: Literal["parquet", "synthetic"] = opt("parquet", help="a Parquet file/directory, or the built-in generator")
    path: str | None = opt(None, help="Parquet file or directory; in a preset relative to the preset's folder, on the command line "
                                          "(--set data.path=...) relative to the current directory")
    mode: Literal["auto", "resident", "stream"] = opt(
        "auto", help="how data is held: resident = the whole dataset on the device; stream = row groups read from "
                     "disk during training; auto = resident when its size fits data.memory_budget, else stream")
    memory_budget: int | str = opt(
        "auto", help="memory the data may use: bytes, or a size such as \"512MiB\" or \"2GB\"; auto = half of the "
                     "free memory of the training device (CUDA: free GPU memory, capped by half the host's "
                     "MemAvailable; CPU: MemAvailable)")
    shuffle_window: int = opt(4, ge=1, help="stream mode: row groups whose rows are shuffled together (larger = "
                                            "closer to a full shuffle, more memory)")
    prefetch: int = opt(2, ge=1, help="stream mode: shuffle windows the background reader decodes ahead")
    label_column: str = opt("label", help="name of the integer label column")
    val_fraction: float = opt(0.15, gt=0, lt=1, help="validation fraction when the data has no split column")
    test_fraction: float = opt(0.15, gt=0, lt=1, help="test fraction when the data has no split column")
    split_seed: int | None = opt(None, ge=0, help="seed of the stratified split (default: the run seed)")
    resplit_seed: int | None = opt(
        None, ge=0, help="re-draw which of the non-test rows are train and which val, with this seed, keeping each "
                         "class's val count; the test rows stay (repeated train/val splits, as `mmbal advise` "
                         "chooses on small data); default: the split as it is")
    standardize: Literal["auto", "feature", "modality", "none"] = opt(
        "auto", help="z-scoring with train statistics: auto = per feature for vectors, one scalar per modality "
                     "for tensors; feature; modality; none")
    synthetic: SynthConfig = opt(default_factory=SynthConfig, help="options of the synthetic generator")

    def __post_init__(self) -> None:
        if self.source == "parquet" and not self.path:
            raise ValueError("data.path is required when data.source = 'parquet'")
        if self.source == "synthetic" and self.path:
            raise ValueError(f"data.path is set ({self.path}) but data.source is 'synthetic', so the file would not "
                             f"be read and the run would train on generated data; to train on the file also set "
                             f"data.source = \"parquet\" (--set data.source=parquet), or remove data.path to use "
                             f"the generator")
        _check_fractions("data.", self.val_fraction, self.test_fraction)
        if self.source == "synthetic" and self.mode == "stream":
            raise ValueError("data.mode = 'stream' reads a Parquet dataset from disk; the synthetic generator's "
                             "data are made in memory, use data.mode = 'resident' or 'auto'")
        if self.memory_budget != "auto":
            parse_size(self.memory_budget, "data.memory_budget")
