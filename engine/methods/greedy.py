"""``greedy``: balanced multi-modal learning (Wu, Jastrzębski, Cho, Geras, "Characterizing and Overcoming
the Greedy Nature of Learning in Multi-modal Deep Neural Networks", ICML 2022; release
nyukat/greedy_multimodal_learning: ``Bias_Mitigation_Strong`` in ``src/callbacks.py``, ``MMTM_mitigate``
in ``src/balanced_mmtm.py``, ``configs/training_guided.gin``).

**Model.** The paper's network is intermediate fusion with MMTM modules (Joze et al. 2020) between the
uni-modal branches: mmbal's ``mmtm`` mid-fusion (``[model] mid_fusion = "mmtm"``,
:mod:`engine.models.mid_fusion.mmtm`), one module per placement, each with a joint (squeeze) layer over
every modality and one excitation layer per modality that gates that modality's channels. A model
without an MMTM gets one of the method's own (in the method's modules, saved and trained with them)
on the encoders' outputs: the MMTM placement "after the last stage", so that every preset has the
cross-modal path the algorithm re-balances (mmbal's; the paper always uses MMTM).

Per step (:meth:`Greedy.train_step`), one forward, the fused cross-entropy, one backward, one update:

1. **Conditional learning speed** (paper Sec. 4.2). For modality m, the *main* parameters are encoder
   m's, the *bypass* parameters those through which the other modalities reach m's branch: the joint
   layer and m's excitation layer of every MMTM (``MMTM.bypass_parameters(m)``; the joint layer is in
   every modality's bypass, as the release counts its shared ``fc_squeeze``). After the backward of every
   regular step, mu(theta) = ||grad theta||^2 / ||theta||^2 (sums over the group's tensors) of both groups
   is added to running sums that start at the first step of the run, and
   ``BDR_m = log10( sum_t mu(bypass_m, t) / sum_t mu(main_m, t) )``,
   the speed at which m's branch learns from the other modalities relative to m itself. The sums are
   not updated in re-balancing steps (the release computes the BDR in regular steps only).
2. **Imbalance.** Two modalities: d_BDR = BDR_0 - BDR_1 (the release's ``d_BDR``). Any M (mmbal's
   generalisation, one-vs-mean-of-others): d_m = BDR_m - mean_{k != m} BDR_k; for M = 2,
   d_0 = d_BDR and d_1 = -d_BDR exactly; sum_m d_m = 0.
3. **Re-balancing windows** (Algorithm 1). From epoch ``start_epoch`` on, a regular step whose
   max_m d_m exceeds ``epsilon`` (M = 2: |d_BDR| > epsilon) makes the next ``window`` steps re-balancing
   steps for the *caring* modality c = argmax_m d_m (M = 2: m_0 when d_BDR > 0, else m_1, as the
   release); then a regular step again, which may open the next window at once. The window counter and
   c carry over epoch boundaries.
4. **A re-balancing step** is a regular step in which c's MMTM gates, at every placement, are held at
   their running mean (per channel, the mean over the training steps so far of the batch-mean gates,
   ``MMTM.running_gate``: the same for every sample, no gradient), the release's ``curation_mode``: c's
   branch gets no input from the other modalities and learns from c alone, while the others' gates
   still follow the MMTM (and see c). So inside a window c's excitation layers get a zero gradient,
   the joint layer learns only through the other modalities' gates, and every encoder and the head learn.

**Conditional utilisation rate** (the paper's diagnostic, Sec. 3): with ``utilisation`` on, after each
epoch's evaluation, ``method/util_given_<m>`` = (A(f) - A(f'_m)) / A(f) on the validation split, A(f) the
fused accuracy and A(f'_m) the accuracy of m's own logits with m's gates held as in a re-balancing step
(m's branch without cross-modal input): u(others | m), the relative gain m's branch owes to the other
modalities (M = 2: u(m_1 | m_0) is ``util_given_<m_0>``). M extra validation passes per epoch.

Deviations from the release, on purpose:

* **On the device.** The release reads ``(w ** 2).sum().item()`` and the gradient's for every parameter
  tensor and decides on the host each step. Here the norms are one ``torch._foreach_norm`` over weights
  and one over gradients, grouped by a membership mask; the sums, the window counter and c are device
  tensors and the held gates are chosen with ``torch.where`` (no host synchronisation in a step).
* **Running gate means:** each modality's from its own gates and in training steps only (the release
  updates its second modality's from the first's gates, ``running_avg_weight_skeleton`` from ``vis_out``,
  and also while evaluating); in a multi-process run the batch means are averaged over the ranks first,
  so every rank holds the same gates. The gate is MMTM's 2 sigmoid (release: sigmoid).
* **Main parameters** are the encoder's; the release counts its whole branch network, including the
  branch's own classifier. mmbal's fusion heads differ (a concat head's slices, FiLM, gates), so no
  head parameter belongs to either group.
* ``start_epoch`` counts from 0: 1 is the release's ``starting_epoch = 2`` (its epochs count from 1),
  one epoch of regular training first. The sums are float32 (release: Python floats); a non-finite mu
  (a skipped, non-finite step) adds 0.
* ``method/rebalancing`` and ``coef/<m>`` describe the step just taken (the release logs the flag set for
  the next step). The release's random variant (``Bias_Mitigation_Random``) is not implemented.

Live values per step (0-d device tensors): ``method/d_bdr`` (d of the first modality: the release's
d_BDR for M = 2; during a window the value that opened it), ``method/rebalancing`` (1 in a re-balancing
step), ``score/<m>`` (d_m), ``coef/<m>`` (0 when m's gates were held in this step, i.e. m is the caring
modality of a window; 1 otherwise), ``method/bdr_<m>`` (BDR_m).
Cost vs ``joint``: MMTM's, two fused norms over the encoder and MMTM parameters per step; per epoch, M
validation passes for the utilisation rates.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``epsilon``, 0.001 (BalanceMM, beside
the paper's and release's 0.01) and 0.1 (ours, the same factor above; the sources give no other value).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..collectives import all_reduce_mean
from ..errors import PresetError
from ..models import ModelOutput
from ..models.encoders.stages import StageShape
from ..models.mid_fusion.mmtm import MMTM, MMTMConfig
from ..schema import opt
from . import METHODS
from .base import Method, StepResult

TINY = 1e-30   # floor of a norm sum (a group of zero weights) and of the speed sums before the log


@dataclass(frozen=True)
class GreedyConfig:
    epsilon: float = opt(0.01, ge=0.0, help="alpha, the imbalance tolerance: a window opens when max_m d_m exceeds "
                                            "it (paper and release 0.01; BalanceMM 0.001)")
    window: int = opt(5, ge=1, help="Q, the re-balancing steps of a window (release curation_windowsize 5)")
    start_epoch: int = opt(1, ge=0, help="first epoch (0-based) in which a window may open (release "
                                         "starting_epoch = 2, counted from 1)")
    utilisation: bool = opt(True, help="after each evaluation, the conditional utilisation rates on the validation "
                                       "split (M extra validation passes)")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def balance_ratios(sums: torch.Tensor) -> torch.Tensor:
    """BDR_m = log10(bypass sum / main sum) from (2, M) speed sums (row 0 bypass, row 1 main)."""
    s = sums.clamp_min(TINY)
    return torch.log10(s[0]) - torch.log10(s[1])


def others_mean_matrix(n: int, device=None) -> torch.Tensor:
    """(M, M): row m averages the other modalities (0 on the diagonal, 1 / (M - 1) elsewhere)."""
    return (1.0 - torch.eye(n, device=device)) / max(n - 1, 1)


def imbalance(bdr: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """d_m = BDR_m - mean_{k != m} BDR_k (elementwise products, no matmul: exact for M = 2, no TF32)."""
    return bdr - (others * bdr).sum(-1)


def group_speeds(weights: list[torch.Tensor], grads: list[torch.Tensor], member: torch.Tensor) -> torch.Tensor:
    """mu per group: (member @ ||g||^2) / (member @ ||w||^2) for a (G, P) 0/1 membership mask over P tensors,
    with two fused norms; a non-finite mu is 0."""
    w = torch.stack(torch._foreach_norm(weights)).float().square()
    g = torch.stack(torch._foreach_norm(grads)).float().square()
    mu = (member * g).sum(-1) / (member * w).sum(-1).clamp_min(TINY)
    return torch.where(mu.isfinite(), mu, torch.zeros_like(mu))


@METHODS.register("greedy", config=GreedyConfig,
                  help="balanced multi-modal learning: when the conditional learning speeds (BDR) of the MMTM "
                       "branches drift apart, windows hold the under-used modality's gates at their mean "
                       "(Wu et al. 2022)",
                  paper="Wu, Jastrzębski, Cho, Geras: Characterizing and Overcoming the Greedy Nature of Learning "
                        "in Multi-modal Deep Neural Networks, ICML 2022",
                  optimizer="sgd",
                  cost="1F + 1B (+ MMTM) + 2 fused norms; per epoch M validation passes (utilisation)",
                  live={"method/d_bdr": "d of the first modality: BDR_0 - BDR_1 for two modalities (the release's "
                                        "d_BDR); during a window, the value that opened it",
                        "method/rebalancing": "1 in a re-balancing step (the caring modality's MMTM gates held at "
                                              "their running mean), 0 in a regular step",
                        "score/<m>": "d_m = BDR_m - mean of the other modalities' BDR; a window cares for the "
                                     "largest when it exceeds epsilon",
                        "coef/<m>": "0 when modality m's MMTM gates were held in this step (m is the caring "
                                    "modality: no cross-modal input into its branch), 1 otherwise",
                        "method/bdr_<m>": "BDR_m = log10 of the summed speed ||g||^2/||w||^2 of m's bypass (MMTM "
                                          "joint and m's excitation layers) over that of m's encoder",
                        "method/util_given_<m>": "per epoch, conditional utilisation rate u(others | m) = (A(fused) "
                                                 "- A(m's logits with m's gates held)) / A(fused) on validation",
                        "method/head_ce": "cross-entropy training the per-modality heads on detached features "
                                          "(non-additive fusions)"},
                  tune={"epsilon": (0.001, 0.1)})
class Greedy(Method):
    """Balanced multi-modal learning; see the module docstring."""

    def __init__(self, cfg: GreedyConfig, ctx):
        super().__init__(cfg, ctx)
        M = len(ctx.modalities)
        if M < 2:
            raise PresetError("method", [f"method.name: {self.name} balances modalities against each other and needs "
                                         f"at least two; this run has {M} ({', '.join(ctx.modalities)})"])
        device = ctx.device
        self.sums = torch.zeros(2, M, device=device)                    # row 0: bypass, row 1: main
        self.left = torch.zeros((), dtype=torch.long, device=device)    # re-balancing steps still to come
        self.caring = torch.zeros((), dtype=torch.long, device=device)  # the window's caring modality
        self._window = torch.full((), cfg.window, dtype=torch.long, device=device)
        self._index = torch.arange(M, device=device)
        self._others = others_mean_matrix(M, device)
        self._zero = torch.zeros((), device=device)
        self._util: dict[str, float] = {}

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self, model):
        mods = self.ctx.modalities
        self.mmtms = [mod for mod in model.mid_fusions if isinstance(mod, MMTM)]
        self.own = None
        if not self.mmtms:   # no MMTM in the model: one of ours on the encoders' outputs
            shapes = {m: StageShape((int(model.encoders[m].out_dim),), 0) for m in mods}
            self.modules["mmtm"] = self.own = MMTM(MMTMConfig(stages=[-1]), shapes)
            self.mmtms = [self.own]
        params: list[torch.nn.Parameter] = []
        seen: dict[int, int] = {}

        def index(p) -> int:
            if id(p) not in seen:
                seen[id(p)] = len(params)
                params.append(p)
            return seen[id(p)]

        groups = [[index(p) for mmtm in self.mmtms for p in mmtm.bypass_parameters(m)] for m in mods]
        groups += [[index(p) for p in model.encoder_parameters(m)] for m in mods]
        member = torch.zeros(len(groups), len(params), device=self.ctx.device)
        for row, cols in enumerate(groups):
            member[row, cols] = 1.0
        self._params, self._member = params, member

    # -- the forward with held gates ---------------------------------------------------------------
    def _gate(self, mmtm: MMTM, h: dict[str, torch.Tensor], hold: torch.Tensor | None,
              track: bool) -> dict[str, torch.Tensor]:
        """MMTM's forward, with the gates of the modalities where ``hold`` (M,) is True replaced by their
        running means (``MMTM.forward`` with ``freeze_gates``, selected on the device)."""
        gates = mmtm.gates(h)
        if track:
            self._track(mmtm, gates)
        if hold is not None:
            means = mmtm.running_gates()
            gates = {m: torch.where(hold[i], means[m].to(g.dtype).expand_as(g), g)
                     for i, (m, g) in enumerate(gates.items())}
        return {m: h[m] * mmtm.broadcastable(gates[m], h[m], m) for m in mmtm.modalities}

    @staticmethod
    @torch.no_grad()
    def _track(mmtm: MMTM, gates: dict[str, torch.Tensor]) -> None:
        """``MMTM.track`` with the batch means averaged over the ranks (the same held gates on every rank)."""
        batch_mean = all_reduce_mean(torch.cat([gates[m].detach().float().mean(0) for m in mmtm.modalities]))
        mmtm.gate_steps += 1
        mmtm.running_gate.lerp_(batch_mean, 1.0 / mmtm.gate_steps.to(batch_mean.dtype))

    def encode(self, model, x: dict[str, torch.Tensor], hold: torch.Tensor | None = None,
               track: bool = False) -> dict[str, torch.Tensor]:
        """The model's features with the MMTMs run by :meth:`_gate` (``model.encode``'s stage walk)."""
        if self.own is not None:
            return self._gate(self.own, model.encode(x), hold, track)
        mods = model.modalities
        h = {m: x[m] for m in mods}
        done = dict.fromkeys(mods, 0)
        for after, module in zip(model.mid_fusion_stages, model.mid_fusions):
            h = {m: model.encoders[m](h[m], start=done[m], stop=after[m] + 1) for m in mods}
            h = self._gate(module, h, hold, track) if isinstance(module, MMTM) else module(h)
            done = {m: after[m] + 1 for m in mods}
        return {m: model.encoders[m](h[m], start=done[m]) for m in mods}

    def predict(self, model, x):
        if self.own is None:
            return super().predict(model, x)
        features = self.encode(model, x)
        fused, logits = self.head(model, features)
        return ModelOutput(fused=fused, logits=logits, features=features)

    # -- one step ---------------------------------------------------------------------------------
    def train_step(self, x, y, step):
        model, mods, cfg = step.model, self.ctx.modalities, self.cfg
        rebalancing = self.left > 0
        hold = rebalancing & (self._index == self.caring)
        with step.autocast():
            features = self.encode(model, x, hold, track=model.training)
            fused, logits = self.head(model, features)
        out = ModelOutput(fused=fused, logits=logits, features=features)
        loss = F.cross_entropy(out.fused.float(), y)
        heads = self.modality_head_loss(out, y, step)
        step.backward(loss if heads is None else loss + heads)
        with torch.no_grad():
            grads = [self._zero if p.grad is None else p.grad for p in self._params]
            mu = group_speeds(self._params, grads, self._member).view(2, len(mods))
            regular = ~rebalancing
            self.sums = self.sums + torch.where(regular, mu, torch.zeros_like(mu))
            bdr = balance_ratios(self.sums)
            d = imbalance(bdr, self._others)
            counted_down = (self.left - 1).clamp_min(0)
            if step.epoch >= cfg.start_epoch:
                top, best = d.max(0)
                opens = regular & (top > cfg.epsilon)
                self.caring = torch.where(opens, best, self.caring)
                self.left = torch.where(opens, self._window, counted_down)
            else:
                self.left = counted_down
        d_m = d.unbind()
        live = {"method/d_bdr": d_m[0], "method/rebalancing": rebalancing.float()}
        if heads is not None:
            live["method/head_ce"] = heads.detach()
        for m, kept, score, bdr_m in zip(mods, (~hold).float().unbind(), d_m, bdr.unbind()):
            live.update({f"coef/{m}": kept, f"score/{m}": score, f"method/bdr_{m}": bdr_m})
        self.optimizer_step(step)
        return StepResult(loss.detach(), out, live)

    # -- the diagnostic ---------------------------------------------------------------------------
    @torch.no_grad()
    def utilisation(self, model, fused_accuracy: float) -> dict[str, float]:
        """{m: u(others | m)} on the validation split (see the module docstring)."""
        mods = self.ctx.modalities
        was_training = model.training
        model.eval()
        correct = torch.zeros(len(mods), dtype=torch.long, device=self.ctx.device)
        rows = 0
        try:
            for x, y in self.ctx.data.eval_batches("val", self.ctx.eval_batch_size):
                for i, m in enumerate(mods):
                    features = self.encode(model, x, self._index == i)
                    _, logits = self.head(model, features)
                    correct[i] += (logits[m].argmax(-1) == y).sum()
                rows += y.numel()
        finally:
            model.train(was_training)
        alone = [c / max(rows, 1) for c in correct.tolist()]
        if fused_accuracy <= 0:
            return {m: 0.0 for m in mods}
        return {m: (fused_accuracy - a) / fused_accuracy for m, a in zip(mods, alone)}

    def on_epoch_end(self, epoch, model, val):
        self._util = {}
        if self.cfg.utilisation and "val/acc/fused" in val and self.ctx.data is not None:
            self._util = self.utilisation(model, float(val["val/acc/fused"]))
        return []

    def epoch_values(self):
        return {f"method/util_given_{m}": u for m, u in self._util.items()}

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        return {**super().state_dict(), "sums": self.sums.clone(), "left": self.left.clone(),
                "caring": self.caring.clone()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        device = self.ctx.device
        self.sums = state["sums"].to(device)
        self.left = state["left"].to(device)
        self.caring = state["caring"].to(device)
