"""The monitors of a run: online probes and critics during training, estimators at evaluation.

:class:`Monitors` combines the estimators of this package behind the four calls the trainer makes:

==================  ================================================================================
``observe_step``    after each training step; every ``update_every`` steps it scores the batch with
                    the probes and critics (the running training values) and then takes one Adam
                    step of each on the batch's detached features
``grad_norms``      after backward, at logging steps: ``grad/<m>`` per encoder
``interval_values`` each logging interval: the running ``mi/<m>`` and ``mi/<a>;<b>`` of the interval
``evaluate``        once per evaluation, on the whole split: ``mi/<m>``, ``cmi/<m>``,
                    ``mi/<a>;<b>``, ``shapley/<m>``, ``imbalance``
==================  ================================================================================

Every value is a 0-d tensor on the device; nothing here synchronises with the host. The monitors
never touch the model's graph or gradients, and never draw from the global random number
generators (their modules are initialised under a forked CPU RNG seeded with ``cfg.seed`` and
their permutations come from their own generator), so switching them on or off leaves training
bit-for-bit unchanged.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models import ModelOutput, MultimodalModel
from .config import MonitorConfig
from .gradnorm import encoder_grad_norms, grad_name
from .infonce import PairCritics, modality_pairs, pair_name
from .passes import HeadFn, additive_passes, head_passes, identity_rows
from .permutation import conditional_information, replacement_rows_all
from .probe import LinearProbes, entropy, information_bound, information_bounds, label_entropy, mean_cross_entropies
from .budget import EvalBudget
from .overhead import OverheadBudget
from .shapley import (coalition_index, coalition_masks, imbalance, masks_of_codes, sampled_shapley_matrix,
                      shapley_matrix)


def mi_name(m: str) -> str:
    return f"mi/{m}"


def cmi_name(m: str) -> str:
    return f"cmi/{m}"


def shapley_name(m: str) -> str:
    return f"shapley/{m}"


IMBALANCE = "imbalance"
MIN_HEAD_SAMPLES = 256          # rows of the split the head passes use at least, whatever eval_head_rows says
INFONCE_CHUNK = 1 << 22         # critic scores (all pairs) held at once when scoring an evaluation split


@dataclass
class _Rows:
    """One evaluation split's tensors, row-aligned."""

    features: dict[str, torch.Tensor]
    logits: dict[str, torch.Tensor]
    fused: torch.Tensor
    y: torch.Tensor

    def subset(self, limit: int) -> "_Rows":
        """At most ``limit`` evenly spaced rows (all rows when there are no more than that)."""
        n = self.y.shape[0]
        if n <= limit:
            return self
        rows = torch.arange(limit, device=self.y.device) * n // limit

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, rows)
        return _Rows({m: pick(z) for m, z in self.features.items()}, {m: pick(z) for m, z in self.logits.items()},
                     pick(self.fused), pick(self.y))


def _no_autocast(device: torch.device):
    """The monitors' own modules run in float32 even if the caller is inside an autocast region."""
    try:
        return torch.autocast(device.type, enabled=False)
    except RuntimeError:
        return nullcontext()


def _adam(groups: list[dict]) -> torch.optim.Optimizer:
    """Adam over the probe and critic parameter groups, fused into one kernel where the device allows."""
    try:
        return torch.optim.Adam(groups, fused=True)
    except RuntimeError:
        return torch.optim.Adam(groups, foreach=True)


def _same_shapes(current: dict, saved: dict) -> bool:
    """True when ``saved`` has exactly the keys of ``current`` with the same tensor shapes."""
    return current.keys() == saved.keys() and all(current[k].shape == saved[k].shape for k in current)


