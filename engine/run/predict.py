"""Inference with a finished run: ``mmbal predict RUN data.parquet --out preds.parquet`` and ``mmbal eval``.

The run's model is built from its own configuration (``preset.toml`` with its recorded overrides,
as resume does, :func:`engine.run.parts.build_parts`), then given the **selected** checkpoint
(``checkpoints/best.pt``: the weights and the method state of the epoch selected on validation,
e.g. AUG's heads; ``last.pt`` when the run selected none), exactly as the run's own test
evaluation does (:meth:`engine.train.trainer.Trainer.finish`). Initial-weight files (``init``) are
not read again: the checkpoint replaces them.

The data file must hold the run's modality columns with the per-sample shapes it trained on (else
a data error naming the column); the label column is optional for ``predict`` (``eval`` needs it).
Its values are standardised with the run's train statistics. These are not stored in the run
directory: they are recomputed exactly as the run computed them, by loading the run's own dataset
(the same file, or the same generator settings) the same way (resident or streamed), so that
dataset must still be readable and unchanged, in its place or passed as the data to predict
(:func:`locate_run_data`). ``--split`` on the
run's own data without a split column selects the run's split, drawn again from its seed
(:func:`check_run_data`).

Predictions are made as the evaluation makes them (``Method.predict``, eval mode, the run's
``train.eval_batch_size`` and precision), so on the run's test split they reproduce its test
metrics; ``eval`` scores them with the trainer's own scorer, in the run's metric names
(``<split>/acc/fused``, ``<split>/f1/<m>``, ...; ``all/...`` when no split is chosen).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig, apply_overrides, parse_toml, resolve
from ..data import parquet as pq_format
from ..data.dataset import split_codes
from ..data.fingerprint import data_changes, parquet_identity
from ..errors import DataError, RunNotFound, StorageError, UsageError
from ..registry import did_you_mean
from ..store import RunPaths, read_json
from ..store.atomic import atomic_write_with
from ..store.checkpoints import CheckpointDamaged, load_checkpoint
from ..train.device import autocast_factory, channels_last_enabled, resolve_device
from ..train.metrics import SplitScorer, to_host
from .flat_inputs import imported_layout, read_flat, reads_flat
from .inputs import Inputs, check_carried, labels_in_range, split_inputs
from .parts import build_parts, load_run_data
from .resume_checks import FINGERPRINT_KEY

PREDICTIONS_KEY = "mmbal.predictions"   # schema metadata of a predictions file


@dataclass
class LoadedRun:
    """A finished run's configuration, model and method with the selected weights, and its train statistics."""

    run_dir: Path
    cfg: RunConfig
    info: dict
    model: torch.nn.Module
    method: object
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]]
    shapes: dict[str, tuple[int, ...]]
    classes: list[str]
    checkpoint: str
    epoch: int | None
    device: torch.device


@dataclass
class Predictions:
    inputs: Inputs
    probs: dict[str, torch.Tensor]   # "fused" and each modality: (N, C) float32 on the host
    logits: dict[str, torch.Tensor]  # the same, before softmax (for scoring)


# -- the run ----------------------------------------------------------------------------------------
def run_config(run_dir: Path, data_path: str | None = None, info: dict | None = None) -> tuple[RunConfig, dict]:
    """The run's configuration as it trained (preset + recorded overrides), and its ``run.json`` (``info``
    when already read); ``data_path``: where its data are now, when they have moved (:func:`locate_run_data`)."""
    paths = RunPaths(run_dir)
    info = read_json(paths.run_json) if info is None else info
    preset = str(paths.preset_toml)
    raw = parse_toml(paths.preset_toml.read_text(encoding="utf-8"), preset)
    raw = without_initial_weights(apply_overrides(raw, list(info.get("overrides", []))))
    if data_path is not None:
        raw = {**raw, "data": {**(raw.get("data") or {}), "path": data_path}}
    cfg = resolve(raw, preset, Path(info["base_dir"]), default_name=info["name"])
    return cfg, info


