"""Presets: TOML -> a validated, fully resolved :class:`RunConfig`, with every problem reported at once.

Who reads what:

==================  =========================================================================
``preset.toml``     the user's file, kept verbatim in the run directory
``--set k=v``       dotted overrides applied to the parsed TOML before validation
``[monitor]``       the imbalance / information monitors (may change on resume)
``config.json``     ``RunConfig.to_dict()``: every default filled in; compare and resume read it
locked keys         ``seed``, ``data``, ``modalities``, ``model``, ``method``, ``train.batch_size``:
                    resume refuses to change them (exit 3); the rest of ``[train]`` may change,
                    and so may ``data.memory_budget`` and ``data.prefetch`` (they change no result)
==================  =========================================================================

Validation follows torchtune/harlequin: unknown keys get a "did you mean", types and ranges are
checked against the config dataclasses that live beside the code they configure, registry names
(encoder, fusion, method) are checked against their registries, and modality names against the
dataset's schema (read without loading the data).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config_text import MAX_NESTING, deep_nesting_in_text, too_deep_path, toml_value
from .data import DataConfig
from .data.modality_names import modality_name_problem
from .data.parquet import ModalityInfo, column_type_problem, flat_hint, peek_schema
from .errors import DataError, PresetError
from .methods import METHODS
from .models import ENCODERS, FUSIONS, ModalitySpec, ModelSpec, default_encoder
from .models import mid_fusion
from .models.encoders.external import is_target, option_problems, register_target
from .models.encoders.weights import freeze_problem
from .monitor import MonitorConfig
from .registry import did_you_mean
from .schema import INT64_MAX, build, to_dict
from .train.config import TrainConfig

TOP_KEYS = ("name", "seed", "data", "modalities", "model", "method", "train", "monitor")
LOCKED = ("seed", "data", "modalities", "model", "method", "train.batch_size")
BOM = "\ufeff"  # the UTF-8 byte-order mark some editors put at the start of a file
UNLOCKED = ("data.memory_budget", "data.prefetch")  # inside locked tables, but they do not change the results
ADDED_LATER = ("data.shuffle_window", "method.modulate")  # absent from older runs' config.json (they ran resident): not a change


@dataclass(frozen=True)
class RunConfig:
    name: str
    seed: int
    data: DataConfig
    model: ModelSpec
    method_name: str
    method: Any  # the method's Config dataclass instance
    train: TrainConfig
    columns: dict[str, str]  # modality name -> dataset column
    base_dir: str  # folder the preset's relative paths are resolved against
    monitor: MonitorConfig = dataclasses.field(default_factory=MonitorConfig)

    @property
    def modalities(self) -> list[str]:
        return [m.name for m in self.model.modalities]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "seed": self.seed,
            "data": to_dict(self.data),
            "modalities": {m.name: {"encoder": m.encoder, "column": self.columns[m.name], **to_dict(m.options),
                                    **encoder_setup(m)}
                           for m in self.model.modalities},
            "model": {"fusion": self.model.fusion, **to_dict(self.model.fusion_options),
                      **mid_fusion.preset_entries(self.model.mid_fusion, self.model.mid_fusion_options)},
            "method": {"name": self.method_name, **to_dict(self.method)},
            "train": to_dict(self.train),
            "monitor": to_dict(self.monitor),
            "base_dir": self.base_dir,
        }

    def hash(self) -> str:
        text = json.dumps({k: v for k, v in self.to_dict().items() if k != "base_dir"}, sort_keys=True)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


# -- reading and overriding ---------------------------------------------------------------------
def read_toml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PresetError(str(path), ["the preset file does not exist"]) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise PresetError(str(path), [f"cannot read the preset: {exc}"]) from None
    return parse_toml(text, str(path))


def parse_toml(text: str, source: str) -> dict:
    """The preset ``text`` parsed; a leading UTF-8 byte-order mark (as Windows editors write) is ignored.
    Invalid TOML, and values nested deeper than :data:`MAX_NESTING` levels, are a :class:`PresetError`."""
    text = text.removeprefix(BOM)
    deep = deep_nesting_in_text(text)
    if deep is not None:
        raise PresetError(source, [_too_deep(deep[0] or "(a value)", f" (line {deep[1]})")])
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(source, [f"not valid TOML: {exc}"]) from None
    except RecursionError:  # not expected past the scan above; still a preset problem, never a traceback
        raise PresetError(source, [_too_deep("(a value)", "")]) from None
    path = too_deep_path(raw)
    if path is not None:
        raise PresetError(source, [_too_deep(path, "")])
    return raw


def _too_deep(key: str, where: str) -> str:
    return (f"{key}{where}: nested more than {MAX_NESTING} levels deep (tables, arrays and inline tables); a preset "
            f"needs a few levels at most")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=1`` -> (["a", "b"], 1); the value is read as TOML, else kept as a plain string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*", key):
        raise PresetError("--set", [f"'{item}': expected KEY=VALUE with a dotted key, e.g. train.epochs=3"])
    raw = raw.strip()
    keys = key.split(".")
    if len(keys) > MAX_NESTING or deep_nesting_in_text(f"v = {raw}", MAX_NESTING - len(keys)) is not None:
        shown_key = key if len(key) <= 80 else f"{key[:60]}... ({len(keys)} levels)"
        raise PresetError("--set", [_too_deep(shown_key, "")])
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return keys, value


# Keys whose values name files: a relative value typed on the command line means "from here", not "from the
# preset's folder" (see :func:`command_line_paths`).
PATH_KEYS = ("data.path",)


def command_line_paths(overrides: list[str], cwd: Path | None = None) -> list[str]:
    """``--set`` items with every relative path value of :data:`PATH_KEYS` made absolute against ``cwd``
    (default: the current directory), as a path typed on the command line means. Stored this way, the
    overrides mean the same file on resume from any folder."""
    cwd = Path.cwd() if cwd is None else cwd
    out = []
    for item in overrides:
        keys, value = parse_override(item)
        if ".".join(keys) in PATH_KEYS and isinstance(value, str) and value and not Path(value).is_absolute():
            item = f"{'.'.join(keys)}={toml_value(os.path.normpath(cwd / Path(value).expanduser()))}"
        out.append(item)
    return out


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    out = json.loads(json.dumps(raw))  # deep copy of plain TOML data
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k, {}), dict):
                raise PresetError("--set", [f"'{item}': '{k}' is not a table"])
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    path = too_deep_path(out)  # each override is bounded; a deep one under a deep preset table is not
    if path is not None:
        raise PresetError("--set", [_too_deep(path, "")])
    return out


# -- resolving ----------------------------------------------------------------------------------
def load_preset(path: str | Path, overrides: list[str] = ()) -> tuple[RunConfig, str]:
    """Read, override and resolve a preset file; returns the config and the file's text."""
    path = Path(path)
    raw = read_toml(path)
    text = path.read_text(encoding="utf-8")
    return resolve(apply_overrides(raw, list(overrides)), source=str(path),
                   base_dir=path.resolve().parent, default_name=path.stem), text