class Monitors:
    """Live imbalance and information monitors of one run (see the module docstring)."""

    def __init__(self, cfg: MonitorConfig, modalities: list[str], feature_dims: dict[str, int], n_classes: int,
                 class_prior: torch.Tensor, device: torch.device, distributed: bool = False):
        self.cfg = cfg
        self.modalities = list(modalities)
        self.n_classes = n_classes
        self.device = torch.device(device)
        prior = class_prior.to(self.device).double()
        self.prior_entropy = entropy(prior / prior.sum())
        self.pairs = modality_pairs(self.modalities)
        on = cfg.enabled
        self.use_mi = on and cfg.mi
        self.use_cmi = on and cfg.cmi
        self.use_pairs = on and cfg.pairwise and bool(self.pairs)
        exact = len(self.modalities) <= cfg.shapley_max_modalities
        self.use_shapley = on and cfg.shapley and (exact or cfg.shapley_permutations > 0)
        self.use_grad = on and cfg.grad
        # built once: a host-to-device copy at each evaluation would synchronise on CUDA
        self.shapley_weights, self.coalitions = (self._shapley_plan(exact) if self.use_shapley else (None, None))
        self.budget = EvalBudget(cfg.eval_time_budget, self.device)
        # half of max_overhead for the probe/critic updates (and writing their state), half for the evaluations,
        # so that the updates, every few steps, do not leave no room for the estimators; the ranks of a
        # multi-process run must decide alike without a collective: no overhead budget there
        share = 0.0 if distributed else cfg.max_overhead / 2
        self.overhead, self.eval_overhead = OverheadBudget(share), OverheadBudget(share)
        self.evaluations = 0   # evaluations run on the validation split (the first always runs)
        self.changed = False   # probes or critics trained since the state was last written apart (trainer)
        dims = {m: int(feature_dims[m]) for m in self.modalities}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.probes = LinearProbes(dims, prior.cpu()).to(self.device) if self.use_mi else None
            self.critics = (PairCritics(dims, cfg.critic_hidden, cfg.critic_embed).to(self.device)
                            if self.use_pairs else None)
        groups = [{"params": list(module.parameters()), "lr": lr}
                  for module, lr in ((self.probes, cfg.probe_lr), (self.critics, cfg.critic_lr)) if module is not None]
        self.optimizer = _adam(groups) if groups else None
        self.sums: torch.Tensor | None = None   # running sums of interval_names(), in that order
        self.count = 0
        self.last: dict[str, torch.Tensor] = {}
        self.skipped_on_load: list[str] = []

    def _shapley_plan(self, exact: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, masks): phi = W v over the coalitions of ``masks`` (C, M), the full coalition last; every
        coalition when ``exact``, else those of ``shapley_permutations`` sampled orders (:mod:`.shapley`)."""
        m = len(self.modalities)
        if exact:
            return shapley_matrix(m, self.device), coalition_masks(m, self.device)
        generator = torch.Generator().manual_seed(self.cfg.seed)
        codes, weights = sampled_shapley_matrix(m, self.cfg.shapley_permutations, generator)
        return weights.to(self.device), masks_of_codes(codes, m).to(self.device)

    # -- names ----------------------------------------------------------------------------------
    def interval_names(self) -> list[str]:
        """Names :meth:`interval_values` reports (once the first update has run)."""
        names = [mi_name(m) for m in self.modalities] if self.use_mi else []
        return names + ([pair_name(a, b) for a, b in self.pairs] if self.use_pairs else [])

    def grad_names(self) -> list[str]:
        return [grad_name(m) for m in self.modalities] if self.use_grad else []

    def eval_names(self) -> list[str]:
        """Names :meth:`evaluate` reports, in order."""
        names = [mi_name(m) for m in self.modalities] if self.use_mi else []
        names += [cmi_name(m) for m in self.modalities] if self.use_cmi else []
        names += [pair_name(a, b) for a, b in self.pairs] if self.use_pairs else []
        names += [shapley_name(m) for m in self.modalities] + [IMBALANCE] if self.use_shapley else []
        return names

    # -- training -------------------------------------------------------------------------------
    def observes(self, step: int) -> bool:
        """Whether :meth:`observe_step` uses the batch of ``step``: every ``update_every`` steps, the
        first always, the others while the updates are within their half of ``max_overhead`` (:mod:`.overhead`)."""
        if (self.probes is None and self.critics is None) or step % self.cfg.update_every:
            return False
        return self.count == 0 and not self.last or self.overhead.allows(("step", step))

    def evaluates(self) -> bool:
        """Whether the next validation is scored by the monitors: the first always, the others while
        the evaluations are within their half of ``max_overhead`` (a test split is always scored)."""
        return self.cfg.enabled and (self.evaluations == 0 or self.eval_overhead.allows())

    def observe_step(self, out: ModelOutput, y: torch.Tensor, step: int) -> None:
        """Every ``update_every`` steps: record the running values on this batch, then train the
        probes and critics one step on its detached features."""
        if not self.observes(step):
            return
        with self.overhead.timed():
            self._update(out, y)
        self.changed = True

    def _update(self, out: ModelOutput, y: torch.Tensor) -> None:
        features = {m: out.features[m].detach() for m in self.modalities}
        y = y.detach()
        values: list[torch.Tensor] = []   # blocks in the order of interval_names()
        losses: list[torch.Tensor] = []
        with torch.enable_grad(), _no_autocast(self.device):
            if self.probes is not None:   # every modality at once: one batched cross-entropy per kind of q
                probe_ce = mean_cross_entropies(list(self.probes(features).values()), y)
                values.append(information_bounds(self.prior_entropy, probe_ce.detach(), self._own_ces(out, y)))
                losses.append(probe_ce.sum())
            if self.critics is not None:
                rows = min(self.cfg.critic_batch, y.shape[0])
                bounds = self.critics.bounds({m: z[:rows] for m, z in features.items()})
                values.append(bounds.detach().double().clamp_min(0.0))
                losses.append(-bounds.sum())
            self.optimizer.zero_grad(set_to_none=True)
            (losses[0] if len(losses) == 1 else losses[0] + losses[1]).backward()
            self.optimizer.step()
        stacked = values[0] if len(values) == 1 else torch.cat(values)
        self.sums = stacked if self.sums is None else self.sums + stacked
        self.count += 1

    def _own_ces(self, out: ModelOutput, y: torch.Tensor) -> torch.Tensor | None:
        """(M,) cross-entropies of the modalities' own logits (+inf for a modality without its own logits,
        so that its probe alone counts), None when no modality has them."""
        own = [m for m in self.modalities if m in out.logits]
        if not own:
            return None
        ces = mean_cross_entropies([out.logits[m].detach() for m in own], y)
        if len(own) == len(self.modalities):
            return ces
        full = torch.full((len(self.modalities),), float("inf"), dtype=ces.dtype, device=ces.device)
        return full.index_copy(0, torch.tensor([self.modalities.index(m) for m in own], device=ces.device), ces)

    def grad_norms(self, model: MultimodalModel, known: dict[int, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """``{"grad/<m>": 0-d tensor}``: the L2 norm of each encoder's current gradients (None = 0);
        ``known``: gradient norms already taken, by parameter ``id`` (:func:`encoder_grad_norms`)."""
        if not self.use_grad:
            return {}
        with self.overhead.timed():   # every logging interval, not skipped, but counted with the updates
            return encoder_grad_norms(model.encoders, self.modalities, self.device, known)

    def interval_values(self) -> dict[str, torch.Tensor]:
        """Means of the running values over the updates since the last call (the last means when
        no update ran in between; empty before the first update)."""
        if self.count:
            means = self.sums / self.count
            self.last = dict(zip(self.interval_names(), means.unbind()))
            self.sums, self.count = None, 0
        return dict(self.last)

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, head_fn: HeadFn, features: dict[str, torch.Tensor], logits: dict[str, torch.Tensor],
                 fused: torch.Tensor, y: torch.Tensor, additive: bool = False,
                 validation: bool = True) -> dict[str, torch.Tensor]:
        """:meth:`_evaluate`, timed for ``max_overhead``; ``validation``: counted as a validation's
        evaluation (see :meth:`evaluates`)."""
        with self.eval_overhead.timed():
            out = self._evaluate(head_fn, features, logits, fused, y, additive)
        self.evaluations += int(validation and bool(out))
        return out

    @torch.no_grad()
    def _evaluate(self, head_fn: HeadFn, features: dict[str, torch.Tensor], logits: dict[str, torch.Tensor],
                  fused: torch.Tensor, y: torch.Tensor, additive: bool = False) -> dict[str, torch.Tensor]:
        """The estimators on one split's (features, per-modality logits, fused logits, labels).

        ``head_fn(features) -> (fused, logits)`` is the method's head; it is run on permuted
        copies (cmi) and coalitions (shapley), stacked along the batch. ``fused`` is taken as the
        head's output on the unchanged features (it gives the full coalition's accuracy and the
        unpermuted term of cmi). The probes and critics score at most ``eval_max_samples`` rows,
        the head passes at most ``eval_head_rows`` rows in all; larger splits are subsampled at
        evenly spaced rows (deterministic, the same rows every evaluation). ``additive``: the head's
        fused logits are the sum of its per-modality logits, each of its own modality's features
        (:meth:`engine.methods.base.Method.head_is_additive`): the head then runs once on the rows
        and the variants sum gathered logits (:func:`engine.monitor.passes.additive_passes`).
        """
        n = int(y.shape[0])
        if not self.cfg.enabled or n == 0:
            return {}
        split = _Rows({m: features[m] for m in self.modalities}, logits, fused, y)
        out: dict[str, torch.Tensor] = {}
        self.budget.start()
        scored = split.subset(self.budget.rows(self.cfg.eval_max_samples, MIN_HEAD_SAMPLES))
        with _no_autocast(self.device):
            if self.probes is not None:
                out.update(self._task_information(scored.features, scored.logits, scored.y))
            if self.critics is not None:
                rows = max(1, INFONCE_CHUNK // (scored.y.shape[0] * len(self.pairs)))
                bounds = self.critics.bounds(scored.features, rows)
                out.update({pair_name(a, b): bound for (a, b), bound in zip(self.pairs, bounds.clamp_min(0.0))})
        if self.use_cmi or self.use_shapley:
            limit = self.budget.rows(self.cfg.eval_head_rows // self._n_variants(), MIN_HEAD_SAMPLES)
            passes = split.subset(max(MIN_HEAD_SAMPLES, limit))
            out.update(self._head_estimates(head_fn, passes.features, passes.fused, passes.y, additive))
        self.budget.stop()
        return {k: out[k] for k in self.eval_names()}

    def _n_variants(self) -> int:
        """Head passes per evaluation row: K permuted copies per modality plus the coalitions but the full one
        (2^M - 1 exact, fewer sampled)."""
        m = len(self.modalities)
        coalitions = self.coalitions.shape[0] - 1 if self.use_shapley else 0
        return (m * self.cfg.cmi_permutations if self.use_cmi else 0) + coalitions

    def _task_information(self, features, logits, y) -> dict[str, torch.Tensor]:
        h_y = label_entropy(y, self.n_classes)
        ces = self.probes.cross_entropies(features, y)
        out = {}
        for m in self.modalities:
            candidates = [ces[m]]
            if m in logits:
                candidates.append(F.cross_entropy(logits[m].float(), y))
            out[mi_name(m)] = information_bound(h_y, candidates)
        return out

    def _head_estimates(self, head_fn: HeadFn, features, fused, y, additive: bool = False) -> dict[str, torch.Tensor]:
        """cmi/<m> and shapley/<m> from one batched set of head passes over all variants."""
        n, device = y.shape[0], y.device
        index: dict[str, list[torch.Tensor]] = {m: [] for m in self.modalities}
        copies: list[int] = []
        if self.use_cmi:
            generator = torch.Generator(device=device).manual_seed(self.cfg.seed)
            replacements = replacement_rows_all(features, self.cfg.cmi_permutations, self.cfg.cmi_conditional,
                                                generator)
            for m in self.modalities:
                replaced = replacements[m]
                copies.append(replaced.shape[0])
                for o in self.modalities:
                    index[o].append(replaced if o == m else identity_rows(replaced.shape[0], n, device))
        n_cmi = sum(copies)
        if self.use_shapley:
            masks = self.coalitions[:-1]  # the full coalition is ``fused``
            coalitions = coalition_index(masks, n, fill_row=n)
            for i, o in enumerate(self.modalities):
                index[o].append(coalitions[:, i])
        tables = {m: torch.cat([z, self._fill(z)[None]]) for m, z in features.items()}
        passes = additive_passes if additive else head_passes
        log_q, correct = passes(head_fn, tables, {o: torch.cat(v) for o, v in index.items()}, y, self.cfg.eval_head_rows)
        fused = fused.float()
        out = {}
        if self.use_cmi:
            log_q_full = fused.log_softmax(-1).gather(-1, y[:, None]).squeeze(-1)
            permuted = log_q[:n_cmi].split(copies)
            out.update({cmi_name(m): conditional_information(log_q_full, lq)
                        for m, lq in zip(self.modalities, permuted)})
        if self.use_shapley:
            full = (fused.argmax(-1) == y).double().mean()
            values = torch.cat([correct[n_cmi:].double().mean(1), full[None]])
            phi = self.shapley_weights @ values
            out.update({shapley_name(m): phi[i] for i, m in enumerate(self.modalities)})
            out[IMBALANCE] = imbalance(phi)
        return out

    def _fill(self, z: torch.Tensor) -> torch.Tensor:
        """The feature row an absent modality gets in a coalition (zeros or the split's mean)."""
        if self.cfg.shapley_fill == "mean":
            return z.float().mean(0).to(z.dtype)
        return z.new_zeros(z.shape[1:])

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Probe and critic weights, their optimiser states and the running sums (tensors and
        primitives only, so ``torch.load(weights_only=True)`` reads it)."""
        state: dict = {"names": self.interval_names(), "sums": self.sums, "count": self.count,
                       "last": dict(self.last), "overhead": self.overhead.state_dict(),
                       "eval_overhead": self.eval_overhead.state_dict(),
                       "evaluations": self.evaluations}
        if self.probes is not None:
            state["probes"] = self.probes.state_dict()
        if self.critics is not None:
            state["critics"] = self.critics.state_dict()
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`. A component switched on since the checkpoint, or whose shape
        changed (e.g. another ``critic_hidden``), starts fresh, and so does the optimiser then; their
        names are kept in ``skipped_on_load``. Running sums of other names than now are dropped."""
        self.skipped_on_load = []
        for name, module in (("probes", self.probes), ("critics", self.critics)):
            if module is None:
                continue
            if name in state and _same_shapes(module.state_dict(), state[name]):
                module.load_state_dict(state[name])
            else:
                self.skipped_on_load.append(name)
        if self.optimizer is not None:
            same_groups = "optimizer" in state and not self.skipped_on_load and \
                len(state["optimizer"]["param_groups"]) == len(self.optimizer.param_groups)
            if same_groups:
                self.optimizer.load_state_dict(state["optimizer"])
            else:
                self.skipped_on_load.append("optimizer")
        same_names = state.get("names") == self.interval_names()
        self.sums = state["sums"].to(self.device) if same_names and state.get("sums") is not None else None
        self.count = int(state.get("count", 0)) if self.sums is not None else 0
        self.last = {k: v.to(self.device) for k, v in state.get("last", {}).items() if k in self.interval_names()}
        self.overhead.load_state_dict(state.get("overhead", {}))
        self.eval_overhead.load_state_dict(state.get("eval_overhead", {}))
        self.evaluations = int(state.get("evaluations", 0))
