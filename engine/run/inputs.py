"""The rows a finished run predicts (:mod:`engine.run.predict`, :mod:`engine.run.flat_inputs`): features
standardised with the run's train statistics, on its device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from ..errors import DataError
from ..registry import did_you_mean

SPLITS = ("train", "val", "test")


@dataclass
class Inputs:
    """Rows of a data file to predict: features standardised with the run's statistics, on the device."""

    source: str
    row: np.ndarray                  # the row's index in the file (or the directory's files in name order)
    split: np.ndarray | None         # split names, when the file has a split column
    labels: np.ndarray | None        # int64, when the file has the label column
    x: dict[str, torch.Tensor]
    absent: dict[str, np.ndarray] | None = None   # modality -> bool (N,), True where its value is absent
                                                  # (only the modalities with such a row)
    carried: dict | None = None      # column name -> pyarrow array of the kept rows (``predict --keep``)


def standardised(values: np.ndarray, present: np.ndarray, stats, device: torch.device) -> torch.Tensor:
    """As the run standardised its data (:func:`engine.data.dataset.to_tensors`): (x - mean) / std, absent rows 0."""
    mean, std = (s.detach().cpu().numpy() for s in stats)
    scaled = (values - mean) / std
    scaled[~present] = 0.0
    return torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32)).to(device)


def check_carried(names: tuple[str, ...], available: list[str], file) -> None:
    """Every column ``predict --keep`` names is in the data (else a data error naming it, with a did-you-mean)."""
    for name in names:
        if name not in available:
            raise DataError(f"{file}: has no column '{name}' to keep (--keep){did_you_mean(name, available)}")


def carried(table, names: tuple[str, ...], keep: np.ndarray) -> dict:
    """The columns ``names`` of ``table`` at the rows ``keep``, as they are (ids, file names, ...)."""
    rows = pa.array(keep.astype(np.int64))
    return {name: table.column(name).combine_chunks().take(rows) for name in names}


def split_inputs(run, path, table, codes: np.ndarray | None, split: str | None, labels: np.ndarray | None,
                 features, carry: tuple[str, ...]) -> Inputs:
    """The :class:`Inputs` of the rows of ``split`` (every row when None) of ``table``, read from ``path``:
    ``codes`` the rows' split codes (or None), ``labels`` their class indices (or None), ``features``
    ``(modality, values, present)`` of every row, standardised here with the run's statistics."""
    keep = np.arange(table.num_rows) if split is None else np.flatnonzero(codes == SPLITS.index(split))
    if keep.size == 0:
        raise DataError(f"{path}: no row has split '{split}'")
    x, absent = {}, {}
    for m, values, present in features:
        x[m] = standardised(values[keep], present[keep], run.stats[m], run.device)
        if not present[keep].all():
            absent[m] = ~present[keep]
    names = None if codes is None else np.asarray(SPLITS, dtype=object)[codes[keep]]
    return Inputs(source=str(path), row=keep.astype(np.int64), split=names,
                  labels=None if labels is None else labels[keep], x=x, absent=absent,
                  carried=carried(table, carry, keep))


def labels_in_range(values: np.ndarray, column: str, n_classes: int, locate) -> np.ndarray:
    """``values`` when every one is a class index of the run (0 .. n_classes - 1), else a data error naming the
    first that is not; ``locate(row)`` gives its ``(file, row in that file)``."""
    bad = np.flatnonzero((values < 0) | (values >= n_classes))
    if bad.size:
        file, local = locate(int(bad[0]))
        raise DataError(f"{file}: column '{column}', row {local} (counting from 0): label {int(values[bad[0]])} is "
                        f"outside the run's {n_classes} classes 0..{n_classes - 1}")
    return values