def resolve(raw: dict, source: str, base_dir: Path, default_name: str = "run") -> RunConfig:
    """Validate a parsed preset; raises :class:`PresetError` listing every problem."""
    problems: list[str] = []
    for key in raw:
        if key not in TOP_KEYS:
            problems.append(f"{key}: unknown key{did_you_mean(key, TOP_KEYS)}; known: {', '.join(TOP_KEYS)}")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        problems.append(f"name: expected a non-empty string, got {name!r}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= INT64_MAX:
        problems.append(f"seed: expected an integer from 0 to {INT64_MAX}, got {seed!r}")

    data = build(DataConfig, _table(raw, "data", problems), "data", problems)
    available = _available_modalities(data, base_dir, problems, every="modalities" not in raw) if data else None
    modalities, columns = _resolve_modalities(raw, available, data_file(data, base_dir) if data else None, problems,
                                              base_dir, data.label_column if data else "label")
    _check_token_inputs(data, modalities, available, columns, problems)
    fusion, fusion_options = _resolve_registry_table(raw, "model", "fusion", FUSIONS, "concat", problems,
                                                     ignore=mid_fusion.KEYS)
    model_table = raw.get("model")
    mid, mid_options = mid_fusion.resolve_table(model_table if isinstance(model_table, dict) else {}, problems)
    method_name, method_cfg = _resolve_registry_table(raw, "method", "name", METHODS, "joint", problems)
    train = build(TrainConfig, _table(raw, "train", problems), "train", problems)
    monitor = build(MonitorConfig, _table(raw, "monitor", problems), "monitor", problems)
    _check_method_modality(method_cfg, modalities, problems)
    _check_select_metric(train, modalities, problems)
    _check_compile(train, method_name, problems)
    if method_cfg is not None and train is not None and method_name in METHODS:
        problems.extend(METHODS.get(method_name).check_preset(method_cfg, train))

    if problems:
        raise PresetError(source, problems)
    return RunConfig(name=name, seed=seed, data=data,
                     model=ModelSpec(tuple(modalities), fusion, fusion_options, mid, mid_options),
                     method_name=method_name, method=method_cfg, train=train, columns=columns,
                     base_dir=str(base_dir), monitor=monitor)


def _table(raw: dict, key: str, problems: list[str]) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        problems.append(f"{key}: expected a table ([{key}]), got {value!r}")
        return {}
    return value


def data_file(data: DataConfig, base_dir: Path) -> Path | None:
    """The dataset's file or directory, resolved against the preset's folder (None for synthetic data)."""
    if data.source == "synthetic":
        return None
    path = Path(data.path).expanduser()
    return path if path.is_absolute() else Path(os.path.normpath(base_dir / path))


def _available_modalities(data: DataConfig, base_dir: Path, problems: list[str],
                          every: bool) -> dict[str, ModalityInfo] | None:
    """The modalities the dataset offers (schema only), or None when it cannot be read.

    ``every``: the preset names no modalities, so every float-list column will be one, and one of a
    wrong type is reported (as :func:`~engine.data.parquet.read_dataset` would)."""
    if data.source == "synthetic":
        s = data.synthetic
        return {m: ModalityInfo(m, m, (d,), "vector") for m, d in zip(s.modalities, s.dims)}
    path = data_file(data, base_dir)
    try:
        infos, _ = peek_schema(path, data.label_column, strict=every)
    except DataError as exc:
        problems.append(f"data.path: {exc}")
        return None
    return infos


def _resolve_modalities(raw: dict, available: dict[str, ModalityInfo] | None, path: Path | None,
                        problems: list[str], base_dir: Path = Path("."),
                        label_column: str = "label") -> tuple[list[ModalitySpec], dict[str, str]]:
    """Modality specs from ``[modalities.*]`` checked against the dataset (``path``: its file, if any)."""
    tables = _table(raw, "modalities", problems)
    from_data = not tables   # every modality column of the dataset, named as its column
    if from_data and available is not None:
        tables = {name: {} for name in available}
    specs, columns = [], {}
    by_column = {info.column: info for info in (available or {}).values()}
    for name, table in tables.items():
        key = f"modalities.{name}"
        if not isinstance(table, dict):
            problems.append(f"{key}: expected a table ([{key}]), got {table!r}")
            continue
        bad_name = modality_name_problem(name)
        if bad_name:
            problems.append(f"data.path: the dataset's modality column '{name}' cannot be a modality's name: "
                            f"{bad_name}; name it in the preset: [modalities.<name>] with column = \"{name}\""
                            if from_data else f"{key}: {bad_name}; rename the table, and keep the data's column "
                            f"with column = \"{table.get('column', name)}\"")
            continue
        column = table.get("column", name)
        if not isinstance(column, str):
            problems.append(f"{key}.column: expected the name of a dataset column (a string), got {column!r}")
            continue
        info = by_column.get(column) if available is not None else None
        if available is not None and info is None:
            where = key + (".column" if "column" in table else "")
            wrong_type = column_type_problem(path, column) if path is not None else None
            if wrong_type:
                problems.append(f"{where}: column '{column}' of {path} {wrong_type}")
            else:
                problems.append(f"{where}: the dataset has no modality column '{column}'"
                                f"{did_you_mean(column, list(by_column))}; it has: {', '.join(by_column) or 'none'}")
        encoder = table.get("encoder")
        if encoder is None:
            encoder = default_encoder(info.kind, info.shape) if info else "mlp"
        failed = register_target(encoder, base_dir) if is_target(encoder) else None
        if failed or encoder not in ENCODERS:
            problems.append(f"{key}.encoder: {failed or ENCODERS.unknown_message(encoder)}")
            continue
        options = _encoder_options(encoder, table, key, problems)
        setup = _encoder_setup(table, key, base_dir, problems)
        if options is not None and setup is not None:
            specs.append(ModalitySpec(name, encoder, options, **setup))
            columns[name] = column
    if available is not None and len(tables) < 2:
        offered = f"; the dataset {path} has the modality column(s): {', '.join(by_column) or 'none'}" if path else ""
        hint = flat_hint(path, label_column) if path is not None and not by_column else None
        offered += f"; {hint}" if hint else ""
        problems.append(f"modalities: at least two modalities are needed, got {len(tables)}{offered}")
    return specs, columns


SETUP_KEYS = ("init", "freeze")  # of every [modalities.<m>] table, whatever the encoder (models/encoders/weights.py)


def _encoder_options(encoder: str, table: dict, key: str, problems: list[str]) -> Any:
    """The encoder's options from its table: its config dataclass, or (an external encoder's function) the
    keyword arguments, checked against the function's signature."""
    config = ENCODERS.entry(encoder).config
    if config is not None:
        return build(config, table, key, problems, ignore=("encoder", "column", *SETUP_KEYS))
    options = {k: v for k, v in table.items() if k not in ("encoder", "column", *SETUP_KEYS)}
    found = option_problems(encoder, options, key)
    problems.extend(found)
    return None if found else options


def _encoder_setup(table: dict, key: str, base_dir: Path, problems: list[str]) -> dict | None:
    """``init`` (made absolute against the preset's folder; the file must exist) and ``freeze``."""
    before = len(problems)
    init = table.get("init")
    if init is not None:
        if not isinstance(init, str) or not init:
            problems.append(f"{key}.init: expected the path of a weights file (a string), got {init!r}")
        else:
            resolved = Path(init).expanduser()
            init = str(resolved if resolved.is_absolute() else Path(os.path.normpath(base_dir / resolved)))
            if not Path(init).is_file():
                problems.append(f"{key}.init: the weights file {init} does not exist")
    freeze = table.get("freeze", False)
    wrong = freeze_problem(freeze)
    if wrong:
        problems.append(f"{key}.freeze: {wrong}")
    return {"init": init, "freeze": freeze} if len(problems) == before else None


def encoder_setup(spec: ModalitySpec) -> dict:
    """``init`` and ``freeze`` of a modality for ``config.json``, only when set (older runs have neither)."""
    out: dict[str, Any] = {}
    if spec.init:
        out["init"] = spec.init
    if spec.freeze not in (False, None):
        out["freeze"] = spec.freeze
    return out


def _check_token_inputs(data: DataConfig | None, modalities: list[ModalitySpec],
                        available: dict[str, ModalityInfo] | None, columns: dict[str, str], problems: list[str]) -> None:
    """An encoder that reads token ids (a transformers text model) needs the values unscaled: z-scoring
    would turn the ids into other numbers."""
    if data is None or data.standardize == "none" or available is None:
        return
    by_column = {info.column: info for info in available.values()}
    for ms in modalities:
        reads_ids = getattr(ms.options, "takes_token_ids", None)
        info = by_column.get(columns.get(ms.name, ""))
        if callable(reads_ids) and info is not None and reads_ids(info.shape):
            problems.append(f"data.standardize: modality '{ms.name}' holds token ids for its {ms.encoder} encoder, "
                            f"which standardisation would change; set data.standardize = \"none\" (and give "
                            f"other modalities already scaled values)")


def _resolve_registry_table(raw: dict, key: str, name_key: str, registry, default: str,
                            problems: list[str], ignore: tuple[str, ...] = ()) -> tuple[str, Any]:
    table = _table(raw, key, problems)
    name = table.get(name_key, default)
    if name not in registry:
        problems.append(f"{key}.{name_key}: {registry.unknown_message(name)}")
        return name, None
    config_cls = registry.entry(name).config
    if config_cls is None:
        extra = [k for k in table if k != name_key and k not in ignore]
        problems.extend(f"{key}.{k}: unknown key; {registry.kind} '{name}' takes no options" for k in extra)
        return name, None
    before = len(problems)
    obj = build(config_cls, table, key, problems, ignore=(name_key, *ignore))
    _hint_other_method(table, registry, name, key, problems, before)
    return name, obj


def _hint_other_method(table: dict, registry, name: str, key: str, problems: list[str], start: int) -> None:
    """Add to each unknown-key problem from ``start`` on which other registry entry takes that key."""
    for i in range(start, len(problems)):
        problem = problems[i]
        bad = problem.split(":", 1)[0].removeprefix(f"{key}.")
        if "unknown key" not in problem or bad not in table:
            continue
        owners = [e.name for e in registry.entries()
                  if e.config is not None and bad in {f.name for f in dataclasses.fields(e.config)}]
        if owners:
            problems[i] = problem + f" ('{bad}' is an option of {registry.kind} {', '.join(owners)}, not of '{name}')"


def _check_method_modality(method_cfg: Any, modalities: list[ModalitySpec], problems: list[str]) -> None:
    names = [m.name for m in modalities]
    value = getattr(method_cfg, "modality", None)
    if method_cfg is not None and value is not None and names and value not in names:
        problems.append(f"method.modality: '{value}' is not one of the modalities "
                        f"({', '.join(names)}){did_you_mean(value, names)}")


def _check_select_metric(train: TrainConfig | None, modalities: list[ModalitySpec], problems: list[str]) -> None:
    if train is None:
        return
    target = train.select_metric.split("/")[2]
    names = ["fused", *(m.name for m in modalities)]
    if modalities and target not in names:
        problems.append(f"train.select_metric: '{target}' is neither 'fused' nor a modality "
                        f"({', '.join(names)}){did_you_mean(target, names)}")


def _check_compile(train: TrainConfig | None, method_name: str, problems: list[str]) -> None:
    """``train.compile = true`` only with a method that declares itself compatible (``Method.compile_ok``)."""
    if train is None or train.compile is not True or method_name not in METHODS:   # "step" falls back instead
        return
    if not getattr(METHODS.get(method_name), "compile_ok", True):
        problems.append(f"train.compile: method '{method_name}' does not support train.compile = true (its "
                        f"training step cannot run through compiled modules); set train.compile = false")


# -- resume -------------------------------------------------------------------------------------
def locked_differences(old: dict, new: dict) -> list[str]:
    """Dotted keys among the locked ones whose values differ between two ``to_dict()`` configs."""
    diffs: list[str] = []
    for key in LOCKED:
        a, b = _dig(old, key), _dig(new, key)
        if a != b:
            diffs.extend(d for d in _diff_paths(key, a, b) if d.split(":")[0] not in UNLOCKED)
    return diffs


def _dig(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _diff_paths(prefix: str, a: Any, b: Any) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a and f"{prefix}.{k}" not in ADDED_LATER]:
            if a.get(k) != b.get(k):
                out.extend(_diff_paths(f"{prefix}.{k}", a.get(k), b.get(k)))
        return out
    return [f"{prefix}: {json.dumps(a)} -> {json.dumps(b)}"]
