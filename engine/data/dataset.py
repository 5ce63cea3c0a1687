"""The training-side view of a dataset: split, standardised tensors resident on the device.

With ``data.mode = "resident"`` the whole dataset is moved to the training device once. Batches
are index gathers on that device, and batch order comes from a permutation seeded by (run seed,
epoch) alone, so an interrupted run resumes on exactly the batches it would have seen. A method
may replace an epoch's samples by an :class:`~engine.data.plan.EpochPlan` (rows to visit, with
repeats, and modalities to drop); each training :class:`~engine.data.batch.Batch` carries its
rows' train-split ids. :meth:`TensorData.subset` views part of the train split as a batch source of
its own (nested training on a held-out part). Data too large for ``data.memory_budget`` are
streamed from disk instead (:mod:`engine.data.stream`, chosen by :mod:`engine.data.memory`); both
are batch sources with the same interface.
"""

from __future__ import annotations

import os

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .batch import Batch, zero_dropped
from .config import DataConfig
from .memory import Placement, choose_placement, generated_peak, memory_budget, resident_estimate, resident_peak
from .parquet import ModalityInfo, RawDataset, file_row_counts, open_dataset, read_dataset
from .plan import EpochPlan, check_rows
from .split import SPLIT_NAMES, resplit_train_val, stratified_split
from .synthetic import generate, working_bytes

__all__ = ["TensorData", "absent_counts", "stratified_split", "to_tensors", "load_data", "epoch_permutation", "batch_slices",
           "select_modalities", "fit_standardizer", "EpochBatches", "plan_order"]

STD_FLOOR = 1e-6


