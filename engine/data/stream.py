"""Streaming a Parquet dataset that does not fit in memory: row groups read from disk while training.

:class:`StreamData` is the same batch source as :class:`~engine.data.dataset.TensorData`
(``split_size``, ``class_counts``, ``train_epoch``, ``eval_batches``), built without holding the
features:

* **Pre-pass.** Only the label (and split) columns of every file are read: they give the split
  (the same stratified split as the resident path, so the same seed puts the same rows in each
  split) and the class counts. A second pass decodes every row group once to fit the
  standardiser on the train rows (float64, merged per row group with Chan et al.'s pairwise
  update; equal to :func:`~engine.data.dataset.fit_standardizer` within float rounding); it also
  checks every value, so bad data usually stops the run before training. With
  ``data.standardize = "none"`` this pass is skipped and a bad row group is found by the reader.
* **Units.** A row group is the unit of reading and of the coarse shuffle; a row group larger than
  :data:`SLICE_BYTES` (a file written with one huge group, such as pyarrow's default of 1,048,576
  rows) is read as consecutive slices of :func:`slice_rows` rows, each a unit, so that what the
  reader holds stays bounded whatever the file's row groups. The slices of one group are read in one
  pass over it (``iter_batches`` on a buffered stream, which holds a page per column, not the
  group), which is why they stay together, in order, in the epoch order. The slicing depends on the
  data alone (not on the budget), so a resumed run sees the same units.
* **Epoch order**, a function of (seed, epoch) over row ids alone: a seeded permutation of the
  row groups (a sliced group's units in order), cut into windows of ``data.shuffle_window`` units; the train rows of
  each window are permuted together (seeded by seed, epoch, window). Batches are consecutive
  ``batch_size`` slices of that order, across window boundaries; a short last batch is dropped
  when ``drop_last``. ``iterate(start)`` finds the window holding batch ``start`` and decodes from
  there, so resuming mid-epoch is exact without reading the windows before it. Each
  :class:`~engine.data.batch.Batch` carries its rows' train-split ids (a row's rank among the train
  rows in dataset order, as the resident path's index into ``splits["train"]``).
* **Reader.** A background thread decodes the next windows (``data.prefetch`` of them queued)
  into host tensors, standardised, in batch order (pinned memory when the device is CUDA); the
  training thread copies each window to the device with ``non_blocking=True`` and slices batches
  from it (views; on the CPU there is no copy at all). A :class:`~engine.errors.DataError` raised
  in the thread (naming file, row group and column) is raised again in the training thread; an
  abandoned iterator (interruption, exception) stops the thread.

Deviations from the resident path: the order is a window-local shuffle, not a full permutation,
so the same seed gives a different (equally seeded and reproducible) batch order in the two
modes; the mode a run started with is kept on resume. An epoch plan
(:class:`~engine.data.plan.EpochPlan`: rows in any order, with repeats) and a subset view would
need random access to row groups, which streaming exists to avoid: both are refused with a
:class:`~engine.errors.DataError` that says to keep the data resident.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..errors import DataError
from .batch import Batch
from .config import DataConfig
from .memory import Placement, format_bytes, row_bytes
from .parquet import (DatasetLayout, GroupRows, decode_features, file_row_counts, read_index_columns,
                      read_row_group_features)
from .plan import EpochPlan, resident_only
from .split import SPLIT_NAMES

__all__ = ["StreamData", "StreamBatches", "open_stream", "stream_working_set"]

STD_FLOOR = 1e-6
_POLL_S = 0.1
SLICE_BYTES = 8 * 2 ** 20      # a row group holding more (as resident rows) is read in slices
READ_BUFFER = 2 ** 20          # the buffered stream a sliced read goes through (pages, not the whole group)
UNIT_COPIES = 8                # copies of the largest unit held at once (see stream_working_set)


@dataclass(frozen=True)
class Unit:
    """One row group of one file, or one slice of a large one: the unit of reading and of the coarse shuffle."""

    file: int
    group: int
    first_row: int   # its first row within the file
    start: int       # its first row in the whole dataset
    rows: int
    offset: int = 0       # its first row within the row group
    slice_rows: int = 0   # the group's slice length (0: the whole group is this unit)


def slice_rows(layout: DatasetLayout) -> int:
    """Rows of one slice: as many as :data:`SLICE_BYTES` holds (at least one)."""
    return max(1, SLICE_BYTES // row_bytes([info.shape for info in layout.modalities.values()]))


def _units(layout: DatasetLayout) -> list[Unit]:
    """The units of every file in order: its row groups, those above :func:`slice_rows` rows in slices."""
    units, start, size = [], 0, slice_rows(layout)
    for f, groups in enumerate(file_row_counts(layout.files)):
        first = 0
        for g, n in enumerate(groups):
            if n > size:
                units += [Unit(f, g, first + k, start + k, min(size, n - k), k, size) for k in range(0, n, size)]
            elif n:
                units.append(Unit(f, g, first, start, n))
            first += n
            start += n
    return units


def _group_units(units: list[Unit]) -> list[np.ndarray]:
    """The indices of each row group's units, groups in dataset order."""
    keys = [(u.file, u.group) for u in units]
    firsts = [i for i in range(len(units)) if i == 0 or keys[i] != keys[i - 1]]
    return [np.arange(a, b) for a, b in zip(firsts, firsts[1:] + [len(units)])]


