"""The training loop: epochs of batches, evaluation, selection, exact resume.

The data are a batch source (:class:`engine.data.TensorData` resident on the device, or a
streamed dataset): ``train_epoch(seed, epoch, ...)`` gives an epoch's batches in an order fixed by
(seed, epoch) alone, so the position in an epoch is just a batch number and resuming needs no
sampler state. Per-step values (loss, correct counts, the method's live quantities) are summed on
the device and moved to the host once per logging interval.

What the trainer writes goes through a :class:`Recorder` (the run store in practice), so the
loop itself knows nothing about files.

In a multi-process run (:mod:`engine.train.data_parallel`) every rank runs this loop in step: it trains on
its shard of each global batch, gradients are averaged after each backward, the logged train values
are averaged over the ranks once per interval, the monitors learn from the gathered global batch,
and evaluation scores whole splits on every rank (each rank evaluates the full split: simple and
identical everywhere, at the cost of not dividing evaluation). A stop request (SIGINT/SIGTERM) is
agreed on at epoch starts and every ``log_every`` steps, so all ranks stop at the same batch. Only
rank 0's recorder writes; the checkpoint holds global state only (identical weights, the global
batch number, rank 0's RNG), so a run resumes with any number of processes.
"""

from __future__ import annotations

import copy
import time
import warnings
from functools import partial
from typing import Protocol

import torch

from .. import collectives
from ..data import EpochPlan, TensorData
from ..errors import NonFiniteError
from ..faults import fault_point
from ..methods import Method, StepContext
from ..methods.stages import MemoryKept, clone_state
from ..models import ModelOutput, MultimodalModel
from ..monitor import MonitorConfig, Monitors
from .checkpoint import SCHEMA, capture_rng, restore_rng
from .config import TrainConfig
from .compile import compile_model
from .step_compile import CompiledStep, modules_compile_ok, refusal, static_batches
from .device import autocast_factory, channels_last_enabled
from .data_parallel import ShardedData, average_gradients, average_tensors, gather_output, sync_module_state
from .interval import RunningSums
from .metrics import SplitScorer, to_host
from .nested import train_nested
from .nonfinite import NonFiniteGuard
from .optim import build_optimizer, lr_factor, match_parameter_layout, prime_momentum_buffers, set_lr
from .early_stop import EarlyStop
from .position import Position, Selection


class Recorder(Protocol):
    """Where the trainer's output goes (implemented by the run store, or a list in tests)."""

    def metrics(self, step: int, epoch: float, split: str, values: dict[str, float]) -> None: ...
    def event(self, name: str, step: int, **fields) -> None: ...
    def save_checkpoint(self, state: dict, kind: str) -> None: ...      # kind: "last" | "best"
    def save_monitors(self, state: dict) -> None: ...                   # the monitors' state, apart (max_overhead)
    def progress(self, position: "Position", n_batches: int, values: dict[str, float] | None) -> None: ...


class Interrupted(Exception):
    """Training stopped on request (SIGINT/SIGTERM) after writing a checkpoint."""


