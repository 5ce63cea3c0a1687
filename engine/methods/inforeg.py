"""``inforeg``: Information Acquisition Regulation (Huang, Wei, Yang, Hu, "Adaptive Unimodal Regulation for
Balanced Multimodal Information Acquisition", CVPR 2025; release GeWu-Lab/InfoReg_CVPR2025 ``main.py``).

Early in training (the *prime learning window*) the information-sufficient modality acquires most of the
dataset's information and suppresses the others. InfoReg measures each encoder's information acquisition
by the trace of its (empirical, diagonal) Fisher information and, while the window is open, slows the
leading encoder down with a proximal term that pulls it back towards where it stood at the start of
the epoch.

Each step (:meth:`InfoReg.train_step`):

1. **Loss**: L = CE(fused, y) + sum_m CE(l_m, y), the fused loss plus every modality's own
   cross-entropy (the release back-propagates the three losses together). l_m is modality m's own
   logits: its slice of the ``concat`` head (W_m z_m + b / M), its ``sum`` head, or its own head under
   ``film`` / ``gated``; every head is therefore trained by the loss (``trains_modality_heads``). The
   release's current revision takes the concat head's slices too (an earlier one had separate unimodal
   heads). One backward of the sum gives the same gradients as the release's three ``backward`` calls.
2. **Fisher information**: tr F_m += sum over encoder m's parameters of grad^2, from the gradient of
   the loss (before the proximal term below), accumulated on the device each step; at the end of the
   epoch T_m = the epoch's sum over its steps / the number of steps.
3. **Scores**: s_m = sum_i softmax(l_m)_{i, y_i} over the (global) batch, as in the release (summed
   over the ranks of a multi-process run, so every rank regulates alike).
4. **Regulation**: a modality m that leads, gap_m = s_m - mean_{j != m} s_j > 0, and whose window is
   open, gets on its encoder's gradients g <- g + beta_m (theta - theta_start), theta_start = its
   parameters at the start of the epoch, with beta_m = c_m exp(tanh(gap_m)); beta_m = 0 otherwise.
   Since s_m is a sum over the batch, tanh saturates once the gap exceeds about two rows' worth of
   confidence, so beta is close to c e whenever a modality leads clearly (as in the release).

**Prime learning window**, decided at the start of each epoch e from the traces of the epochs before,
padded with ``window_epochs`` = W zero traces as the release pads its history:
k_m = (mean(T_{e-W} .. T_{e-1}) - mean(T_{e-W-1} .. T_{e-2})) / mean(T_{e-W} .. T_{e-1}), the relative
change of the W-epoch moving average of m's trace; the window of m is open while k_m > ``window_threshold``
(k = 1 at epoch 0). It is re-evaluated every epoch (the release does the same), so it may reopen.

**M modalities.** The paper's rule is for two (the higher-scoring one is regulated). Ours: modality m
is compared with the mean score of the others (as ``ogm`` does), so for M = 2 the leader is exactly the
paper's and gets beta = c exp(tanh(s_dom - s_weak)); for M >= 3 every modality above the mean of the
others is slowed, each with its own gap. Each modality's window is its own trace's: a modality is
slowed only while *it* is still in its prime learning window, which for the leading modality is the
paper's "window of the dominant modality".

Defaults: c = 0.95 for every modality (``strength``), W = 10 epochs, threshold 0.05; the release trains
with SGD (momentum 0.9, weight decay 1e-4, lr 2e-3, batch 64, 50 epochs, lr x 0.1 at epoch 30).

Deviations from the release, on purpose:

* **The strength c per modality.** The release hard-codes c = 0.95 for audio (its information-sufficient
  modality) and c = 0.1 for visual, by name. Ours is an option per modality in the preset's order
  (``strength = [0.95, 0.1]`` for the release's audio and visual); its default is the release's 0.95 of
  the information-sufficient modality for every modality, since nothing says in advance which one will
  lead. (An earlier revision of the release tested ``score_v < score_a`` in its visual branch, the same
  condition as the audio branch, so it never regulated visual, and used the threshold 0.04; the current
  one regulates either and uses 0.05.)
* **The window of the leading modality**, not of audio: the release computes the window from the audio
  trace only (audio is its dominant modality); ours follows the trace of the modality it would slow.
* **The trace of the Fisher information** is the sum of squared gradients over all of the encoder's
  parameters (the paper's trace), averaged over the epoch's steps; the release sums per-layer means
  over the weights of Conv2d/Linear layers only, and squares the gradient *after* adding the proximal
  term, which is no information about the data. The window's threshold compares relative changes, so a
  common scale does not matter.
* **Cost**: one forward and one backward of the summed loss; no diagnostic backward passes (the release
  runs three extra ones with ``retain_graph`` to log flattened gradients), no per-parameter identity
  search (the release tests ``any(p is q ...)`` over the encoder for each parameter, O(P^2) in Python),
  no ``.item()``: scores, gaps, coefficients and traces stay on the device. The epoch-start copy is of
  the encoders only (the release deep-copies the whole model).
* A step whose gradients are not finite (skipped by ``train.on_nonfinite = "skip"``) adds nothing to
  the trace.

Live values per step (0-d device tensors): ``coef/<m>`` (beta_m applied, 0 when m is not slowed),
``score/<m>`` (s_m / batch size: the mean true-class confidence), ``method/window_<m>`` (1 while m's
window is open). Per epoch, with validation: ``method/fim_trace_<m>`` (T_m) and ``method/fim_change_<m>``
(the k_m that decided this epoch's window).

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``window_threshold``, 0.04 (an earlier
revision of the release) and 0.1 (ours: a window that closes sooner). The proximal ``strength`` (release: 0.95
audio, 0.1 visual) is a per-modality list, which one declared value cannot fit to every preset's number of
modalities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..collectives import all_reduce_sum
from ..errors import PresetError
from ..schema import opt
from . import METHODS
from .base import Method, StepResult
from .ogm import score_sums

RELEASE_STRENGTH = 0.95   # the release's c for audio, its information-sufficient modality


@dataclass(frozen=True)
class InfoRegConfig:
    strength: list[float] = opt([], ge=0.0, help="c_m per modality in the preset's order, beta = c exp(tanh(gap)); "
                                                 "empty: 0.95 for every modality (release: 0.95 audio, 0.1 visual)")
    window_epochs: int = opt(10, ge=1, help="W: epochs of the moving average of the Fisher trace that decides the "
                                            "prime learning window (release 10)")
    window_threshold: float = opt(0.05, help="the window of a modality is open while the relative change of its "
                                             "trace's moving average exceeds this (release 0.05)")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def score_gaps(s: torch.Tensor) -> torch.Tensor:
    """gap_m = s_m - mean_{j != m} s_j, (M,); for M = 2: s_a - s_b and s_b - s_a."""
    m = s.shape[0]
    return s - (s.sum() - s) / max(m - 1, 1)


def proximal_strengths(gap: torch.Tensor, c: torch.Tensor, window_open: torch.Tensor) -> torch.Tensor:
    """beta_m = c_m exp(tanh(gap_m)) where m leads (gap > 0) and its window is open, else 0."""
    beta = c * torch.exp(torch.tanh(gap))
    return torch.where((gap > 0) & window_open, beta, torch.zeros_like(beta))


def window_changes(history: torch.Tensor, window: int) -> torch.Tensor:
    """k_m from the last W + 1 traces (M, W + 1), oldest first: the relative change of the W-epoch moving
    average, (T_new - T_oldest) / sum(last W); 0 where the last W traces are all 0 (no information)."""
    recent = history[:, 1:].sum(1)
    change = history[:, -1] - history[:, 0]
    return torch.where(recent > 0, change / recent.clamp_min(torch.finfo(recent.dtype).tiny),
                       torch.zeros_like(recent))


def squared_gradient_sums(grads: list[list[torch.Tensor]]) -> torch.Tensor:
    """sum of grad^2 over each (non-empty) group's tensors, (M,): one ``_foreach_norm`` over every tensor."""
    norms = torch._foreach_norm([g for group in grads for g in group])
    ends = [sum(len(group) for group in grads[:i + 1]) for i in range(len(grads))]
    return torch.stack([torch.stack(norms[a:b]).float().square().sum() for a, b in zip([0] + ends[:-1], ends)])