class UnitReader:
    """Decodes units one after another: a whole row group at once, or the slices of a large one by
    continuing one pass over it (reopened, and the slices before skipped, when asked out of order)."""

    def __init__(self, layout: DatasetLayout):
        self.layout = layout
        self._file = None
        self._batches = None
        self._at: tuple[int, int, int] | None = None   # (file, group, offset) of the next slice of the pass

    def read(self, u: Unit) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``(values, present)`` of every modality of unit ``u``, checked."""
        if not u.slice_rows:
            return read_row_group_features(self.layout, u.file, u.group, u.first_row)
        path = self.layout.files[u.file]
        try:
            if self._at != (u.file, u.group, u.offset):
                self._start_pass(u)
            batch = next(self._batches)
        except (pa.ArrowException, OSError, StopIteration) as exc:
            self.close()
            raise DataError(f"{path}: row group {u.group}, rows {u.offset} to {u.offset + u.rows - 1} of it cannot "
                            f"be read ({str(exc) or 'the row group ended early'})") from None
        self._at = (u.file, u.group, u.offset + u.rows)
        table = pa.Table.from_batches([batch])
        rows = GroupRows(path, u.group, u.first_row)
        return {name: decode_features(table, info, rows) for name, info in self.layout.modalities.items()}

    def _start_pass(self, u: Unit) -> None:
        self.close()
        self._file = pq.ParquetFile(self.layout.files[u.file], buffer_size=READ_BUFFER, pre_buffer=False)
        self._batches = self._file.iter_batches(batch_size=u.slice_rows, row_groups=[u.group],
                                                columns=self.layout.feature_columns, use_threads=False)
        for _ in range(u.offset // u.slice_rows):
            next(self._batches)

    def close(self) -> None:
        """Close the file of the current pass, if any."""
        if self._file is not None:
            self._file.close()
        self._file = self._batches = self._at = None


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, *keys]))


# ----------------------------------------------------------------------------------------------
# plans: which rows, in which order, window by window (row ids only, no feature data)


@dataclass
class Plan:
    """The rows of one pass (an epoch or a split), as windows of units with their row counts.

    ``rows(w)`` returns, for window ``w``, the rows in output order as (position in the window's
    decoded units, global row id, index in the pass's split). ``presence``: the batches report absent
    values in ``Batch.masks`` (an evaluation pass; a training pass drops nothing, as resident data's).
    """

    units: list[list[Unit]]
    counts: np.ndarray
    rows: object
    presence: bool = False

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def locate(self, position: int) -> tuple[int, int]:
        """(window, offset in it) of the ``position``-th row of the pass."""
        starts = self.starts
        w = int(np.searchsorted(starts, position, side="right") - 1)
        return w, int(position - starts[w])


def _window_rows(units: list[Unit], firsts: np.ndarray, codes: np.ndarray,
                 code: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions in the window's decoded units, global ids and split indices of its rows of split
    ``code``, in row order; ``firsts[i]``: the split's rows before unit ``units[i]`` in dataset order."""
    local, glob, split, offset = [], [], [], 0
    for u, first in zip(units, firsts):
        r = np.flatnonzero(codes[u.start:u.start + u.rows] == code)
        local.append(r + offset)
        glob.append(r + u.start)
        split.append(np.arange(first, first + r.size, dtype=np.int64))
        offset += u.rows
    return np.concatenate(local), np.concatenate(glob), np.concatenate(split)


# ----------------------------------------------------------------------------------------------
# the background reader


@dataclass
class _Failure:
    exc: BaseException


_LIVE: "weakref.WeakSet[Prefetcher]" = weakref.WeakSet()


@atexit.register
def _stop_live_readers() -> None:
    """Stop reader threads still running at exit (an iterator never finished nor closed): a daemon
    thread inside a torch or Arrow call while the interpreter shuts down aborts the process."""
    for reader in list(_LIVE):
        reader.close()


class Prefetcher:
    """Runs ``produce(put)`` in a daemon thread; iterating yields what it puts, ``depth`` ahead at most.

    An exception in the thread is raised again by the iterator; :meth:`close` (also called when
    the iterator is abandoned, and at exit) stops the thread at its next item and waits for it.
    """

    _END = object()

    def __init__(self, produce, depth: int, name: str = "mmbal-stream"):
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(produce,), name=name, daemon=True)
        _LIVE.add(self)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, produce) -> None:
        try:
            produce(self._put)
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
            self._put(_Failure(exc))
            return
        self._put(self._END)

    def __iter__(self):
        try:
            while True:
                try:
                    item = self.queue.get(timeout=_POLL_S)
                except queue.Empty:
                    if not self.thread.is_alive() and self.queue.empty():
                        raise RuntimeError("the stream reader thread stopped without a result") from None
                    continue
                if item is self._END:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self.stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=30)


