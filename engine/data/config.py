"""Options of the data layer: the preset's ``[data]`` table and its ``[data.synthetic]`` sub-table.

The dataset format itself is described in ``spec/data-format.md``; the synthetic generator in
``spec/methods-seeds.md`` section 1.13 (see :mod:`engine.data.synthetic`).
"""

from __future__ import annotations

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
    path: str | None = opt(None, help="Parquet file or directory; relative to the preset's folder")
    mode: Literal["auto", "resident"] = opt("auto", help="how data is held: resident = whole dataset on the device "
                                                         "(auto currently means resident)")
    label_column: str = opt("label", help="name of the integer label column")
    val_fraction: float = opt(0.15, gt=0, lt=1, help="validation fraction when the data has no split column")
    test_fraction: float = opt(0.15, gt=0, lt=1, help="test fraction when the data has no split column")
    split_seed: int | None = opt(None, ge=0, help="seed of the stratified split (default: the run seed)")
    standardize: Literal["auto", "feature", "modality", "none"] = opt(
        "auto", help="z-scoring with train statistics: auto = per feature for vectors, one scalar per modality "
                     "for tensors; feature; modality; none")
    synthetic: SynthConfig = opt(default_factory=SynthConfig, help="options of the synthetic generator")

    def __post_init__(self) -> None:
        if self.source == "parquet" and not self.path:
            raise ValueError("data.path is required when data.source = 'parquet'")
        _check_fractions("data.", self.val_fraction, self.test_fraction)
