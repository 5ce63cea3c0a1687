"""Seeded stratified train/val/test split, for data that carries no ``split`` column."""

from __future__ import annotations

import numpy as np

TRAIN, VAL, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "val", "test")


def _per_class_counts(counts: np.ndarray, fraction: float) -> np.ndarray:
    return np.rint(counts * fraction).astype(np.int64)


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """int8 split codes (0 train, 1 val, 2 test), stratified by class.

    Each class c with n_c rows gets round(n_c * test_fraction) test rows and round(n_c *
    val_fraction) val rows (exact per-class counts, so the proportions hold in every class);
    a class with at least 3 rows gets at least one row in each split. Which rows go where is a
    seeded random permutation (numpy ``default_rng(seed)``), so the same labels and seed always
    give the same split. Vectorised: one permutation, one stable sort by label, ranks within class.
    """
    labels = np.asarray(labels).astype(np.int64)
    n = labels.shape[0]
    codes = np.zeros(n, dtype=np.int8)
    if n == 0:
        return codes
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n_test = _per_class_counts(counts, test_fraction)
    n_val = _per_class_counts(counts, val_fraction)
    enough = counts >= 3
    n_test = np.where(enough, np.clip(n_test, 1, counts - 2), np.minimum(n_test, counts))
    n_val = np.where(enough, np.clip(n_val, 1, counts - 1 - n_test), np.minimum(n_val, counts - n_test))
    order = np.random.default_rng(seed).permutation(n)
    order = order[np.argsort(inverse[order], kind="stable")]   # rows grouped by class, random within
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cls = inverse[order]
    rank = np.arange(n) - starts[cls]
    codes[order] = np.where(rank < n_test[cls], TEST, np.where(rank < n_test[cls] + n_val[cls], VAL, TRAIN))
    return codes


def resplit_train_val(labels: np.ndarray, codes: np.ndarray, seed: int) -> np.ndarray:
    """``codes`` with the train/val division of the non-test rows re-drawn (``default_rng(seed)``).

    Each class keeps its number of val rows; which of its non-test rows they are is a seeded random
    choice. Test rows are untouched, so repeated splits never move a row into or out of the test split.
    """
    labels = np.asarray(labels).astype(np.int64)
    codes = np.asarray(codes, dtype=np.int8).copy()
    rows = np.flatnonzero(codes != TEST)
    if rows.size == 0:
        return codes
    order = rows[np.random.default_rng(seed).permutation(rows.size)]
    order = order[np.argsort(labels[order], kind="stable")]          # grouped by class, random within
    classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    n_val = np.array([np.count_nonzero(codes[order[s:s + c]] == VAL) for s, c in zip(starts, counts)])
    cls = np.searchsorted(classes, labels[order])
    rank = np.arange(order.size) - starts[cls]
    codes[order] = np.where(rank < n_val[cls], VAL, TRAIN)
    return codes