def pull_towards_(grads: list[torch.Tensor], params: list[torch.Tensor], anchors: list[torch.Tensor],
                  beta: torch.Tensor) -> None:
    """In place: g <- g + beta (theta - theta_start)."""
    diffs = torch._foreach_sub([p.detach() for p in params], anchors)
    torch._foreach_mul_(diffs, beta)
    torch._foreach_add_(grads, diffs)


# -- the method -------------------------------------------------------------------------------------
@METHODS.register("inforeg", config=InfoRegConfig,
                  help="information acquisition regulation: during the prime learning window (Fisher trace still "
                       "rising) the leading encoder is pulled back towards its epoch-start weights "
                       "(Huang et al. 2025, InfoReg)",
                  paper="Huang, Wei, Yang, Hu: Adaptive Unimodal Regulation for Balanced Multimodal Information "
                        "Acquisition, CVPR 2025",
                  optimizer="sgd",
                  cost="1F + 1B + squared-gradient sums + proximal term; a copy of the encoders per epoch",
                  live={"coef/<m>": "proximal strength beta_m = c_m exp(tanh(gap_m)) pulling encoder m towards its "
                                    "epoch-start weights; 0 when m does not lead or its window is closed",
                        "score/<m>": "mean true-class confidence softmax(l_m)_y of modality m's own logits on the "
                                     "batch",
                        "method/window_<m>": "1 while modality m is in its prime learning window (the relative "
                                             "change of its Fisher trace's moving average exceeds the threshold)",
                        "method/fim_trace_<m>": "trace of encoder m's empirical Fisher information: sum of squared "
                                                "loss gradients over its parameters, mean over the epoch's steps",
                        "method/fim_change_<m>": "relative change k_m of the moving average of m's Fisher trace that "
                                                 "decided this epoch's window"},
                  tune={"window_threshold": (0.04, 0.1)})