def without_initial_weights(raw: dict) -> dict:
    """The preset ``raw`` without the modalities' ``init`` files: the checkpoint gives every weight, so a
    file that has since moved or been removed (another run's ``best.pt``) does not stop a prediction."""
    tables = raw.get("modalities")
    if not isinstance(tables, dict):
        return raw
    kept = {m: ({k: v for k, v in t.items() if k != "init"} if isinstance(t, dict) else t) for m, t in tables.items()}
    return {**raw, "modalities": kept}


def selected_state(run_dir: Path, device: torch.device) -> tuple[dict, str]:
    """The selected checkpoint (``best.pt``, else ``last.pt``) and its file name."""
    paths = RunPaths(run_dir)
    for path in (paths.best, paths.last):
        try:
            return load_checkpoint(path, map_location=device), path.name
        except FileNotFoundError:
            continue
        except CheckpointDamaged as exc:
            raise RunNotFound(f"{run_dir}: cannot predict with checkpoint {exc}") from None
    raise RunNotFound(f"{run_dir} has no checkpoint (checkpoints/best.pt or last.pt) to predict with: it stopped "
                      f"before its first evaluation; resume it (`mmbal resume`) or train it again")


def load_run(run_dir: str | Path, device: str | None = None, data: str | Path | None = None) -> LoadedRun:
    """The run's model and method with the selected checkpoint on ``device`` (default: the run's
    ``train.device``), and its train statistics; ``data``: the file to predict, which stands in for
    the run's own data when those have moved and it holds the same content."""
    run_dir = Path(run_dir)
    info = read_json(RunPaths(run_dir).run_json)
    cfg, info = run_config(run_dir, locate_run_data(run_dir, info, data), info)
    dev = resolve_device(device or cfg.train.device)
    state, name = selected_state(run_dir, dev)
    mode = (info.get("data_mode") or {}).get("mode", "resident")
    source = str(RunPaths(run_dir).preset_toml)
    data = load_run_data(cfg, dev, source) if mode == "resident" else None
    data, model, method = build_parts(cfg, dev, data, source=source, data_mode=mode)
    if channels_last_enabled(cfg.train.channels_last, dev):
        model.to_channels_last()  # as the trainer evaluated it
    model.load_state_dict(state["model"])
    method.load_state_dict(state["method"])
    model.eval()
    return LoadedRun(run_dir=run_dir, cfg=cfg, info=info, model=model, method=method,
                     stats={m: (mean, std) for m, (mean, std) in data.stats.items()}, shapes=dict(data.shapes),
                     classes=list(info.get("classes") or data.classes), checkpoint=name,
                     epoch=state.get("epoch"), device=dev)


def locate_run_data(run_dir: Path, info: dict, candidate: str | Path | None = None) -> str | None:
    """Where the run's Parquet data are now: None for where it trained (unchanged; synthetic data and
    runs without a fingerprint are not checked), else ``candidate`` when the recorded file is gone or
    changed and ``candidate`` holds the recorded content. Otherwise a data error: the run's train
    statistics are recomputed from those data, and other data would standardise the rows otherwise."""
    recorded = info.get(FINGERPRINT_KEY) or {}
    if recorded.get("source") != "parquet":
        return None
    path = Path(recorded["path"])
    current = _identity(path)
    changes = None if current is None else data_changes(recorded, {"source": "parquet", "path": str(path), **current})
    if current is not None and not changes:
        return None
    found = _identity(Path(candidate)) if candidate is not None else None
    if found is not None and _content(found) == _content(recorded):
        return str(Path(candidate).resolve())
    why = ("the run's train statistics (each modality's mean and std, which standardise the rows it predicts) are "
           "recomputed from its data")
    if current is None:
        raise DataError(f"{run_dir}: {why}, {path}, which is gone; put it back there, or pass a copy of it as the "
                        f"data to predict (it is recognised by its content)")
    raise DataError(f"{run_dir}: {why}, {path}, which changed since the run trained on it ({'; '.join(changes)}); "
                    f"predictions would be standardised otherwise than in training. Put the run's data back at {path}")