@dataclass
class TensorData:
    """Standardised tensors of every modality, labels, presence masks and split indices, on one device."""

    x: dict[str, torch.Tensor]
    y: torch.Tensor
    present: dict[str, torch.Tensor]
    splits: dict[str, torch.Tensor]
    classes: list[str]
    modalities: dict[str, ModalityInfo]
    name: str
    source: str
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]]
    placement: Placement | None = None
    absent: tuple[str, ...] = ()     # the modalities with an absent value in some row (``present`` False)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {m: tuple(t.shape[1:]) for m, t in self.x.items()}

    @property
    def device(self) -> torch.device:
        return self.y.device

    @property
    def modality_names(self) -> list[str]:
        """The modalities in the data's order (the column order of an epoch plan's masks)."""
        return list(self.x)

    def batch(self, idx: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Rows ``idx`` (on the data's device) of every modality, and their labels."""
        return {m: t.index_select(0, idx) for m, t in self.x.items()}, self.y.index_select(0, idx)

    def train_batch(self, ids: torch.Tensor, masks: torch.Tensor | None = None,
                    rows: torch.Tensor | None = None) -> Batch:
        """The :class:`Batch` of train-split rows ``ids``; ``masks`` (B, M) bool drops (zeroes) inputs;
        ``rows``: the data rows of ``ids`` when already known (the epoch's are gathered at once)."""
        x, y = self.batch(self.splits["train"].index_select(0, ids) if rows is None else rows)
        if masks is None:
            return Batch(x, y, ids, None)
        keep = dict(zip(self.x, masks.unbind(1)))
        return Batch(zero_dropped(x, keep), y, ids, keep)

    # -- the batch-source interface the trainer and the methods use (shared with streamed data) --
    def split_size(self, split: str) -> int:
        """Number of rows of ``split`` ("train", "val" or "test")."""
        return int(self.splits[split].numel())

    def class_counts(self, split: str) -> torch.Tensor:
        """Rows of each class in ``split`` (int64, on the data's device)."""
        return torch.bincount(self.y[self.splits[split]], minlength=self.n_classes)

    def train_epoch(self, seed: int, epoch: int, batch_size: int, drop_last: bool,
                    plan: EpochPlan | None = None) -> "EpochBatches":
        """The training batches of ``epoch``: slices of a permutation of the train rows seeded by (seed,
        epoch), or the samples of ``plan`` (in the order its ``shuffle`` asks; see :mod:`engine.data.plan`)."""
        n_train = self.split_size("train")
        if plan is None:
            ids, masks = epoch_permutation(n_train, seed, epoch, self.device), None
        else:
            plan.check(n_train, self.modality_names)
            ids, masks = plan_order(plan.to(self.device), seed, epoch)
        return EpochBatches(self, batch_slices(ids, batch_size, drop_last),
                            None if masks is None else batch_slices(masks, batch_size, drop_last),
                            batch_slices(self.splits["train"].index_select(0, ids), batch_size, drop_last))

    def eval_batches(self, split: str, batch_size: int):
        """``(x, y)`` batches of ``split`` in row order (no shuffling), for evaluation."""
        for idx in batch_slices(self.splits[split], batch_size, False):
            yield self.batch(idx)

    def eval_rows(self, split: str, batch_size: int):
        """``(x, y, present)`` batches of ``split`` as :meth:`eval_batches` gives them, with ``present``:
        modality -> bool (B,), False where its value is absent, for the modalities with absent values
        (empty when every value is present), so that scores can leave those rows out."""
        for idx in batch_slices(self.splits[split], batch_size, False):
            x, y = self.batch(idx)
            yield x, y, {m: self.present[m].index_select(0, idx) for m in self.absent}

    def subset(self, train: torch.Tensor, val: torch.Tensor | None = None) -> "TensorData":
        """A batch source over part of this train split, sharing this data's tensors (no copy).

        ``train``: train-split row indices (int64, ``0 .. split_size("train") - 1``) that form the
        view's train split, in that order; ``val``: those that form its "val" split (e.g. the part held
        out for G-Blending's nested training), evaluated with ``eval_batches("val", ...)``; its "test"
        split is empty. The view's ``Batch.ids`` index its own train split: ``train[ids]`` are the ids
        in this data. The view keeps this data's standardiser (fitted on the whole train split).
        """
        base = self.splits["train"]
        n = base.numel()
        check_rows(train, n, "subset train rows")
        if train.numel() == 0:
            raise ValueError("subset train rows must not be empty")
        empty = base[:0]
        view_val = empty
        if val is not None:
            check_rows(val, n, "subset val rows")
            view_val = base.index_select(0, val.to(base.device))
        return replace(self, splits={"train": base.index_select(0, train.to(base.device)), "val": view_val,
                                     "test": empty})


@dataclass
class EpochBatches:
    """One epoch of training batches of resident data: ``len()`` batches, iterated from any batch on.

    ``ids``: each batch's train-split rows; ``masks``: each batch's (B, M) kept-modality masks, or None;
    ``rows``: each batch's data rows (the ids through the train split, gathered once for the epoch).
    """

    data: TensorData
    ids: list[torch.Tensor]
    masks: list[torch.Tensor] | None = None
    rows: list[torch.Tensor] | None = None   # each batch's data rows (the ids mapped through the train split)

    def __len__(self) -> int:
        return len(self.ids)

    def iterate(self, start: int = 0):
        """The :class:`Batch` of batches ``start, start + 1, ...`` (resume starts mid-epoch)."""
        for b in range(start, len(self.ids)):
            yield self.data.train_batch(self.ids[b], None if self.masks is None else self.masks[b],
                                        None if self.rows is None else self.rows[b])


def plan_order(plan: EpochPlan, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The plan's rows and masks in the epoch's order: permuted by the (seed, epoch) permutation of
    their number when ``plan.shuffle``, else as given."""
    if not plan.shuffle:
        return plan.rows, plan.masks
    perm = epoch_permutation(len(plan), seed, epoch, plan.rows.device)
    return plan.rows[perm], None if plan.masks is None else plan.masks[perm]


def absent_counts(data) -> dict[str, int]:
    """Rows of resident ``data`` whose value of a modality is absent, for the modalities with such rows
    (one host transfer); ``{}`` for streamed data, whose rows are not all read before training."""
    absent = getattr(data, "absent", ())
    if not absent:
        return {}
    counts = torch.stack([(~data.present[m]).sum() for m in absent]).tolist()
    return dict(zip(absent, map(int, counts)))


def select_modalities(raw: RawDataset, columns: dict[str, str] | None) -> RawDataset:
    """``raw`` restricted/renamed to ``columns`` (modality name -> current name), in that order.

    Used for the synthetic generator, whose modality names play the role of column names.
    """
    if columns is None:
        return raw
    missing = [c for c in columns.values() if c not in raw.features]
    if missing:
        raise DataError(f"{raw.source}: has no modality '{missing[0]}'; it has {', '.join(raw.features)}")
    if len(columns) < 2:
        raise DataError(f"{raw.source}: a multimodal run needs at least two modalities, got {list(columns)}")
    mods = {n: ModalityInfo(n, raw.modalities[c].column, raw.modalities[c].shape, raw.modalities[c].kind)
            for n, c in columns.items()}
    return RawDataset(name=raw.name, source=raw.source, labels=raw.labels, split=raw.split,
                      features={n: raw.features[c] for n, c in columns.items()},
                      present={n: raw.present[c] for n, c in columns.items()},
                      modalities=mods, classes=raw.classes, metadata=raw.metadata)


def _standardize_mode(cfg_mode: str, shape: tuple[int, ...]) -> str:
    if cfg_mode == "auto":
        return "feature" if len(shape) == 1 else "modality"
    return cfg_mode


def fit_standardizer(values: np.ndarray, rows: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float32 over ``rows`` of ``values`` (N, *shape), broadcastable to one sample.

    ``feature``: one pair per element (shape ``*shape``); ``modality``: one scalar pair (shape
    ``(1,) * ndim``); ``none``: 0 and 1. Computed in float64. A std below 1e-6 (a constant
    feature) is replaced by 1, as scikit-learn's StandardScaler does, so that a value unseen in
    training cannot blow up; such a feature is only centred.
    """
    shape = values.shape[1:]
    ones = (1,) * len(shape)
    if mode == "none" or rows.size == 0:
        return np.zeros(ones, np.float32), np.ones(ones, np.float32)
    sample = values[rows].astype(np.float64)
    if mode == "feature":
        mean, std = sample.mean(axis=0), sample.std(axis=0)
    else:
        mean, std = np.full(ones, sample.mean()), np.full(ones, sample.std())
    std = np.where(std < STD_FLOOR, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


def split_codes(labels: np.ndarray, split: np.ndarray | None, source: str, cfg: DataConfig,
                seed: int) -> np.ndarray:
    """Split codes of every row: the data's split column, else the seeded stratified split; with
    ``data.resplit_seed`` the train/val division of the non-test rows re-drawn (:func:`resplit_train_val`)."""
    codes = _base_codes(labels, split, source, cfg, seed)
    return codes if cfg.resplit_seed is None else resplit_train_val(labels, codes, cfg.resplit_seed)


def _base_codes(labels: np.ndarray, split: np.ndarray | None, source: str, cfg: DataConfig,
                seed: int) -> np.ndarray:
    if split is not None:
        return split
    split_seed = cfg.split_seed if cfg.split_seed is not None else seed
    codes = stratified_split(labels, cfg.val_fraction, cfg.test_fraction, split_seed)
    counts = np.bincount(codes, minlength=3)
    empty = [SPLIT_NAMES[i] for i in range(3) if counts[i] == 0]
    if empty:
        raise DataError(f"{source}: the stratified split (data.val_fraction = {cfg.val_fraction}, "
                        f"data.test_fraction = {cfg.test_fraction}) of its {labels.shape[0]} rows leaves no "
                        f"{' and no '.join(empty)} rows; use more data or larger fractions")
    return codes


def _split_codes(raw: RawDataset, cfg: DataConfig, seed: int) -> np.ndarray:
    return split_codes(raw.labels, raw.split, raw.source, cfg, seed)


def to_tensors(raw: RawDataset, cfg: DataConfig, seed: int, device: torch.device | str) -> TensorData:
    """Split, standardise with train statistics (present rows only) and move everything to ``device`` once.

    Missing (absent) rows are 0 after standardisation, i.e. they sit at the train mean.
    """
    device = torch.device(device)
    codes = _split_codes(raw, cfg, seed)
    train = codes == 0
    x, present, stats = {}, {}, {}
    for m, values in raw.features.items():
        mask = raw.present[m]
        mode = _standardize_mode(cfg.standardize, values.shape[1:])
        mean, std = fit_standardizer(values, np.flatnonzero(train & mask), mode)
        scaled = (values - mean) / std
        scaled[~mask] = 0.0
        x[m] = torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32)).to(device)
        present[m] = torch.from_numpy(np.asarray(mask, dtype=bool)).to(device)
        stats[m] = (torch.from_numpy(mean).to(device), torch.from_numpy(std).to(device))
    splits = {name: torch.from_numpy(np.flatnonzero(codes == code).astype(np.int64)).to(device)
              for code, name in enumerate(SPLIT_NAMES)}
    return TensorData(x=x, y=torch.from_numpy(raw.labels.astype(np.int64)).to(device), present=present,
                      splits=splits, classes=list(raw.classes), modalities=dict(raw.modalities),
                      name=raw.name, source=raw.source, stats=stats,
                      absent=tuple(m for m, mask in raw.present.items() if not mask.all()))


def load_data(cfg: DataConfig, modalities: dict[str, str] | None, seed: int, base_dir: Path,
              device: torch.device | str, mode: str | None = None):
    """Read (or generate) the data of ``cfg``, split and standardised: a resident :class:`TensorData` on
    ``device``, or a :class:`~engine.data.stream.StreamData` read from disk while training.

    ``modalities``: modality name -> column name (synthetic: generated modality name), or None
    for all. A relative ``cfg.path`` is taken relative to ``base_dir`` (the preset's folder).
    ``mode`` ("resident" | "stream") overrides the choice of ``cfg.mode`` (a resumed run keeps the
    mode it started with). The peak of loading it resident is estimated from the metadata before any row is read.
    """
    device = torch.device(device)
    budget = memory_budget(cfg, device)
    if cfg.source == "synthetic":
        s = cfg.synthetic
        dims = [(d,) for m, d in zip(s.modalities, s.dims) if modalities is None or m in modalities.values()]
        estimate = generated_peak(s.n_samples, dims, working_bytes(s))
        placement = choose_placement(cfg, estimate, budget, "data.synthetic", mode,
                                     resident=resident_estimate(s.n_samples, dims))
        data = to_tensors(select_modalities(generate(s), modalities), cfg, seed, device)
        data.placement = placement
        return data
    path = Path(cfg.path).expanduser()
    if not path.is_absolute():
        path = Path(os.path.normpath(Path(base_dir) / path))
    layout = open_dataset(path, columns=modalities, label_column=cfg.label_column)
    groups = [n for file in file_row_counts(layout.files) for n in file]
    shapes = [info.shape for info in layout.modalities.values()]
    placement = choose_placement(cfg, resident_peak(sum(groups), shapes, max(groups, default=0)), budget, str(path),
                                 mode, resident=resident_estimate(sum(groups), shapes))
    if placement.mode == "stream":
        from .stream import open_stream
        return open_stream(layout, cfg, seed, device, placement,
                           lambda labels, split, source: split_codes(labels, split, source, cfg, seed))
    data = to_tensors(read_dataset(path, columns=modalities, label_column=cfg.label_column), cfg, seed, device)
    data.placement = placement
    return data


def _mixed_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed from (seed, epoch), stable across platforms and versions (numpy SeedSequence)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, epoch & 0xFFFFFFFFFFFFFFFF]).generate_state(2)
    return int((int(state[0]) << 32 | int(state[1])) & 0x7FFFFFFFFFFFFFFF)


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device | str) -> torch.Tensor:
    """A permutation of 0..n-1 determined by (n, seed, epoch) alone, drawn on the CPU, moved to ``device``."""
    gen = torch.Generator(device="cpu").manual_seed(_mixed_seed(seed, epoch))
    return torch.randperm(n, generator=gen).to(device)


def batch_slices(perm: torch.Tensor, batch_size: int, drop_last: bool) -> list[torch.Tensor]:
    """Consecutive slices (views, along the first dimension) of ``perm`` of ``batch_size``; a short last
    one is dropped if asked."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = list(torch.split(perm, batch_size)) if perm.shape[0] else []   # an empty split has no batch
    if drop_last and chunks and chunks[-1].numel() < batch_size:
        chunks.pop()
    return chunks
