"""A finished (or running) run's model rebuilt outside training, for :meth:`engine.analysis.api.Run.load_model`.

The configuration is resolved as ``mmbal resume`` resolves it: ``preset.toml`` with ``run.json``'s
overrides, relative paths against its ``base_dir``. The model needs each modality's per-sample shape
and the number of classes: the shapes come from the dataset's schema (the synthetic generator's
``dims``, or the Parquet footers: no rows are read), the classes from ``run.json``.
"""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig, apply_overrides, data_file, parse_toml, resolve
from ..data.parquet import open_dataset
from ..errors import UsageError
from ..models import build_model
from ..store import RunPaths


def run_config(run_dir: Path, info: dict) -> RunConfig:
    """The run's configuration, resolved from its preset and overrides as a resume does."""
    paths = RunPaths(run_dir)
    raw = parse_toml(paths.preset_toml.read_text(encoding="utf-8"), str(paths.preset_toml))
    return resolve(apply_overrides(raw, list(info.get("overrides", []))), str(paths.preset_toml),
                   Path(info.get("base_dir") or run_dir), default_name=str(info.get("name") or "run"))


def input_shapes(cfg: RunConfig) -> dict[str, tuple[int, ...]]:
    """Each modality's per-sample shape, from the dataset's schema (synthetic: its ``dims``)."""
    if cfg.data.source == "synthetic":
        dims = dict(zip(cfg.data.synthetic.modalities, cfg.data.synthetic.dims))
        return {m: (int(dims[column]),) for m, column in cfg.columns.items()}
    layout = open_dataset(data_file(cfg.data, Path(cfg.base_dir)), columns=dict(cfg.columns),
                          label_column=cfg.data.label_column)
    return {m: tuple(info.shape) for m, info in layout.modalities.items()}


def build_run_model(run_dir: Path, info: dict):
    """The run's model with freshly initialised weights (load a checkpoint's ``model`` into it)."""
    classes = info.get("classes")
    if not isinstance(classes, list) or not classes:
        raise UsageError(f"{RunPaths(run_dir).run_json} lists no 'classes': the model's head cannot be sized")
    cfg = run_config(Path(run_dir), info)
    return build_model(cfg.model, input_shapes(cfg), len(classes))