def _identity(path: Path) -> dict | None:
    """The Parquet identity of ``path`` (:func:`parquet_identity`), None when it is gone or not Parquet."""
    try:
        return parquet_identity(path)
    except (DataError, OSError):
        return None


# -- the data ---------------------------------------------------------------------------------------
def read_inputs(run: LoadedRun, path: str | Path, split: str | None = None, need_labels: bool = False,
                carry: tuple[str, ...] = ()) -> Inputs:
    """The rows of ``path`` (only those of ``split`` when given), checked against the run and standardised;
    a flat table (a CSV file) as :mod:`engine.run.flat_inputs` reads it. ``carry``: columns copied as they
    are into the predictions (``predict --keep``)."""
    path = Path(path)
    layout = imported_layout(run)
    if reads_flat(run, path, layout):
        return read_flat(run, path, layout, split, need_labels, carry)
    cfg = run.cfg
    layout_files = pq_format.dataset_files(path)
    schemas = [pq_format.read_schema(f) for f in layout_files]
    pq_format._check_same_schemas(layout_files, schemas)
    schema, first = schemas[0], layout_files[0]
    meta = pq_format._parse_metadata(schema, first)
    mods = pq_format._requested_modalities(schema, meta, first, cfg.columns)
    for m, info in mods.items():
        if tuple(info.shape) != tuple(run.shapes[m]):
            raise DataError(f"{first}: column '{info.column}' (modality '{m}') has samples of shape {list(info.shape)}, "
                            f"but the run trained on shape {list(run.shapes[m])}")
    label = cfg.data.label_column
    has_labels = label in schema.names
    if need_labels and not has_labels:
        raise DataError(f"{first}: column '{label}' (the label) is missing; scoring needs the true classes"
                        f"{did_you_mean(label, schema.names)}")
    has_split = pq_format.SPLIT_COLUMN in schema.names and label != pq_format.SPLIT_COLUMN
    if split is not None and not has_split:
        check_run_data(run, path, split)
    check_carried(carry, schema.names, first)
    columns = list(dict.fromkeys(([label] if has_labels else []) + ([pq_format.SPLIT_COLUMN] if has_split else [])
                                 + [i.column for i in mods.values()] + list(carry)))
    table, counts = pq_format._read_table(layout_files, columns)
    if table.num_rows == 0:
        raise DataError(f"{path}: the data has no rows")
    rows = pq_format._Rows(layout_files, counts)
    labels = _labels(table, label, rows, meta, run) if has_labels else None
    codes = pq_format._split(table, rows) if has_split else None
    if split is not None and codes is None:  # the run's own data: its seeded stratified split, drawn again
        codes = split_codes(labels, None, str(path), cfg.data, cfg.seed)
    features = ((m, *pq_format.decode_features(table, info, rows)) for m, info in mods.items())
    return split_inputs(run, path, table, codes, split, labels, features, carry)


def check_run_data(run: LoadedRun, path: Path, split: str) -> None:
    """``--split`` on a file without a split column: allowed on the run's own data (the same content,
    wherever it is now), whose split the run drew itself, seeded and stratified, so it is drawn
    again; a data error otherwise."""
    asked = f"{path}: --split {split} asks for rows of one split, but the file has no '{pq_format.SPLIT_COLUMN}' column"
    recorded = run.info.get(FINGERPRINT_KEY) or {}
    trained = recorded.get("path") if recorded.get("source") == "parquet" else None
    current = {"source": "parquet", "path": trained, **parquet_identity(path)}
    if trained is not None and _content(current) == _content(recorded):
        return
    if trained is not None and os.path.realpath(trained) == os.path.realpath(path):
        raise DataError(f"{asked}, and it changed since the run drew its split from it "
                        f"({'; '.join(data_changes(recorded, current))}), so that split cannot be drawn again")
    where = f"read {trained}" if trained else "generated its data" if recorded else "recorded no data fingerprint"
    raise DataError(f"{asked}, and it is not the data the run trained on (the run {where}), so it has no split "
                    f"of the run's either; pass the run's data file, or a file with a split column")


