"""A harness for testing balancing methods: real parts, a real trainer, a step at a time.

A method's algorithm test should be a few lines::

    kit = Kit.build("ogm", {"alpha": 0.5}, modalities=("a", "b", "c"), fusion="sum")
    x, y = kit.batch(12)
    before = kit.snapshot()
    result = kit.step(x, y)              # one training step through Method.train_step
    assert kit.changed(before) ...       # which parameters moved
    assert result.live["coef/a"] ...

Everything is the engine's own: the preset is resolved by :func:`engine.config.resolve` (so the method's
options and ``check_preset`` are validated), data, model and method come from
:func:`engine.run.build_parts` (synthetic data generated in memory, MLP encoders), and a real
:class:`~engine.train.trainer.Trainer` with an in-memory :class:`ListRecorder` owns the optimiser
(``build_optimizer`` over ``method.parameter_groups``, then ``method.bind_optimizer``). :meth:`Kit.step`
hands the method ``Trainer._step_context``, so ``backward``, ``grads``, ``scale_lr``, ``step_optimizer``,
clipping and the non-finite guard are the ones a run uses; :meth:`Kit.fit` runs the trainer's own loop.

:func:`minimal_options` gives each registered method the options it cannot run without (the fields of
its config dataclass without a default), so suites can be parametrised over ``METHODS.names()``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch

from engine.config import RunConfig, resolve
from engine.config_text import toml_key, toml_value
from engine.data import load_data
from engine.methods import METHODS, Method, StepContext, StepResult
from engine.models import MultimodalModel
from engine.run import build_parts
from engine.train.trainer import Trainer

TWO = ("a", "b")
THREE = ("a", "b", "c")
FUSIONS = ("concat", "sum", "film", "gated")
# A learning rate per optimiser that trains the tiny models in a few epochs (SGD with momentum 0.9: at 0.05
# AUG's growing ensembles destabilise; the AUG and OGM releases use 0.01).
LR = {"sgd": 0.02, "adam": 0.01, "adamw": 0.01}

# Per modality of the synthetic data: unique label information, observation noise and the observed
# width. With the shared (redundant) block at strength 2 every modality alone predicts the label well
# above chance (about 0.6-0.7 of 3 classes with the default encoders), none perfectly.
SIGNAL = {"a": (0.5, 0.3, 16), "b": (0.5, 0.4, 12), "c": (0.5, 0.35, 14), "d": (0.5, 0.45, 10)}


# -- options ------------------------------------------------------------------------------------------
# Options with which the shared suites' few-epoch runs reach every part of a method's algorithm (its
# defaults come from the papers and may wait longer: a warm-up, a patience, a first stage).
EXERCISE: dict[str, dict[str, Any]] = {
    "opm": {"warmup_epochs": 0},
    "mses": {"patience": 0},
    "mikd": {"stage1_epochs": 1, "kd_epochs": 1},
    "valuation": {"warmup_epochs": 1},
    "dimml": {"detached_epochs": 2, "duc_start": 1},
    "umt": {"teacher_epochs": 1},
    "relearning": {"reinit_epoch": 1},
    # estimates before epochs 0 and 2 (after a resume); the suites' 300 synthetic rows leave ~34 held out, where
    # the paper's 1 / O_k^2 hands a super-epoch to whichever branch's noisy O_k is nearest 0 (the docstring)
    "gblending": {"super_epoch": 2, "estimate_epochs": 1, "sampling_variance": True},
    "reconboost": {"epochs_per_stage": 1, "correct_epoch": 1},   # boost a, rectify, boost b (with the GA term)
}


def minimal_options(method: str, modalities: tuple[str, ...] | list[str] = TWO) -> dict[str, Any]:
    """The options ``method`` needs to run on these modalities: a value for every field of its config
    dataclass that has no default (none for most methods).

    A field named ``modality`` (or ending in ``_modality``) names one of the run's modalities (the
    convention :mod:`engine.config` checks); it gets the first. Any other required field cannot be
    guessed: the error says what to do.
    """
    config = METHODS.entry(method).config
    if config is None:
        return {}
    options = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        if f.name == "modality" or f.name.endswith("_modality"):
            options[f.name] = list(modalities)[0]
        else:
            raise LookupError(f"method '{method}': option '{f.name}' has no default and tests/methodkit.py cannot "
                              f"derive one; give it a default, or teach minimal_options its convention")
    return options


def method_table(method: str, options: dict[str, Any] | None = None,
                 modalities: tuple[str, ...] | list[str] = TWO) -> str:
    """The ``[method]`` table's lines (for :func:`runtools.tiny_preset`): name, minimal options, the
    :data:`EXERCISE` options, then ``options``."""
    table = {"name": method, **minimal_options(method, modalities), **EXERCISE.get(method, {}), **(options or {})}
    return "\n".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items())


# -- presets ------------------------------------------------------------------------------------------
def synthetic_table(modalities: tuple[str, ...] | list[str] = TWO, n_samples: int = 300, n_classes: int = 3,
                    seed: int = 0, **options) -> dict:
    """A ``[data]`` table of the synthetic generator with one modality per name (``a`` to ``d``, see
    ``SIGNAL``); ``options`` are more ``[data.synthetic]`` keys."""
    mods = list(modalities)
    return {"source": "synthetic", "synthetic": {
        "n_samples": n_samples, "n_classes": n_classes, "modalities": mods,
        "dims": [SIGNAL[m][2] for m in mods], "unique": [SIGNAL[m][0] for m in mods],
        "noise": [SIGNAL[m][1] for m in mods], "shared": 2.0, "label_noise": 0.2, "seed": seed, **options}}


def preset(method: str = "joint", options: dict[str, Any] | None = None, *,
           modalities: tuple[str, ...] | list[str] = TWO, fusion: str = "concat", epochs: int = 3,
           batch_size: int = 32, optimizer: str | None = None, lr: float | None = None, seed: int = 3,
           data: dict | None = None, encoders: dict | None = None, dropout: float = 0.2,
           fusion_options: dict | None = None, monitor: dict | None = None, train: dict | None = None,
           name: str = "kit") -> dict:
    """A parsed preset (the dict ``tomllib`` would give) for ``method`` on tiny synthetic data.

    Defaults: 300 samples (210 train: 7 steps of 32 per epoch), MLP encoders ``[16] -> 8`` with
    ``dropout`` 0.2 (so exact resume covers the dropout RNG; 0 for known-value tests), small fusion
    heads, the optimiser the method's paper used (``info.optimizer``) with a learning rate from ``LR``,
    monitors off (``monitor={}`` turns them on with their defaults, less the overhead budget, so that
    every update and evaluation runs and the logs are reproducible).
    """
    optimizer = optimizer or METHODS.entry(method).info.optimizer
    mods = list(modalities)
    fusion_table = {"fusion": fusion, **({"hidden": 16} if fusion in ("film", "gated") else {}),
                    **(fusion_options or {})}
    return {
        "name": name, "seed": seed,
        "data": data or synthetic_table(mods),
        "modalities": encoders or {m: {"encoder": "mlp", "hidden": [16], "dim": 8, "dropout": dropout} for m in mods},
        "model": fusion_table,
        "method": {"name": method, **minimal_options(method, mods), **(options or {})},
        "train": {"epochs": epochs, "batch_size": batch_size, "log_every": 3, "optimizer": optimizer,
                  "lr": lr if lr is not None else LR[optimizer], **(train or {})},
        "monitor": {"enabled": False} if monitor is None else {"max_overhead": 0.0, **monitor},
    }


def to_toml(doc: dict) -> str:
    """A parsed preset written back as TOML (tables after the plain keys, nested tables dotted)."""
    lines: list[str] = []

    def table(node: dict, path: list[str]) -> None:
        plain = {k: v for k, v in node.items() if not isinstance(v, dict)}
        if path and (plain or len(plain) == len(node)):  # a table holding only tables needs no header
            lines.append(f"[{'.'.join(toml_key(p) for p in path)}]")
        lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in plain.items())
        for k, v in node.items():
            if isinstance(v, dict):
                table(v, path + [k])

    table(doc, [])
    return "\n".join(lines) + "\n"


def write_preset(path: Path, doc: dict) -> Path:
    path.write_text(to_toml(doc))
    return path


def resolved(doc: dict, base_dir: Path | None = None) -> RunConfig:
    """The :class:`RunConfig` of a parsed preset (validated as ``mmbal run`` validates it)."""
    return resolve(copy.deepcopy(doc), source="methodkit preset", base_dir=base_dir or Path.cwd(),
                   default_name="kit")


# -- the recorder -------------------------------------------------------------------------------------
class ListRecorder:
    """The trainer's recorder in memory: metric records, events and the checkpoints last saved."""

    def __init__(self):
        self.records: list[tuple[int, float, str, dict]] = []
        self.events: list[tuple[str, int, dict]] = []
        self.checkpoints: dict[str, dict] = {}

    def metrics(self, step, epoch, split, values):
        self.records.append((step, epoch, split, dict(values)))

    def event(self, name, step, **fields):
        self.events.append((name, step, fields))

    def save_checkpoint(self, state, kind):
        self.checkpoints[kind] = state

    def save_monitors(self, state):
        self.checkpoints["monitors"] = state

    def progress(self, position, n_batches, values):
        pass

    def split(self, split: str) -> list[dict]:
        """The values of every record of ``split`` ("train", "val", "test"), in order."""
        return [values for _, _, s, values in self.records if s == split]