class Trainer:
    """Trains ``model`` with ``method`` on ``data``; see the module docstring."""

    fault_site = "step"   # engine.faults site after each training step (nested training has its own)

    def __init__(self, cfg: TrainConfig, data: TensorData, model: MultimodalModel, method: Method,
                 device: torch.device, seed: int, recorder: Recorder, monitor: MonitorConfig | None = None):
        self.cfg = cfg
        self.data = ShardedData.wrap(data)  # this rank's rows of each batch (data itself in one process)
        self.model = model
        self.method = method
        self.device = device
        self.seed = seed
        self.recorder = recorder
        self.modalities = list(model.modalities)
        self._modules = list(model.modules())
        self._acc_keys = ("train/acc/fused", *(f"train/acc/{m}" for m in self.modalities))
        self.autocast = autocast_factory(cfg.precision, device)
        # before the optimiser, whose state then takes the weights' layout
        self.channels_last = model.to_channels_last() if channels_last_enabled(cfg.channels_last, device) else []
        self.optimizer = build_optimizer(cfg, method.parameter_groups(model), device)
        method.bind_optimizer(self.optimizer)
        if method.ctx.kept is None:  # the run store's when the recorder keeps models on disk
            method.ctx.kept = getattr(recorder, "kept", None) or MemoryKept()
        if method.ctx.train_nested is None:
            method.ctx.train_nested = partial(train_nested, type(self), cfg, device)
        self.guard = NonFiniteGuard(cfg.on_nonfinite, self.optimizer, device)
        self.pos = Position()
        self.best = Selection()
        self.early = EarlyStop(self.cfg.early_stop, self.cfg.early_stop_min_delta, self.cfg.select_mode)
        self.interval = RunningSums(device)
        self.stop_requested = False
        self.n_train = data.split_size("train")
        self.monitors = Monitors(monitor or MonitorConfig(enabled=False), self.modalities,
                                 {m: model.encoders[m].out_dim for m in self.modalities}, data.n_classes,
                                 data.class_counts("train"), device, distributed=collectives.is_distributed())
        self._log_now = False
        self._lr = cfg.lr
        self.plan: EpochPlan | None = None   # the current epoch's plan, when the method gives one
        self._n_batches = self.steps_per_epoch
        self._grads: dict[str, torch.Tensor] = {}
        sync_module_state(model, method.modules)  # every rank starts from rank 0's weights
        self.compiled, self.compiled_step = self._compile(cfg.compile)
        # CUDA-graph replays of a compiled step overwrite its outputs: what waits for later is copied or read now
        self.guard.copy_waiting = bool(self.compiled_step and self.compiled_step.cuda_graphs)
        self.interval.copy = self.guard.copy_waiting

    def _compile(self, mode: bool | str) -> tuple:
        """``train.compile``: the encoders and fusion head (true), the step's forward, loss and backward
        ("step"), or nothing; returns (compiled modules or None, compiled step or None). A method whose
        step cannot be captured gets, under "step", its modules compiled where ``train.compile = true``
        is allowed for it, else nothing, after one warning saying why."""
        if mode == "step":
            why = refusal(self.method)
            if why is None:
                static = static_batches(self.cfg, self.n_train)
                return None, CompiledStep(self.method, self.device, static, self._warn)
            modules = modules_compile_ok(self.method, self.cfg)
            instead = ("its encoders and fusion head are compiled instead (as with train.compile = true)" if modules
                       else "it trains without compilation (eager), as it does not run with train.compile = true")
            self._warn(f"train.compile = \"step\": {why}; {instead}.")
            return (compile_model(self.model, self._warn) if modules else None), None
        return (compile_model(self.model, self._warn) if mode is True else None), None

    @property
    def params(self) -> list[torch.Tensor]:
        """Every optimised parameter, including groups a method added during training (AUG's heads)."""
        groups = self.optimizer.param_groups
        if len(groups) != getattr(self, "_n_groups", -1):
            self._n_groups = len(groups)
            self._params = [p for g in groups for p in g["params"]]
            prime_momentum_buffers(self.optimizer)
        return self._params

    # -- sizes ----------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return self.cfg.steps_per_epoch(self.n_train)

    # -- the loop -------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train from the current position to ``cfg.epochs``; returns the final host metrics."""
        self.model.train()
        while self.pos.epoch < self.cfg.epochs and self.method.end_reason is None and not self.stopped_early:
            self.train_epoch_steps()
            self.end_epoch()
        return self.finish()

    @property
    def stopped_early(self) -> bool:
        """Whether early stopping (``train.early_stop``) ended training after the last finished epoch."""
        return self.pos.batch == 0 and self.early.stopped_after(self.pos.epoch - 1)

    def train_epoch_steps(self) -> None:
        """The optimiser steps of the current epoch from the current batch on (no evaluation)."""
        epoch = self.pos.epoch
        self._stop_if_requested(agree=True)  # before the epoch's start hook, so a resume does not run it twice
        if self.pos.batch == 0:
            self._record_events(self.method.on_epoch_start(epoch, self.model), epoch)
            self.plan = self.method.epoch_plan(epoch, self.model)  # mid-epoch, the checkpoint's plan
        batches = self.data.train_epoch(self.seed, epoch, self.cfg.batch_size, self.cfg.drop_last, plan=self.plan)
        self._n_batches = len(batches)
        if not all(m.training for m in self._modules):   # as model.train(), without its setattr per module
            self.model.train()
        for x, y, ids, masks in batches.iterate(self.pos.batch):
            self._stop_if_requested(agree=self.pos.step % self.cfg.log_every == 0)
            self.train_one(x, y, ids, masks)
            logged = self._flush_interval() if self.logs_after(self.pos.step) else None
            self.recorder.progress(self.pos, self._n_batches, logged)
        self._flush_interval()

    def train_one(self, x: dict[str, torch.Tensor], y: torch.Tensor, ids: torch.Tensor | None = None,
                  masks: dict[str, torch.Tensor] | None = None):
        """One batch at the current position: the scheduled learning rate, the method's training step,
        the monitors, the interval's sums; the position moves on by one batch. Returns the StepResult."""
        batch, n = self.pos.batch, self._n_batches
        # the schedule's position: epochs done + the fraction of this one (planned epochs differ in length)
        self._lr = set_lr(self.optimizer, lr_factor(self.cfg, self.pos.epoch * n + batch, n))
        self._log_now = self.logs_after(self.pos.step + 1) or batch == n - 1
        sync_module_state(self.model, self.method.modules, buffers_only=True)  # rank 0's BatchNorm statistics
        result = self.method.train_step(x, y, self._step_context(batch, ids, masks))
        fault_point(self.fault_site)
        self._observe(result.output, y)
        self._record_step(result, y)
        self.pos.step += 1
        self.pos.batch = batch + 1
        return result

    def logs_after(self, step: int) -> bool:
        """Whether the logging interval is flushed after optimiser step ``step`` (1-based): every
        ``train.log_every`` steps, and at the run's first steps 1, 2, 4, 8, ... below it, so that the
        first values (loss, accuracy) show within seconds even when an interval takes minutes."""
        every = self.cfg.log_every
        return step % every == 0 or (0 < step < every and step & (step - 1) == 0)

    def _stop_if_requested(self, agree: bool) -> None:
        """A stop request (SIGINT/SIGTERM) ends training here, after a checkpoint.
        The guard's waiting values are checked first (one transfer): under ``on_nonfinite = "stop"`` a
        bad step since the last flush stops the run without that checkpoint, as the flush would; under
        ``"skip"`` the skipped steps are kept in the checkpoint for the resumed run's next record."""
        if self._stop_now(agree):
            bad, _, fresh = self.guard.hold(to_host(self.guard.values()))
            if fresh >= 0 and self.cfg.on_nonfinite == "stop":
                self._stop_nonfinite(bad, fresh, {})
            self.save("last")
            raise Interrupted()

    def _observe(self, out: ModelOutput, y: torch.Tensor) -> None:
        """The monitors learn from the step's output (of the global batch in a multi-process run)."""
        if collectives.is_distributed() and self.monitors.observes(self.pos.step):
            out, y = gather_output(out, y)
        self.monitors.observe_step(out, y, self.pos.step)

    def _record_events(self, events: list[dict], epoch: int) -> None:
        for ev in events:
            self.recorder.event(ev.pop("name"), self.pos.step, epoch=epoch, **ev)

    def _stop_now(self, agree: bool) -> bool:
        """Whether to stop here. In a multi-process run the ranks agree (one collective) only where
        ``agree`` is true, the same batches on every rank; elsewhere they carry on."""
        if not collectives.is_distributed():
            return self.stop_requested
        if not agree:
            return False
        flag = torch.tensor([float(self.stop_requested)], device=self.device)
        return bool(collectives.all_reduce_max(flag).item())

    def _warn(self, message: str) -> None:
        """A warning for the user: a ``warning`` event in the run's log, and the recorder's ``warn``
        (the CLI's output) when it has one, else Python's warnings."""
        self.recorder.event("warning", self.pos.step, message=message)
        warn = getattr(self.recorder, "warn", None)
        if warn is not None:
            warn(message)
        else:
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    def _step_context(self, batch: int, ids: torch.Tensor | None = None,
                      masks: dict[str, torch.Tensor] | None = None) -> StepContext:
        return StepContext(model=self.model, optimizer=self.optimizer, epoch=self.pos.epoch,
                           step=self.pos.step, batch_in_epoch=batch, autocast=self.autocast,
                           backward=self._backward, step_optimizer=self._step_optimizer,
                           grads=self._grads_of, scale_lr=self._scale_lr, ids=ids, masks=masks,
                           forward_loss=self.compiled_step.forward_loss if self.compiled_step else None)

    def _backward(self, loss: torch.Tensor) -> None:
        """Backward, then (several processes) the gradients averaged over the ranks, before the
        method's ``after_backward`` sees them; the guard checks the ranks' mean loss."""
        loss.backward()
        self.guard.after_backward(average_gradients(self.params, loss))

    def _grads_of(self, loss: torch.Tensor, params: list[torch.Tensor], retain_graph: bool = False) -> list[torch.Tensor]:
        """``step.grads``: d loss / d params without touching ``.grad`` (zeros where the loss does not
        reach a parameter), averaged over the ranks; the guard checks the loss and the gradients."""
        found = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]
        mean_loss = average_tensors(grads, loss).detach()
        if grads:  # a non-finite gradient counts as a non-finite loss for the guard
            ok = torch.stack(torch._foreach_norm(grads)).isfinite().all()
            mean_loss = torch.where(ok, mean_loss, torch.full_like(mean_loss, float("nan")))
        self.guard.after_backward(mean_loss)
        return grads

    def _scale_lr(self, group: str, factor) -> None:
        """``step.scale_lr``: this step's learning rate of the named parameter group times ``factor``."""
        matched = [g for g in self.optimizer.param_groups if g.get("name") == group]
        if not matched:
            names = ", ".join(str(g.get("name")) for g in self.optimizer.param_groups)
            raise KeyError(f"method '{self.method.name}' scaled the learning rate of parameter group '{group}', "
                           f"which its parameter_groups do not name (groups: {names})")
        for g in matched:
            g["lr"] = g["lr"] * factor

    def _step_optimizer(self) -> None:
        # the gradients' norms (one fused call) at the interval's last step (every step with on_nonfinite =
        # "skip"), for the guard's check and the encoders' logged norms
        norms = by_param = None
        if self._log_now or self.guard.mode == "skip":
            with_grad = [p for p in self.params if p.grad is not None]
            norms = torch._foreach_norm([p.grad for p in with_grad]) if with_grad else []
            by_param = dict(zip(map(id, with_grad), norms))
        self.guard.before_step(self.optimizer, self.pos.step + 1, norms)
        if self._log_now:  # summed over the optimiser steps of one batch (alternating methods step per modality)
            for k, v in self.monitors.grad_norms(self.model, by_param).items():
                self._grads[k] = self._grads[k] + v if k in self._grads else v
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _record_step(self, result, y: torch.Tensor) -> None:
        """The step's values into the interval: the loss and the live values, and the fused and
        per-modality logits for the batch accuracies (summed when the interval is read)."""
        out = result.output
        self.interval.add_values(("train/loss/method", *result.live), [result.loss, *result.live.values()])
        self.interval.add_predictions(self._acc_keys, [out.fused, *(out.logits[m] for m in self.modalities)], y)

    def _flush_interval(self) -> dict[str, float] | None:
        if self.interval.count == 0:
            return None
        values = to_host({**self._interval_means(), **self.monitors.interval_values(), **self._grads,
                          **self.guard.values()})
        self._grads = {}
        bad, first, fresh = self.guard.read(values)
        if bad:
            values["nonfinite_steps"] = bad
        values["lr"] = self._lr  # the schedule's lr of the first group (a method's per-step scaling aside)
        self.recorder.metrics(self.pos.step, self._epoch_float(), "train", values)
        self.interval = RunningSums(self.device, copy=self.interval.copy)
        if fresh >= 0 and self.cfg.on_nonfinite == "stop":
            self._stop_nonfinite(bad, fresh, values)
        elif bad:
            self.recorder.event("nonfinite_skipped", self.pos.step, steps=bad, first_step=first)
        return values

    def _interval_means(self) -> dict[str, torch.Tensor]:
        """The interval's mean train values; over several processes, also averaged over the ranks
        (equal shards: the mean of the ranks' batch means is the global batch mean)."""
        means = self.interval.means()
        if not collectives.is_distributed() or not means:
            return means
        keys = list(means)
        return dict(zip(keys, collectives.all_reduce_mean(torch.stack([means[k].double() for k in keys])).unbind()))

    def _stop_nonfinite(self, bad: int, first: int, values: dict[str, float]) -> None:
        norms = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if k.startswith("grad/")) or "not logged"
        self.recorder.event("nonfinite", self.pos.step, steps=bad, first_step=first)
        raise NonFiniteError(
            f"non-finite loss or gradient at step {first} (epoch {self.pos.epoch}, {bad} bad step(s) up to step "
            f"{self.pos.step}) with method '{self.method.name}'; encoder gradient norms at the last logged step: "
            f"{norms}. The run stopped without a new checkpoint: lower train.lr, set train.grad_clip, or set "
            f"train.on_nonfinite = \"skip\", then `mmbal resume` continues from the last good checkpoint.")

    def _epoch_float(self) -> float:
        return round(self.pos.epoch + self.pos.batch / max(self._n_batches, 1), 4)

    def end_epoch(self) -> None:
        """Evaluate, select, then the method's end-of-epoch hook, then the checkpoints.

        The selected state is captured right after the evaluation that selected it, before
        ``on_epoch_end`` may change the model or the method (AUG adds a classifier there), so
        ``best.pt`` and the test metrics of the selected checkpoint are exactly the evaluated state."""
        epoch = self.pos.epoch
        val = self.evaluate("val") if self.data.split_size("val") else {}
        value = val.get(self.cfg.select_metric)
        improved = (value is not None and self.method.selectable(epoch)
                    and self.best.improves(value, self.cfg.select_mode))
        selected = self._snapshot() if improved else None
        events = self.method.on_epoch_end(epoch, self.model, val)
        values = {**val, **self._host(self.method.epoch_values())}
        self.recorder.metrics(self.pos.step, epoch + 1, "val", values)
        self._record_events(events, epoch)
        if self.method.end_reason is not None:
            self.recorder.event("method_end", self.pos.step, epoch=epoch, reason=self.method.end_reason)
        self.early.observe(epoch, value if self.method.selectable(epoch) else None)  # patience from a selectable epoch
        if self.early.stopped_after(epoch) and epoch + 1 < self.cfg.epochs:
            self.recorder.event("early_stop", self.pos.step, epoch=epoch,
                                reason=self.early.reason(self.cfg.select_metric))
        self.pos.epoch += 1
        self.pos.batch = 0
        if selected is not None:
            self.best = Selection(value, epoch, self.pos.step, dict(val))
            self.save_best(*selected)
        self.save("last")
        self.model.train()

    def _snapshot(self) -> tuple[dict, dict]:
        """Copies of the model's weights and the method's state as they are now."""
        return ({k: v.detach().clone() for k, v in self.model.state_dict().items()},
                clone_state(self.method.state_dict()))

    @staticmethod
    def _host(values: dict) -> dict[str, float]:
        tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
        return {**{k: float(v) for k, v in values.items() if k not in tensors}, **to_host(tensors)}

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, split: str, model: MultimodalModel | None = None, method: Method | None = None) -> dict[str, float]:
        """Fused and per-modality accuracy, macro-F1 and loss on ``split`` (one host transfer); a modality's
        over the rows where its value is present (:class:`~engine.train.metrics.SplitScorer`)."""
        model = model or self.model
        method = method or self.method
        was_training = model.training
        model.eval()
        scorer = SplitScorer(["fused", *self.modalities], self.data.n_classes, self.device)
        kept: list = []  # outputs for the monitors, up to their row budget
        monitored = self.monitors.cfg.enabled and (split != "val" or self.monitors.evaluates())
        budget = self.monitors.cfg.eval_max_samples if monitored else 0
        for x, y, present in self.data.eval_rows(split, self.cfg.eval_batch_size):
            with self.autocast():
                out = method.predict(model, x)
            fault_point("eval")
            scorer.add({"fused": out.fused, **out.logits}, y, present)
            if budget > 0:
                kept.append((out, y))
                budget -= y.numel()
        values = scorer.tensors(split)
        if kept:
            values.update(self._monitor_values(model, method, kept, split == "val"))
        model.train(was_training)
        return to_host(values)

    def _monitor_values(self, model: MultimodalModel, method: Method, kept: list,
                        validation: bool) -> dict[str, torch.Tensor]:
        """The evaluation-time monitors on the gathered outputs of a split (float32, no autocast)."""
        def cat(get):
            return torch.cat([get(o).float() for o, _ in kept])
        features = {m: cat(lambda o: o.features[m]) for m in self.modalities}
        logits = {m: cat(lambda o: o.logits[m]) for m in self.modalities}
        y = torch.cat([y for _, y in kept])
        return self.monitors.evaluate(lambda f: method.head(model, f), features, logits,
                                      cat(lambda o: o.fused), y, method.head_is_additive(model), validation)

    def finish(self) -> dict:
        """Test metrics of the selected (best-on-val) checkpoint: its weights *and* its method state
        (a method's own modules, e.g. AUG's heads, belong to the selected epoch too)."""
        model, method = self.model, self.method
        if self.best.epoch >= 0:  # even the last epoch's: on_epoch_end may have changed the state since
            model = copy.deepcopy(self.model)
            model.load_state_dict(self._best_weights)
            method = type(self.method)(self.method.cfg, self.method.ctx)
            method.setup(model)
            method.modules.to(self.device)
            method.load_state_dict(self._best_method)
        test = self.evaluate("test", model, method) if self.data.split_size("test") else {}
        if test:
            self.recorder.metrics(self.pos.step, self.pos.epoch, "test", test)
        return test

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "position": {"epoch": self.pos.epoch, "batch": self.pos.batch, "step": self.pos.step},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(),
            "interval": self.interval.state_dict(),
            "guard": self.guard.state_dict(),
            # under monitor.max_overhead the monitors' state is written apart, when it changed (save())
            **({} if self.monitors.overhead.active else {"monitors": self.monitors.state_dict()}),
            "best": {"value": self.best.value, "epoch": self.best.epoch, "step": self.best.step,
                     "metrics": self.best.metrics},
            "method_end": self.method.end_reason,
            "early_stop": self.early.state_dict(),
            "plan": None if self.plan is None else self.plan.state_dict(),
            "rng": capture_rng(),
            **({"device_rng": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {}),
            "time": time.time(),
        }

    def save_best(self, weights: dict, method_state: dict) -> None:
        """Write the selected state (captured by :meth:`_snapshot`) as the ``best`` checkpoint."""
        self._best_weights, self._best_method = weights, method_state
        self.recorder.save_checkpoint({"schema": SCHEMA, "model": weights, "method": method_state,
                                       "epoch": self.best.epoch, "step": self.best.step,
                                       "metrics": self.best.metrics}, "best")

    def save(self, kind: str = "last") -> None:
        if kind == "best":
            self.save_best(*self._snapshot())
        else:
            self.interval.average_across_ranks()
            self.recorder.save_checkpoint(self.state_dict(), "last")
            self._save_monitors()

    def _save_monitors(self) -> None:
        """Under ``monitor.max_overhead``: the monitors' state in ``checkpoints/monitors.pt`` when their
        probes or critics changed since it was last written and the budget allows the write (timed as the
        monitors' own work), so a small model does not rewrite their weights with every checkpoint."""
        if not self.monitors.overhead.active or not self.monitors.changed:
            return
        if self.monitors.overhead.allows():
            with self.monitors.overhead.timed():
                self.recorder.save_monitors(self.monitors.state_dict())
            self.monitors.changed = False

    def load_state_dict(self, state: dict, best: dict | None) -> None:
        """Restore a position saved by :meth:`state_dict` (and the best weights, if any)."""
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])  # first: it may add parameter groups
        self.optimizer.load_state_dict(state["optimizer"])
        match_parameter_layout(self.optimizer)  # a checkpoint from a run with another train.channels_last
        self.interval.load_state_dict(state["interval"])
        self.guard.load_state_dict(state.get("guard"))
        if "monitors" in state:
            self.monitors.load_state_dict(state["monitors"])
        self.method.end_reason = state.get("method_end")
        self.early.load_state_dict(state.get("early_stop"))
        plan = state.get("plan")
        self.plan = None if plan is None else EpochPlan.from_state(plan, self.device)
        p = state["position"]
        self.pos = Position(p["epoch"], p["batch"], p["step"])
        b = state["best"]
        self.best = Selection(b["value"], b["epoch"], b["step"], dict(b["metrics"]))
        if best is not None:
            self._best_weights = {k: v.to(self.device) for k, v in best["model"].items()}
            self._best_method = best["method"]
        restore_rng(state["rng"])
        if "device_rng" in state and self.device.type == "cuda":  # the training device's own generator:
            torch.cuda.set_rng_state(state["device_rng"].cpu(), self.device)  # another rank's or GPU's index