def _content(fingerprint: dict) -> tuple:
    """What identifies a Parquet dataset's content: schema, rows, and each file's size and footer hash."""
    files = sorted((f.get("size"), f.get("footer_sha256")) for f in fingerprint.get("files") or [])
    return fingerprint.get("schema"), fingerprint.get("rows"), files


def _labels(table, label: str, rows, meta: dict, run: LoadedRun) -> np.ndarray:
    values, _ = pq_format._labels(table, label, rows, meta)
    return labels_in_range(values, label, len(run.classes), rows.where)


# -- predicting and scoring -------------------------------------------------------------------------
@torch.no_grad()
def predict(run: LoadedRun, inputs: Inputs) -> Predictions:
    """Fused and per-modality logits of every row, batch by batch as the run's evaluation does."""
    autocast = autocast_factory(run.cfg.train.precision, run.device)
    n = len(inputs.row)
    size = run.cfg.train.eval_batch_size
    outs: dict[str, list[torch.Tensor]] = {}
    for start in range(0, n, size):
        x = {m: t[start:start + size] for m, t in inputs.x.items()}
        with autocast():
            out = run.method.predict(run.model, x)
        for key, z in {"fused": out.fused, **out.logits}.items():
            outs.setdefault(key, []).append(z.float())
    logits = {k: torch.cat(v) for k, v in outs.items()}
    probs = {k: torch.softmax(z, dim=1).cpu() for k, z in logits.items()}
    return Predictions(inputs, probs, logits)