# -- a step context by hand ----------------------------------------------------------------------------
def hand_step(model: MultimodalModel, optimizer: torch.optim.Optimizer | None = None, epoch: int = 0,
              **fields: Any) -> StepContext:
    """A step context for calling a method's hooks directly, without a trainer (known-value tests): step 0
    of ``epoch``, no autocast, ``backward`` is ``loss.backward()``, ``step_optimizer`` is ``optimizer.step()``
    then ``zero_grad(set_to_none=True)`` (nothing without an optimiser); ``fields``: other StepContext
    fields (``scale_lr``, ``grads``, ``ids``, ...). :meth:`Kit.step` gives the trainer's own instead."""
    def step_optimizer():
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return StepContext(model=model, optimizer=optimizer, epoch=epoch, step=0, batch_in_epoch=0,
                       autocast=contextlib.nullcontext, backward=lambda loss: loss.backward(),
                       step_optimizer=step_optimizer, **fields)


# -- the kit ------------------------------------------------------------------------------------------
class Kit:
    """Model, method, optimiser and trainer of one preset, built as a run builds them (see the module
    docstring). ``kit.model``, ``kit.method``, ``kit.trainer``, ``kit.optimizer``, ``kit.data`` and
    ``kit.recorder`` are the real objects."""

    def __init__(self, cfg: RunConfig, data=None, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        if data is None:
            data = load_data(cfg.data, cfg.columns, cfg.seed, Path(cfg.base_dir), self.device)
        threads = torch.get_num_threads()
        self.data, self.model, self.method = build_parts(cfg, self.device, data, source="methodkit preset")
        torch.set_num_threads(threads)  # build_parts applies train.threads; a test keeps its own
        self.recorder = ListRecorder()
        self.trainer = Trainer(cfg.train, self.data, self.model, self.method, self.device, cfg.seed,
                               self.recorder, cfg.monitor)
        self.lives: list[dict[str, torch.Tensor]] = []          # StepResult.live of every step of fit()
        self.epoch_values: list[dict[str, Any]] = []            # Method.epoch_values() of every epoch of fit()

    @classmethod
    def build(cls, method: str = "joint", options: dict[str, Any] | None = None, *, tensors=None,
              device: str | torch.device = "cpu", **preset_args) -> "Kit":
        """A kit for ``method`` with ``options`` (added to its minimal ones); ``preset_args`` go to
        :func:`preset`; ``tensors``: data already loaded for that preset (shared by several kits)."""
        return cls(resolved(preset(method, options, **preset_args)), data=tensors, device=device)

    @property
    def modalities(self) -> list[str]:
        return list(self.cfg.modalities)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.trainer.optimizer

    # -- data -----------------------------------------------------------------------------------------
    def batch(self, n: int = 16, split: str = "train", start: int = 0, with_ids: bool = False):
        """Rows ``start .. start + n`` of ``split`` as ``(x, y)`` on the device (``(x, y, ids)`` with
        ``with_ids``: the rows' train-split ids, as a training batch carries them)."""
        ids = torch.arange(start, start + n, device=self.data.device)
        x, y = self.data.batch(self.data.splits[split].index_select(0, ids))
        return (x, y, ids) if with_ids else (x, y)

    # -- training -------------------------------------------------------------------------------------
    def step(self, x: dict[str, torch.Tensor] | None = None, y: torch.Tensor | None = None,
             ids: torch.Tensor | None = None, epoch: int | None = None) -> StepResult:
        """One training step exactly as the trainer's loop makes it (``Trainer.train_one``: the scheduled
        learning rate, ``method.train_step`` with the trainer's step context, the monitors and the
        interval's sums); the position advances by one batch.
        ``epoch`` moves the trainer to that epoch first (for epoch-dependent schedules). Without ``x``,
        the epoch's next training batch (with its sample ids)."""
        t = self.trainer
        if epoch is not None:
            t.pos.epoch = epoch
        if x is None:
            batches = self.data.train_epoch(self.cfg.seed, t.pos.epoch, self.cfg.train.batch_size,
                                            self.cfg.train.drop_last)
            x, y, ids = next(iter(batches.iterate(t.pos.batch % len(batches))))[:3]
        self.model.train()
        return t.train_one(x, y, ids)

    def step_grads(self, x: dict[str, torch.Tensor], y: torch.Tensor,
                   epoch: int | None = None) -> tuple[StepResult, dict[str, torch.Tensor]]:
        """:meth:`step`, and the gradients the optimiser applied in it (by parameter name, captured just
        before the optimiser's step)."""
        grads: dict[str, torch.Tensor] = {}
        optimizer_step = self.method.optimizer_step

        def capture(step):
            grads.update({n: p.grad.clone() for n, p in self.params().items() if p.grad is not None})
            step.step_optimizer()
        self.method.optimizer_step = capture
        try:
            return self.step(x, y, epoch=epoch), grads
        finally:
            self.method.optimizer_step = optimizer_step

    def fit(self) -> dict[str, float]:
        """The trainer's whole loop (``Trainer.fit``); the steps' live values are kept in ``self.lives``
        and each epoch's ``Method.epoch_values()`` in ``self.epoch_values``. Returns the test metrics."""
        method = self.method
        train_step, epoch_values = method.train_step, method.epoch_values

        def recording_step(x, y, step):
            result = train_step(x, y, step)
            self.lives.append(dict(result.live))
            return result

        def recording_values():
            values = epoch_values()
            self.epoch_values.append(dict(values))
            return values

        method.train_step, method.epoch_values = recording_step, recording_values
        try:
            return self.trainer.fit()
        finally:
            del method.train_step, method.epoch_values

    def evaluate(self, split: str = "val", model: MultimodalModel | None = None,
                 method: Method | None = None) -> dict[str, float]:
        """``Trainer.evaluate``: the split's metrics (of another model and method state if given)."""
        return self.trainer.evaluate(split, model, method)

    def loaded(self, state: dict) -> tuple[MultimodalModel, Method]:
        """A fresh model and method holding a checkpoint's ``model`` and ``method`` state, made as
        ``Trainer.finish`` makes the selected one (a copy of the model, a new method of the same config)."""
        model = copy.deepcopy(self.model)
        model.load_state_dict(state["model"])
        method = type(self.method)(self.method.cfg, self.method.ctx)
        method.setup(model)
        method.modules.to(self.device)
        method.load_state_dict(state["method"])
        return model, method

    # -- parameters -----------------------------------------------------------------------------------
    def params(self, part: str | None = None) -> dict[str, torch.nn.Parameter]:
        """Named parameters: of modality ``part``'s encoder, of the fusion head (``"fusion"``), of the
        method's own modules (``"method"``), or all of them (None). Names as in :meth:`snapshot`."""
        named = {**dict(self.model.named_parameters()),
                 **{f"method.{k}": p for k, p in self.method.modules.named_parameters()}}
        if part is None:
            return named
        prefix = "method." if part == "method" else "fusion." if part == "fusion" else f"encoders.{part}."
        found = {k: p for k, p in named.items() if k.startswith(prefix)}
        if not found:
            raise KeyError(f"no parameters under '{prefix}' (modalities: {', '.join(self.modalities)})")
        return found

    def snapshot(self) -> dict[str, torch.Tensor]:
        """Copies of every model and method tensor (parameters and buffers), by name."""
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        state.update({f"method.{k}": v.detach().clone() for k, v in self.method.modules.state_dict().items()})
        return state

    def changed(self, before: dict[str, torch.Tensor]) -> set[str]:
        """Names whose tensor differs from ``before`` (or that did not exist then)."""
        now = self.snapshot()
        return {k for k, v in now.items() if k not in before or not torch.equal(before[k], v)}