class InfoReg(Method):
    """See the module docstring."""

    trains_modality_heads = True

    def __init__(self, cfg: InfoRegConfig, ctx):
        super().__init__(cfg, ctx)
        mods, device = ctx.modalities, ctx.device
        self.require_modalities("slows the leading modality down against the others")
        if cfg.strength and len(cfg.strength) != len(mods):
            raise PresetError("method", [f"method.strength: {len(cfg.strength)} values for {len(mods)} modalities "
                                         f"({', '.join(mods)}); give one per modality, or none for "
                                         f"{RELEASE_STRENGTH} each"])
        self.c = torch.tensor(cfg.strength or [RELEASE_STRENGTH] * len(mods), device=device)
        m = len(mods)
        self.history = torch.zeros(m, cfg.window_epochs + 1, device=device)   # traces, oldest first
        self.change = torch.ones(m, device=device)          # k_m of the current epoch
        self.window = torch.ones(m, dtype=torch.bool, device=device)
        self.any_open = True                                # host copy of window.any(), one sync per epoch
        self.epochs_seen = 0
        self.fim_sum = torch.zeros(m, device=device)        # this epoch's sums of squared gradients
        self.fim_steps = torch.zeros((), device=device)     # and its steps with finite gradients
        self.anchors: dict[str, list[torch.Tensor]] = {}
        self._epoch_values: dict[str, torch.Tensor] = {}

    # -- the epoch --------------------------------------------------------------------------------
    def on_epoch_start(self, epoch, model):
        """The window of this epoch from the traces so far, and the encoders' epoch-start copy."""
        if self.epochs_seen > 0:
            self.change = window_changes(self.history, self.cfg.window_epochs)
        self.window = self.change > self.cfg.window_threshold
        self.any_open = bool(self.window.any())   # the epoch's one host transfer
        self.anchors = {m: [p.detach().clone() for p in model.encoder_parameters(m)] for m in self.ctx.modalities}
        self.fim_sum.zero_()
        self.fim_steps.zero_()
        return []

    def on_epoch_end(self, epoch, model, val):
        trace = self.fim_sum / self.fim_steps.clamp_min(1.0)
        self.history = torch.cat([self.history[:, 1:], trace[:, None]], dim=1)
        self.epochs_seen += 1
        mods = self.ctx.modalities
        self._epoch_values = {**{f"method/fim_trace_{m}": trace[i] for i, m in enumerate(mods)},
                              **{f"method/fim_change_{m}": self.change[i] for i, m in enumerate(mods)}}
        return []

    def epoch_values(self):
        return dict(self._epoch_values)

    # -- the step ---------------------------------------------------------------------------------
    def train_step(self, x, y, step):
        mods, model = self.ctx.modalities, step.model
        with step.autocast():
            out = self.forward(model, x)
        loss = F.cross_entropy(out.fused.float(), y) + sum(F.cross_entropy(out.logits[m].float(), y) for m in mods)
        step.backward(loss)
        params = [[p for p in model.encoder_parameters(m) if p.grad is not None] for m in mods]
        grads = [[p.grad for p in group] for group in params]
        self._accumulate_fisher(grads)
        sums = all_reduce_sum(torch.cat([score_sums(torch.stack([out.logits[m] for m in mods]), y),
                                         torch.full((1,), y.shape[0], dtype=torch.float32, device=y.device)]))
        s, n = sums[:-1], sums[-1]
        beta = proximal_strengths(score_gaps(s), self.c, self.window)
        if self.any_open:   # closed everywhere: beta is 0, the pull would add zeros
            for i, m in enumerate(mods):
                anchors = [a for p, a in zip(model.encoder_parameters(m), self.anchors[m]) if p.grad is not None]
                pull_towards_(grads[i], params[i], anchors, beta[i])
        self.optimizer_step(step)
        live = {}
        window = self.window.float()
        for i, m in enumerate(mods):
            live[f"coef/{m}"] = beta[i]
            live[f"score/{m}"] = s[i] / n
            live[f"method/window_{m}"] = window[i]
        return StepResult(loss.detach(), out, live)

    def _accumulate_fisher(self, grads: list[list[torch.Tensor]]) -> None:
        """Adds this step's squared-gradient sums (a non-finite step adds nothing and is not counted)."""
        sq = squared_gradient_sums(grads)
        ok = sq.isfinite().all()
        self.fim_sum.add_(torch.where(ok, sq, torch.zeros_like(sq)))
        self.fim_steps.add_(ok.float())

    # -- resume -----------------------------------------------------------------------------------
    def state_dict(self):
        return {"modules": self.modules.state_dict(), "history": self.history.clone(),
                "change": self.change.clone(), "window": self.window.clone(), "epochs_seen": self.epochs_seen,
                "fim_sum": self.fim_sum.clone(), "fim_steps": self.fim_steps.clone(),
                "anchors": {m: [a.clone() for a in v] for m, v in self.anchors.items()},
                "epoch_values": dict(self._epoch_values)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        device = self.ctx.device
        self.history = state["history"].to(device).clone()
        self.change = state["change"].to(device).clone()
        self.window = state["window"].to(device).clone()
        self.any_open = bool(self.window.any())
        self.epochs_seen = int(state["epochs_seen"])
        self.fim_sum = state["fim_sum"].to(device).clone()
        self.fim_steps = state["fim_steps"].to(device).clone()
        self.anchors = {m: [a.to(device).clone() for a in v] for m, v in state["anchors"].items()}
        self._epoch_values = {k: v.to(device) for k, v in state["epoch_values"].items()}