# ----------------------------------------------------------------------------------------------
# standardisation statistics, streamed


class _Moments:
    """Count, mean and sum of squared deviations in float64, merged chunk by chunk (Chan et al., 1979)."""

    def __init__(self, per_feature: bool):
        self.per_feature = per_feature
        self.n = 0
        self.mean = None
        self.m2 = None

    def add(self, values: np.ndarray) -> None:
        x = values.astype(np.float64)
        if not self.per_feature:
            x = x.reshape(-1)
        n_b = x.shape[0]
        if n_b == 0:
            return
        mean_b = x.mean(axis=0)
        m2_b = np.square(x - mean_b).sum(axis=0)
        if self.n == 0:
            self.n, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + np.square(delta) * (self.n * n_b / n)
        self.n = n

    def result(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        ones = (1,) * len(shape)
        if self.n == 0:
            return np.zeros(ones, np.float32), np.ones(ones, np.float32)
        std = np.sqrt(self.m2 / self.n)
        mean = self.mean if self.per_feature else np.full(ones, self.mean)
        std = std if self.per_feature else np.full(ones, std)
        std = np.where(std < STD_FLOOR, 1.0, std)
        return mean.astype(np.float32), std.astype(np.float32)


def _standardize_mode(cfg_mode: str, shape: tuple[int, ...]) -> str:
    if cfg_mode == "auto":
        return "feature" if len(shape) == 1 else "modality"
    return cfg_mode


def streamed_stats(layout: DatasetLayout, units: list[Unit], codes: np.ndarray, standardize: str,
                   depth: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(mean, std) float32 per modality over the present train rows, one row group at a time."""
    mods = layout.modalities
    modes = {m: _standardize_mode(standardize, info.shape) for m, info in mods.items()}
    moments = {m: _Moments(modes[m] == "feature") for m in mods if modes[m] != "none"}
    if moments:
        def produce(put):
            reader = UnitReader(layout)
            try:
                for u in units:
                    if not put((u, reader.read(u))):
                        return
            finally:
                reader.close()
        for u, decoded in Prefetcher(produce, depth, name="mmbal-stats"):
            train = codes[u.start:u.start + u.rows] == 0
            for m, acc in moments.items():
                values, present = decoded[m]
                acc.add(values[train & present])
    ones = {m: (1,) * len(info.shape) for m, info in mods.items()}
    return {m: moments[m].result(mods[m].shape) if m in moments
            else (np.zeros(ones[m], np.float32), np.ones(ones[m], np.float32)) for m in mods}


# ----------------------------------------------------------------------------------------------
# the batch source


class StreamData:
    """A Parquet dataset read row group by row group; the batch source interface of ``TensorData``."""

    def __init__(self, layout: DatasetLayout, units: list[Unit], labels: np.ndarray, codes: np.ndarray,
                 classes: list[str], stats: dict[str, tuple[np.ndarray, np.ndarray]], device: torch.device,
                 window: int, prefetch: int, placement: Placement | None = None):
        self.layout = layout
        self.units = units
        self.labels = labels
        self.codes = codes
        self.classes = list(classes)
        self.modalities = dict(layout.modalities)
        self.name = layout.name
        self.source = str(layout.path)
        self._device = torch.device(device)
        self.window = window
        self.prefetch = prefetch
        self.placement = placement
        self.pin = self._device.type == "cuda"
        self.set_stats(stats)
        self._groups = _group_units(units)
        starts = np.array([u.start for u in units], np.int64)
        self._unit_counts = np.stack([np.add.reduceat((codes == c).astype(np.int64), starts) if len(units)
                                      else np.zeros(0, np.int64) for c in range(len(SPLIT_NAMES))])
        # rows of each split before each unit: a row's index in its split is this plus its rank in the unit
        self._unit_firsts = np.cumsum(self._unit_counts, axis=1) - self._unit_counts

    def set_stats(self, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """The standardiser: (mean, std) per modality, applied by the reader; ``{}`` = not standardised."""
        ones = {m: (1,) * len(info.shape) for m, info in self.modalities.items()}
        stats = {m: stats.get(m, (np.zeros(ones[m], np.float32), np.ones(ones[m], np.float32)))
                 for m in self.modalities}
        self._host_stats = stats
        self.stats = {m: (torch.from_numpy(mean).to(self._device), torch.from_numpy(std).to(self._device))
                      for m, (mean, std) in stats.items()}

    # -- what the rest of the code reads ---------------------------------------------------------
    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {m: tuple(info.shape) for m, info in self.modalities.items()}

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def modality_names(self) -> list[str]:
        return list(self.modalities)

    # -- the batch-source interface --------------------------------------------------------------
    def split_size(self, split: str) -> int:
        """Number of rows of ``split`` ("train", "val" or "test")."""
        return int(self._unit_counts[SPLIT_NAMES.index(split)].sum())

    def class_counts(self, split: str) -> torch.Tensor:
        """Rows of each class in ``split`` (int64, on the data's device)."""
        y = self.labels[self.codes == SPLIT_NAMES.index(split)]
        return torch.from_numpy(np.bincount(y, minlength=self.n_classes).astype(np.int64)).to(self._device)

    def train_epoch(self, seed: int, epoch: int, batch_size: int, drop_last: bool,
                    plan: EpochPlan | None = None) -> "StreamBatches":
        """The training batches of ``epoch`` in the order fixed by (seed, epoch); see the module docstring.
        An epoch ``plan`` is refused (:class:`~engine.errors.DataError`): plans need resident data."""
        if plan is not None:
            raise resident_only(self.source, "an epoch plan (a method that resamples the training rows)")
        return StreamBatches(self, self.epoch_plan(seed, epoch), batch_size, drop_last)

    def eval_batches(self, split: str, batch_size: int):
        """``(x, y)`` batches of ``split`` in row order (no shuffling), streamed."""
        for batch in StreamBatches(self, self.split_plan(split), batch_size, False).iterate(0):
            yield batch.x, batch.y

    def eval_rows(self, split: str, batch_size: int):
        """``(x, y, present)`` batches of ``split``, as :meth:`~engine.data.dataset.TensorData.eval_rows`
        gives them (``present`` names every modality in a batch with an absent value, else is empty)."""
        plan = replace(self.split_plan(split), presence=True)
        for batch in StreamBatches(self, plan, batch_size, False).iterate(0):
            yield batch.x, batch.y, batch.masks or {}

    def subset(self, train, val=None):
        """Refused (:class:`~engine.errors.DataError`): a view of some train rows needs resident data."""
        raise resident_only(self.source, "training on part of the train split (a nested training run)")

    # -- plans ----------------------------------------------------------------------------------
    def epoch_plan(self, seed: int, epoch: int) -> Plan:
        """Train rows of ``epoch``: permuted row groups (a sliced group's units in order), cut into windows of
        units, rows permuted within each window."""
        groups = _rng(seed, epoch, 0).permutation(len(self._groups))
        order = np.concatenate([self._groups[g] for g in groups]) if len(groups) else np.zeros(0, np.int64)
        windows = [order[i:i + self.window] for i in range(0, len(order), self.window)]
        counts = np.array([self._unit_counts[0][w].sum() for w in windows], np.int64)
        groups = [[self.units[i] for i in w] for w in windows]

        def rows(w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            local, glob, ids = _window_rows(groups[w], self._unit_firsts[0][windows[w]], self.codes, 0)
            perm = _rng(seed, epoch, w + 1).permutation(local.size)
            return local[perm], glob[perm], ids[perm]
        return Plan(groups, counts, rows)

    def split_plan(self, split: str) -> Plan:
        """Rows of ``split`` in row order, windows of consecutive units."""
        code = SPLIT_NAMES.index(split)
        keep = np.flatnonzero(self._unit_counts[code] > 0)
        windows = [keep[i:i + self.window] for i in range(0, len(keep), self.window)]
        counts = np.array([self._unit_counts[code][w].sum() for w in windows], np.int64)
        groups = [[self.units[i] for i in w] for w in windows]
        return Plan(groups, counts,
                    lambda w: _window_rows(groups[w], self._unit_firsts[code][windows[w]], self.codes, code))

    # -- reading --------------------------------------------------------------------------------
    def read_window(self, plan: Plan, w: int, skip: int, reader: UnitReader | None = None) -> Batch:
        """Host tensors of window ``w``'s rows from the ``skip``-th on, standardised, in plan order
        (``reader``: the pass's, which continues a sliced row group from the previous window)."""
        if reader is None:
            reader = UnitReader(self.layout)
            try:
                return self.read_window(plan, w, skip, reader)
            finally:
                reader.close()
        local, glob, split = plan.rows(w)
        local, glob, split = local[skip:], glob[skip:], split[skip:]
        units = plan.units[w]
        offsets = np.concatenate([[0], np.cumsum([u.rows for u in units])])
        # rows of unit i land at the positions of the output whose local index falls in its range
        which = np.searchsorted(offsets, local, side="right") - 1
        x = {m: torch.empty((local.size, *info.shape), dtype=torch.float32, pin_memory=self.pin)
             for m, info in self.modalities.items()}
        out = {m: t.numpy() for m, t in x.items()}  # numpy views: single-threaded work that releases the GIL,
        kept = {m: np.ones(local.size, bool) for m in x} if plan.presence else None
        for i, u in enumerate(units):                # leaving torch's intra-op threads to the training step
            dest = np.flatnonzero(which == i)
            if dest.size == 0:
                continue
            decoded = reader.read(u)
            src = local[dest] - offsets[i]
            for m, (values, present) in decoded.items():
                mean, std = self._host_stats[m]
                block = np.take(values, src, axis=0)
                np.subtract(block, mean, out=block)        # the resident path's (values - mean) / std, bitwise
                np.divide(block, std, out=block)
                block[~present[src]] = 0.0
                out[m][dest] = block
                if kept is not None:
                    kept[m][dest] = present[src]
        y, ids = torch.from_numpy(self.labels[glob]), torch.from_numpy(split)
        if self.pin:
            y, ids = y.pin_memory(), ids.pin_memory()
        absent = kept is not None and not all(k.all() for k in kept.values())
        return Batch(x, y, ids, {m: torch.from_numpy(k) for m, k in kept.items()} if absent else None)

    def working_set_bytes(self) -> int:
        """Host memory the reader may hold at once (see :func:`stream_working_set`)."""
        return stream_working_set(self.layout, self.units, self._unit_counts, self.window, self.prefetch)


def stream_working_set(layout: DatasetLayout, units: list[Unit], unit_counts: np.ndarray, window: int,
                       prefetch: int) -> int:
    """Bytes the reader holds at most: ``prefetch + 2`` windows (queued, being built, being trained on) of
    the largest possible window (the ``window`` units with most rows of one split), :data:`UNIT_COPIES`
    copies of the largest unit and the labels and split codes of every row. The unit copies, measured
    with the process's peak RSS (``tests/test_memory_budget.py``): Arrow's pages and decoded table,
    what Arrow's allocator keeps of freed ones, the decoded and the standardised arrays, the gathered
    block, and the units the statistics pass queues."""
    per_row = row_bytes([info.shape for info in layout.modalities.values()])
    biggest_window = max(int(np.sort(c)[::-1][:window].sum()) for c in unit_counts) if len(units) else 0
    biggest_group = max((u.rows for u in units), default=0)
    n_rows = sum(u.rows for u in units)
    return ((prefetch + 2) * biggest_window + UNIT_COPIES * biggest_group) * per_row + n_rows * 9


class StreamBatches:
    """One pass of streamed batches: ``len()`` batches, iterated from any batch on."""

    def __init__(self, data: StreamData, plan: Plan, batch_size: int, drop_last: bool):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.plan, self.batch_size, self.drop_last = data, plan, batch_size, drop_last
        total = int(plan.counts.sum())
        self.n_batches = total // batch_size if drop_last else -(-total // batch_size)

    def __len__(self) -> int:
        return self.n_batches

    def iterate(self, start: int = 0):
        """The :class:`~engine.data.batch.Batch` (on the data's device) of batches ``start, start + 1, ...``."""
        if start >= self.n_batches:
            return
        data, bs = self.data, self.batch_size
        w0, skip = self.plan.locate(start * bs)

        def produce(put):
            units = UnitReader(data.layout)
            try:
                for w in range(w0, len(self.plan.units)):
                    if self.plan.counts[w] == 0:
                        continue
                    if not put(data.read_window(self.plan, w, skip if w == w0 else 0, units)):
                        return
            finally:
                units.close()

        reader = Prefetcher(produce, data.prefetch)
        try:
            yield from self._slices(reader, start)
        finally:
            reader.close()

    def _slices(self, windows, emitted: int):
        """Batches of exactly ``batch_size`` rows cut from consecutive windows; the rows left at the end
        of a window start the next batch (only that batch is concatenated)."""
        device, bs, carry = self.data.device, self.batch_size, None
        for window in windows:
            window = _map(window, lambda t: t.to(device, non_blocking=True))
            n, i = window.y.shape[0], 0
            if carry is not None:
                i = min(bs - carry.y.shape[0], n)
                joined = _join(carry, _map(window, lambda t: t[:i]))
                if joined.y.shape[0] < bs:
                    carry = joined
                    continue
                carry = None
                yield joined
                emitted += 1
            while n - i >= bs and emitted < self.n_batches:
                yield _map(window, lambda t: t[i:i + bs])
                i += bs
                emitted += 1
            if emitted >= self.n_batches:
                return
            # the rows left over are copied (fewer than a batch) so that the window's memory is freed
            carry = _map(window, lambda t: t[i:].clone()) if i < n else None
        if carry is not None and emitted < self.n_batches:
            yield carry


def _map(batch: Batch, f) -> Batch:
    """``f`` applied to every tensor of a streamed batch (its masks, absent values of an evaluation pass, too)."""
    masks = None if batch.masks is None else {m: f(k) for m, k in batch.masks.items()}
    return Batch({m: f(t) for m, t in batch.x.items()}, f(batch.y), f(batch.ids), masks)


def _join(a: Batch, b: Batch) -> Batch:
    masks = None
    if a.masks is not None or b.masks is not None:
        def kept(batch: Batch, m: str) -> torch.Tensor:
            return batch.masks[m] if batch.masks is not None else torch.ones_like(batch.y, dtype=torch.bool)
        masks = {m: torch.cat([kept(a, m), kept(b, m)]) for m in a.x}
    return Batch({m: torch.cat([t, b.x[m]]) for m, t in a.x.items()}, torch.cat([a.y, b.y]),
                 torch.cat([a.ids, b.ids]), masks)


def open_stream(layout: DatasetLayout, cfg: DataConfig, seed: int, device: torch.device | str,
                placement: Placement | None = None, split_codes=None) -> StreamData:
    """Pre-pass (labels, split, standardiser) and the :class:`StreamData` of ``layout``.

    ``split_codes(labels, split, source)`` makes the split (the resident path's function).
    Refuses, before the feature pass, a reader working set above the memory budget.
    """
    units = _units(layout)
    labels, classes, split = read_index_columns(layout)
    codes = split_codes(labels, split, str(layout.path))
    data = StreamData(layout, units, labels, codes, classes, {}, torch.device(device), cfg.shuffle_window,
                      cfg.prefetch, placement)
    need = data.working_set_bytes()
    if placement is not None and need > placement.budget_bytes:
        raise DataError(f"{layout.path}: streaming it holds up to {format_bytes(need)} at once "
                        f"((data.prefetch + 2) x data.shuffle_window row groups, or slices of larger ones, of up "
                        f"to {max(u.rows for u in units)} rows, plus the labels), more than the memory budget of "
                        f"{format_bytes(placement.budget_bytes)}; lower data.shuffle_window ({cfg.shuffle_window}) "
                        f"or data.prefetch ({cfg.prefetch}), write smaller row groups, or give a larger "
                        f"data.memory_budget")
    data.set_stats(streamed_stats(layout, units, codes, cfg.standardize, cfg.prefetch))
    return data