def score(run: LoadedRun, preds: Predictions, split: str | None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Accuracy, macro-F1 and loss, fused and per modality, in the run's metric names (one host transfer), and
    each target's (C, C) confusion matrix (a row per true class); a modality's over the rows where its value
    is present, as the run's evaluation scores them."""
    if preds.inputs.labels is None:
        raise UsageError("scoring needs the label column")
    scorer = SplitScorer(list(preds.logits), len(run.classes), run.device)
    y = torch.from_numpy(preds.inputs.labels).to(run.device)
    present = {m: torch.from_numpy(~a).to(run.device) for m, a in (preds.inputs.absent or {}).items()}
    size = run.cfg.train.eval_batch_size
    for start in range(0, y.numel(), size):
        scorer.add({k: z[start:start + size] for k, z in preds.logits.items()}, y[start:start + size],
                   {m: p[start:start + size] for m, p in present.items()})
    return to_host(scorer.tensors(split or "all")), {t: m.cpu().numpy() for t, m in scorer.conf.items()}


def per_class(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """``rows`` (true rows of each class), ``precision``, ``recall`` and ``f1`` per class from a confusion
    matrix (NaN where a class has no row, or no prediction, to divide by)."""
    tp = np.diagonal(confusion).astype(np.float64)
    rows, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision, recall = tp / predicted, tp / rows
        f1 = np.where(rows + predicted > 0, 2 * tp / (rows + predicted), np.nan)
    return {"rows": rows, "precision": precision, "recall": recall, "f1": f1}


PREDICTION_FORMATS = {".parquet": "parquet", ".pq": "parquet", "": "parquet", ".csv": "csv"}


def predictions_format(out: str | Path) -> str:
    """``parquet`` or ``csv`` from ``out``'s suffix (none: Parquet); any other suffix is a usage error,
    raised before anything is computed, so that ``--out preds.json`` does not get a Parquet file."""
    suffix = Path(out).suffix.lower()
    if suffix not in PREDICTION_FORMATS:
        raise UsageError(f"--out {out}: predictions are written as Parquet (.parquet, .pq) or CSV (.csv), chosen "
                         f"by the file's suffix; '{Path(out).suffix}' is neither. Name the file preds.parquet or "
                         f"preds.csv.")
    return PREDICTION_FORMATS[suffix]


def check_keep(names: tuple[str, ...], modalities) -> None:
    """``predict --keep`` names no column the predictions have themselves (a usage error, before predicting)."""
    own = {"row", "split", "label", "pred", "predicted_class", "prob"} | {f"{k}_{m}" for m in modalities
                                                                         for k in ("pred", "prob")}
    for name in names:
        if name in own or name.startswith(("prob[", "prob_")) and name.endswith("]"):
            raise UsageError(f"--keep {name}: the predictions have a column '{name}' of their own; keep the other "
                             f"columns, and read '{name}' from the predictions")


def write_predictions(run: LoadedRun, preds: Predictions, out: str | Path) -> Path:
    """``out`` as Parquet or, for a ``.csv`` name, CSV (:func:`predictions_format`): ``row``, the columns
    kept from the data (``--keep``), ``split`` and ``label`` when the data have them, ``pred`` (fused class index), ``predicted_class`` (its class's name),
    ``prob`` (fused probabilities), ``pred_<m>`` and ``prob_<m>`` per modality, null on the rows where
    that modality's value is absent (no ``pred_<m>`` pattern can make ``predicted_class``). In Parquet each ``prob`` column is a list of C floats and the schema
    metadata ``mmbal.predictions`` names the run, checkpoint and classes (not ``mmbal``, the key of a
    dataset: a predictions file is not read as data). CSV has no lists nor metadata, so there each
    probability is its own column named by its class, ``prob[<class>]`` and ``prob_<m>[<class>]``, in
    class-index order. Written atomically."""
    import pyarrow as pa

    fmt = predictions_format(out)
    inputs, c = preds.inputs, len(run.classes)
    columns = {"row": pa.array(inputs.row, pa.int64())}
    kept = inputs.carried or {}
    if inputs.split is not None:
        columns["split"] = pa.array(list(inputs.split), pa.string())
    if inputs.labels is not None:
        columns["label"] = pa.array(inputs.labels, pa.int64())
    for key, probs in preds.probs.items():
        suffix = "" if key == "fused" else f"_{key}"
        values = probs.numpy().astype(np.float32)
        pred = values.argmax(axis=1).astype(np.int64)
        absent = (inputs.absent or {}).get(key)     # a modality's own prediction is null where it is absent
        columns[f"pred{suffix}"] = pa.array(pred, pa.int64(), mask=absent)
        if key == "fused":
            columns["predicted_class"] = pa.array(np.asarray(run.classes, dtype=object)[pred], pa.string())
        if fmt == "csv":
            columns.update({f"prob{suffix}[{name}]": pa.array(values[:, i], mask=absent)
                            for i, name in enumerate(run.classes)})
        else:
            flat = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), c)
            columns[f"prob{suffix}"] = flat if absent is None else pa.FixedSizeListArray.from_arrays(
                flat.values, c, mask=pa.array(absent))
    check_keep(tuple(kept), preds.probs)
    for name, values in kept.items():
        if fmt == "csv" and pa.types.is_nested(values.type):
            raise UsageError(f"--keep {name}: the column holds {values.type}, which a CSV cell cannot hold; write the "
                             f"predictions as Parquet (--out preds.parquet) to keep it")
    columns = {"row": columns.pop("row"), **kept, **columns}
    table = pa.table(columns)
    out = Path(out)
    try:
        if fmt == "csv":
            import pyarrow.csv as pacsv
            atomic_write_with(out, lambda f: pacsv.write_csv(table, f))
        else:
            import pyarrow.parquet as pq
            meta = {"run_id": run.info.get("run_id"), "run": str(run.run_dir), "checkpoint": run.checkpoint,
                    "epoch": run.epoch, "classes": run.classes, "modalities": run.cfg.modalities,
                    "data": inputs.source}
            table = table.replace_schema_metadata({PREDICTIONS_KEY: json.dumps(meta)})
            atomic_write_with(out, lambda f: pq.write_table(table, f))
    except OSError as exc:
        raise StorageError(f"cannot write the predictions to {out}: {exc.strerror or exc}; nothing was written "
                           f"there (the run is untouched)") from None
    return out


__all__ = ["Inputs", "LoadedRun", "Predictions", "check_keep", "per_class", "load_run", "predict", "predictions_format",
           "read_inputs", "score",
           "write_predictions"]
