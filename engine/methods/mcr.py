"""``mcr``: the Multimodal Competition Regularizer (Kontras et al., "Multimodal Competition
Regularizer", arXiv 2411.07335, NeurIPS 2025; code kkontras/MCR, kkontras/Synergy).

The training loss is (the paper's objective)

    L = CE(F(z), y) + w_u * sum_m CE(h_m(z_m), y) + L_MIPD + c_con * L_Con + lib * L_CEB

* **L_MIPD**, the latent-permutation game. N permutations of the batch are drawn per modality
  (independently, ``randperm`` semantics: fixed points allowed). For a set S of modalities,
  ``J(S) = mean_rows JSD(softmax F(z with the modalities in S row-permuted), softmax P)`` with
  ``P = F(z)`` the unpermuted fused logits: how much the prediction depends on S beyond the rest.
  Every J is taken for one *receiver* encoder r: the features of every other modality are
  detached, so J_{r|S} moves only encoder r. The games (README: the gradient reaching encoder r
  is ``-lambda (grad J_r + k grad J_other)``, k = -1 / 0 / +1):

  - ``greedy`` (k = -1): ``lambda * sum_r ( -sum_{S ∋ r} J_{r|S} + sum_{S ∌ r} J_{r|S} )`` — each
    encoder makes its own permutation matter more and the others' matter less;
  - ``ind`` (k = 0):     ``-lambda * sum_r sum_{S ∋ r} J_{r|S}``;
  - ``colab`` (k = +1):  ``-lambda * sum_S J_{all|S}`` (nothing detached).

  For two modalities S runs over {1}, {2} and this is the released 2-modality rule
  (``-J11 + J21 - J22 + J12`` in greedy mode); for three it is the released 3-modality rule
  (``Bias_Infusion_MCR3D``: every non-empty proper subset, "own" and "min" terms). For M > 3,
  ``permuted_sets = "one_or_rest"`` (the default) keeps the 2M sets {m} and "all but m" (the same
  family as "all" when M <= 3) so the cost grows linearly, ``"all"`` uses all 2^M - 2 sets.
  In greedy mode the *value* of L_MIPD is 0 for M = 2 (J_{1|1} = J_{2|1} numerically), so the
  per-set J values are logged, not only the sum.

* **L_Con**: supervised NT-Xent over the stacked, L2-normalised features of all modalities with
  the labels repeated (``pytorch_metric_learning.losses.NTXentLoss`` semantics: for every
  positive pair (a, p), ``-log e^{s_ap/t} / (e^{s_ap/t} + sum_{y_n != y_a} e^{s_an/t})``, averaged
  over positive pairs). ``contrastive_labels = "pure"``: the only positives are the same sample's
  other modalities. Needs every encoder to output the same feature size.
* **L_CEB**: ``MSE([z_1, ..., z_M], g(sg(P)))`` with the decoder g = Linear(C -> h, no bias) ->
  ReLU -> Linear(h -> sum d_m, no bias), h = max d_m (the release's ``fc_yz`` with h = d). It lives
  in ``self.modules`` (saved and optimised with the model).

How the gradient routing is done (one encoder pass, one backward): the training pass's features
are reused. The blocks J_{r|S} of one set S all have the same value (detaching changes gradients,
not values), so the head runs on ``n_sets * N * B`` rows — each set's permuted/repeated features
stacked along the batch — and the game's blocks are folded into constant gradient scales
(``gradient_scales``): in set S, modality m's part carries ``g(m, S) = sum of the signs of the
blocks of S where m is live`` (greedy: -1 if m in S else +1; ind: -1 or 0; colab: -1), applied
with ``x.detach() + (x - x.detach()) * g``, which leaves the value bit for bit unchanged; what a
block shares with every other block (the head's shared parameters, the reference P) carries
``c_S = sum of the signs of all blocks of S``. Since ``dJ_{r|S}/d theta_r = dJ_S/d theta_r`` (the
other modalities' parts do not depend on theta_r), the backward pass gives each encoder exactly the
gradient of its own terms — the same as separate detached evaluations per block (checked against
that naive form in the tests), at 1/M of their head rows in greedy mode. The permuted rows are
taken with :class:`~engine.methods.mcr_routing.PermuteRows`, whose backward gathers by the inverse
permutations and sums over the N permutations: the backward of plain indexing (``z[idx]`` with every
row repeated N times) accumulates in a thread-dependent order on the CPU (and with atomics on CUDA),
which made two identical runs differ in the last bits.

The fusion head in the game (``game_head``):

* ``"player"`` (default, the paper's routing). Additive fusions (``concat``, ``sum``: the release's
  ``linear`` head, whose ``detach_a``/``detach_v`` flags detach a modality's whole logit contribution
  W_m z_m + b/2): the scale g(m, S) is put on modality m's logit contribution, so the head slice W_m
  (and its share b/M of the bias) follows encoder m in the game, exactly as in the release.
  Non-additive fusions (``film``, ``gated``; the release's flags detach a modality's input to the
  fusion): the scale is put on the features and the head's parameters take part in every block
  (``F(Z1s, sg(Z2r))`` with a live head), so they get ``c_S dJ_S/d theta``; the head then
  runs once per set with its parameters scaled by c_S, or once for all sets when every c_S is 0
  (greedy with M = 2, where the head's game gradient cancels exactly).
* ``"frozen"``: the permuted predictions are computed with the head's parameters detached
  (``torch.func.functional_call``), for every fusion, in one head call: a game between the
  encoders only, the head trained by the task losses and the P path.

Unimodal heads (``unimodal_heads``):

* ``"separate"`` (default, the release's): modality m's logits ``h_m(z_m)`` — the ones its unimodal
  cross-entropy trains and that ``*/acc/<m>`` reports — come from a Linear(d_m -> C) apart from the
  fusion head, as the release's encoders' own classifiers (``aclassifier``/``vclassifier``). For
  additive fusions, whose per-modality logits are parts of the fused ones, the method owns these
  heads (``self.modules["unimodal"]``, saved and optimised with the model); ``film`` and ``gated``
  have such heads already (their per-modality heads are not part of the fused logits). During
  pre-training only the encoders and these heads learn, so the MCR stage starts with a fresh fusion
  head, as the release's MCR runs after ``--pre``. With ``unimodal_weight = 0`` the heads are still
  trained, on detached features, so ``*/acc/<m>`` describes a trained classifier.
* ``"fusion"``: the fusion's per-modality logits (``concat``: the modality's slice of the fused linear
  head and b/M; ``sum``: its head inside the sum; the same as ``"separate"`` for ``film``/``gated``).
  The unimodal cross-entropies then train the fused head, and pre-training trains it too.

Fusion dropout: the permuted predictions are evaluated with the fusion's dropout off. When the
fusion has active dropout, the reference P is the fusion's dropout-free prediction on the same
training features (one extra head call on B rows) rather than the training pass's P, so that a
permutation that moves nothing gives J = 0 (with fresh dropout masks in the permuted call, the
game would score the masks' difference). Dropout inside the encoders is shared: the features are
reused.

Deviations from the release, all deliberate:

* The release never adds L_MIPD and L_Con to the 2-modality loss (``Bias_Infusion_MCR.
  before_backward`` computes and logs them and returns the total unchanged): a bug
  we do not copy; here all terms are optimised.
* No second, eval-mode encoder pass for the permutations (the release's ``MCR_Model.shuffle_data``
  re-runs the encoders in eval mode): the training features are reused, as in the release's
  3-modality model and the standalone ``MCR_Model_Raf``.
* The N permutations are drawn independently per modality (as the released 3-modality code; the
  2-modality release reuses the same N for both modalities, which is the same in distribution).
* Permuted predictions include the fusion bias, like the unpermuted one (the standalone
  ``MCR_Model_Raf`` leaves it out of the permuted ones only). Numeric weights are used (the
  standalone's boolean ``l``/``lib`` bug is not copied); the 3-modality colab branch's typo
  (``all_p0`` three times) is not copied.
* ``reference_gradient = True`` (default) lets the game's gradient also flow through the
  unpermuted P into every encoder and the head, as both released versions do, with coefficient
  c_S; ``False`` treats P as a constant so each encoder gets exactly
  ``-lambda(grad J_own + k grad J_other)``. In greedy mode with M = 2 the two are identical (the
  P paths cancel).
* The ``--pre`` pipeline (two separate unimodal runs, then MCR from their encoders and unimodal
  heads with a fresh fusion head) is one run here: ``pretrain_epochs`` epochs of unimodal
  cross-entropies only (weight 1 each), then MCR, with one optimiser and one learning-rate
  schedule over the whole run.
* ``score/<m>`` is the release's permutation importance: the fused accuracy with every *other*
  modality permuted divided by the unpermuted fused accuracy (1 when the latter is 0), over the
  N*B permuted rows of the step.

Multi-process runs (:mod:`engine.train.data_parallel`): the permutation game and L_Con are functions of the
whole batch, so each rank gathers the other ranks' features, fused logits and labels
(:func:`engine.collectives.gather_rows`: its own rows keep their graph, the others' are constants) and
computes them on the global batch, with the same permutations on every rank (the global RNG is
identical on all ranks); the terms' gradients are multiplied by the number of ranks
(:func:`engine.collectives.global_batch_term`), so that the trainer's gradient average equals the
single-process gradient. The cross-entropies and L_CEB are means over rows and stay per shard.

Live values (0-d device tensors): ``method/ce_fused``, ``method/ce_<m>``; in the MCR stage, when
their weight is non-zero, ``method/J_<m>`` (J of modality m's own permutation; for sets of several
modalities ``method/J_<a>+<b>``), ``method/mipd`` (the signed, weighted L_MIPD), ``score/<m>``,
``method/contrastive`` and ``method/bottleneck`` (unweighted); ``coef/<m>`` is the game weight
lambda applied to encoder m (0 during pre-training). A term whose weight is 0 is neither computed
nor logged.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``game_weight`` 0.01 (AVE) and 0.001
(UCF101), beside 0.1 (CREMA-D), and ``unimodal_weight`` 1 (the transformer runs), the per-dataset ``--l`` and
``--multil`` of the release's ``run.sh``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .. import collectives
from ..errors import PresetError
from ..models import ModelOutput
from ..models.fusion import unimodal_heads
from ..monitor.probe import mean_cross_entropies
from ..schema import opt
from . import METHODS
from .base import Method
from .mcr_routing import dropout_off, has_active_dropout, head_parameters, permute_rows, with_gradient_scale

LOGIT_CLAMP = 1e7   # the release clamps logits to +-1e7 and probabilities to >= 1e-20 in its JSD
PROB_FLOOR = 1e-20


@dataclass(frozen=True)
class MCRConfig:
    """Defaults: the CREMA-D ResNet18 line of the paper's ``run.sh``, without ``--pre``."""

    game_weight: float = opt(0.1, ge=0.0, help="lambda: weight of the permutation game L_MIPD (--l; 0.1 CREMA-D, "
                                               "0.01 AVE, 0.001 UCF); 0 turns the game off")
    game: Literal["greedy", "ind", "colab"] = opt(
        "greedy", help="game: greedy (k=-1, the paper's), ind (k=0) or colab (k=+1) in grad = -lambda(J_own + k J_other)")
    n_permutations: int = opt(32, ge=1, le=4096, help="N: batch permutations per step (--num_samples)")
    permuted_sets: Literal["one_or_rest", "all"] = opt(
        "one_or_rest", help="sets of modalities permuted together: each one and all-but-one (2M sets), or every "
                            "non-empty proper subset (2^M-2); the same for M <= 3")
    reference_gradient: bool = opt(True, help="let the game's gradient flow through the unpermuted prediction "
                                              "(as the released code); false treats it as a constant")
    unimodal_weight: float = opt(0.01, ge=0.0, help="w_u: weight of each modality's own cross-entropy "
                                                    "(--multil; 0.01 ResNet runs, 1 transformer runs)")
    contrastive_weight: float = opt(1.0, ge=0.0, help="weight of the supervised NT-Xent term L_Con between "
                                                      "modalities (--contr_coeff); 0 turns it off")
    temperature: float = opt(0.5, ge=1e-3, help="NT-Xent temperature (0.5 release, 0.1 standalone code); "
                                                "cosines / temperature overflow float32 near 0")
    contrastive_labels: Literal["label", "pure"] = opt(
        "label", help="NT-Xent positives: same class (label) or only the same sample's other modalities (pure)")
    bottleneck_weight: float = opt(0.0, ge=0.0, help="lib: weight of the CEB term MSE(z, g(sg(prediction))) "
                                                     "(--lib; 1 for transformer runs); 0 turns it off")
    pretrain_epochs: int = opt(0, ge=0, help="epochs of unimodal cross-entropies only before MCR starts "
                                             "(the paper's --pre unimodal pre-training)")
    game_head: Literal["player", "frozen"] = opt(
        "player", help="the fusion head in the game: player (the release: a modality's head slice follows its "
                       "encoder; non-additive heads take part in every block) or frozen (only the encoders play)")
    unimodal_heads: Literal["separate", "fusion"] = opt(
        "separate", help="unimodal logits h_m: a head apart from the fusion head (the release's encoder "
                         "classifiers) or the fusion's per-modality logits (concat: its slice of the fused head)")


@dataclass(frozen=True)
class Block:
    """One group of N*B head rows: the modalities in ``permuted`` are permuted; only ``receiver``'s
    features stay live (None: all live); ``sign`` is its coefficient in L_MIPD / lambda."""

    receiver: str | None
    permuted: tuple[str, ...]
    sign: float


def permuted_sets(modalities: list[str], family: str) -> list[tuple[str, ...]]:
    """The sets S whose joint permutation is scored, in modality order, smallest first."""
    n = len(modalities)
    every = [s for k in range(1, n) for s in combinations(modalities, k)]
    return every if family == "all" else [s for s in every if len(s) in (1, n - 1)]


def game_blocks(modalities: list[str], sets: list[tuple[str, ...]], game: str) -> list[Block]:
    """The (receiver, set, sign) blocks of each game (module docstring)."""
    if game == "colab":
        return [Block(None, s, -1.0) for s in sets]
    blocks = []
    for r in modalities:
        for s in sets:
            own = r in s
            if own or game == "greedy":
                blocks.append(Block(r, s, -1.0 if own else 1.0))
    return blocks


def gradient_scales(modalities: list[str], sets: list[tuple[str, ...]],
                    blocks: list[Block]) -> tuple[list[list[float]], list[float]]:
    """Per set S: g[S][m] = sum of the signs of the blocks of S in which modality m is live (the
    coefficient of dJ_S/dz_m in the game's gradient), and c[S] = sum of the signs of all blocks of S
    (the coefficient of J_S's value, and of its gradient through the unpermuted prediction)."""
    g = [[sum(b.sign for b in blocks if b.permuted == s and b.receiver in (None, m)) for m in modalities]
         for s in sets]
    c = [sum(b.sign for b in blocks if b.permuted == s) for s in sets]
    return g, c


def jsd_rows(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (nats) between softmax(p) and softmax(q) per row, shapes broadcast."""
    lp = torch.log_softmax(p_logits.float().clamp(-LOGIT_CLAMP, LOGIT_CLAMP), dim=-1)
    lq = torch.log_softmax(q_logits.float().clamp(-LOGIT_CLAMP, LOGIT_CLAMP), dim=-1)
    p, q = lp.exp(), lq.exp()
    lm = ((p + q) / 2).clamp_min(PROB_FLOOR).log()
    return 0.5 * ((p * (lp - lm)).sum(-1) + (q * (lq - lm)).sum(-1))


def sup_ntxent(features: list[torch.Tensor], labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised NT-Xent over the stacked, normalised ``features`` (each (B, d)) with ``labels`` (M*B,)."""
    z = F.normalize(torch.cat([f.float() for f in features]), dim=-1)
    s = z @ z.T / temperature
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & ~eye
    neg_lse = s.masked_fill(same, float("-inf")).logsumexp(dim=1, keepdim=True)
    # -log(e^s_ap / (e^s_ap + sum_n e^s_an)) = softplus(logsumexp_n s_an - s_ap); 0 when no negatives
    pair_loss = F.softplus(neg_lse - s)
    return (pair_loss * positive).sum() / positive.sum().clamp_min(1)


def set_name(s: tuple[str, ...]) -> str:
    return "+".join(s)


class CEBDecoder(nn.Module):
    """g: the prediction's logits -> the concatenated features (the release's ``fc_yz``)."""

    def __init__(self, n_classes: int, hidden: int, out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_classes, hidden, bias=False), nn.ReLU(),
                                 nn.Linear(hidden, out, bias=False))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.net(logits)


@dataclass
class GameResult:
    loss: torch.Tensor                 # L_MIPD: lambda * sum_S c_S J_S in value, the game's gradient
    j_sets: torch.Tensor               # (n_sets,) detached J per permuted set
    acc_sets: torch.Tensor             # (n_sets,) fused accuracy with the set permuted
    reference: torch.Tensor            # (B, C) detached: the unpermuted prediction the J compare with
    head_rows: int


@METHODS.register("mcr", config=MCRConfig,
                  help="Multimodal Competition Regularizer: latent-permutation JSD game + SupCon + CEB (Kontras et al. 2025)",
                  paper="Kontras, Strypsteen, Chatzichristos, Liang, Blaschko, De Vos: Multimodal Competition "
                        "Regularizer, NeurIPS 2025 (arXiv 2411.07335)",
                  optimizer="adam",
                  cost="1F + 1B + the game: N x sets permuted copies of the B x C logit contributions and their "
                       "JSD (additive heads; other heads: N x sets fusion-head passes) + NT-Xent over 2B rows + M "
                       "unimodal heads",
                  live={"coef/<m>": "game weight lambda on modality m (0 during pre-training)",
                        "score/<m>": "permutation importance: fused accuracy with m's features permuted over the "
                                     "unpermuted accuracy (lower: m matters more)",
                        "method/J_<set>": "JSD between the fused prediction and the prediction with the set's "
                                          "features permuted",
                        "method/mipd": "the latent-permutation game's loss L_MIPD",
                        "method/contrastive": "supervised NT-Xent term L_Con",
                        "method/bottleneck": "conditional-entropy bottleneck term L_CEB",
                        "method/ce_fused": "fused cross-entropy",
                        "method/ce_<m>": "modality m's unimodal cross-entropy"},
                  tune={"game_weight": (0.001, 0.01), "unimodal_weight": (1.0,)})
class MCR(Method):
    """See the module docstring."""

    trains_modality_heads = True   # the unimodal cross-entropies train every logits[m] (module docstring)

    def __init__(self, cfg: MCRConfig, ctx):
        super().__init__(cfg, ctx)
        mods = list(ctx.modalities)
        self.require_modalities("regularises the competition between modalities")
        self.sets = permuted_sets(mods, cfg.permuted_sets)
        self.blocks = game_blocks(mods, self.sets, cfg.game)
        g, c = gradient_scales(mods, self.sets, self.blocks)
        self.set_coefficients = c                                    # c_S as Python numbers
        self.feature_scale = torch.tensor(g, device=ctx.device)     # (n_sets, M)
        self.value_scale = torch.tensor(c, device=ctx.device)       # (n_sets,)
        rest = {m: tuple(o for o in mods if o != m) for m in mods}
        self.rest_index = {m: self.sets.index(rest[m]) for m in mods}
        self._rest_rows = torch.tensor([self.rest_index[m] for m in mods], device=ctx.device)
        self._zero = torch.zeros((), device=ctx.device)                      # constants of the live values
        self._lambda = torch.full((), cfg.game_weight, device=ctx.device)
        self.separate_heads = True   # whether the logits[m] are not part of the fused logits (set in setup)

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self, model):
        dims = {m: int(model.encoders[m].out_dim) for m in self.ctx.modalities}
        if self.cfg.contrastive_weight > 0 and len(set(dims.values())) > 1:
            sizes = ", ".join(f"{m} {d}" for m, d in dims.items())
            raise PresetError("method", [
                f"method.contrastive_weight: the contrastive term compares the modalities' features directly, so "
                f"every encoder must output the same size ({sizes}); set the encoders' dim equal or "
                f"method.contrastive_weight = 0"])
        additive = getattr(model.fusion, "additive", False)
        if additive and self.cfg.unimodal_heads == "separate":
            self.modules["unimodal"] = unimodal_heads(dims, self.ctx.n_classes)
        self.separate_heads = not additive or self.cfg.unimodal_heads == "separate"
        if self.cfg.bottleneck_weight > 0:
            self.modules["ceb"] = CEBDecoder(self.ctx.n_classes, max(dims.values()), sum(dims.values()))

    # -- the model's outputs with the unimodal heads ----------------------------------------------
    def unimodal_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        heads = self.modules["unimodal"]
        return {m: heads[m](features[m]) for m in self.ctx.modalities}

    def forward(self, model, x):
        out = model(x)
        if "unimodal" not in self.modules:
            return out
        return ModelOutput(fused=out.fused, logits=self.unimodal_logits(out.features), features=out.features)

    def head(self, model, features):
        fused, logits = model.head(features)
        if "unimodal" in self.modules:
            logits = self.unimodal_logits(features)
        return fused, logits

    # -- schedule -------------------------------------------------------------------------------
    def pretraining(self, epoch: int) -> bool:
        return epoch < self.cfg.pretrain_epochs

    def on_epoch_start(self, epoch, model):
        if self.cfg.pretrain_epochs == 0:
            return []
        if epoch == 0:
            return [{"name": "stage", "stage": "pretrain"}]
        if epoch == self.cfg.pretrain_epochs:
            return [{"name": "stage", "stage": "mcr"}]
        return []

    # -- the loss -------------------------------------------------------------------------------
    def loss(self, out, y, step):
        mods = self.ctx.modalities
        ce_fused = F.cross_entropy(out.fused.float(), y)
        ce = mean_cross_entropies([out.logits[m] for m in mods], y)
        live = {"method/ce_fused": ce_fused.detach(),
                **dict(zip((f"method/ce_{m}" for m in mods), ce.detach().unbind()))}
        unimodal = ce.sum()
        if self.pretraining(step.epoch):
            live.update({f"coef/{m}": self._zero for m in mods})
            return unimodal, live
        loss = ce_fused + self.unimodal_term(step.model, out, y, unimodal)
        live.update({f"coef/{m}": self._lambda for m in mods})
        features, fused, y_all = out.features, out.fused, y
        if collectives.is_distributed() and (self.cfg.game_weight > 0 or self.cfg.contrastive_weight > 0):
            features = {m: collectives.gather_rows(z) for m, z in out.features.items()}
            fused, y_all = collectives.gather_rows(out.fused), collectives.gather_rows(y)
        if self.cfg.game_weight > 0:
            with step.autocast():
                perms = self.draw_permutations(y_all.shape[0], y.device)
                game = self.game(step.model, features, fused, perms, y_all)
            loss = loss + collectives.global_batch_term(game.loss)
            live.update(self.game_live(game, y_all))
        if self.cfg.contrastive_weight > 0:
            con = self.contrastive(features, y_all)
            loss = loss + self.cfg.contrastive_weight * collectives.global_batch_term(con)
            live["method/contrastive"] = con.detach()
        if self.cfg.bottleneck_weight > 0:
            ceb = self.bottleneck(out.features, out.fused)
            loss = loss + self.cfg.bottleneck_weight * ceb
            live["method/bottleneck"] = ceb.detach()
        return loss, live

    def unimodal_term(self, model, out: ModelOutput, y: torch.Tensor, unimodal: torch.Tensor) -> torch.Tensor:
        """w_u * sum_m CE(h_m(z_m), y); with w_u = 0 and separate heads, the heads' cross-entropies on detached
        features (the heads still learn, the encoders get nothing from them)."""
        if self.cfg.unimodal_weight > 0 or not self.separate_heads:
            return self.cfg.unimodal_weight * unimodal
        detached = {m: z.detach() for m, z in out.features.items()}
        logits = self.head(model, detached)[1]
        return torch.stack([F.cross_entropy(logits[m].float(), y) for m in self.ctx.modalities]).sum()

    # -- L_MIPD ---------------------------------------------------------------------------------
    def draw_permutations(self, batch: int, device: torch.device) -> torch.Tensor:
        """(M, N, B): N independent uniform permutations of the batch per modality, drawn on the device."""
        m, n = len(self.ctx.modalities), self.cfg.n_permutations
        return torch.rand(m, n, batch, device=device).argsort(dim=-1)

    def stacked_features(self, features: dict[str, torch.Tensor], perms: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each modality's features for every permuted set, (n_sets, N * B, d_m), permuted where the set
        holds the modality, repeated otherwise, their gradient multiplied by the game's g(m, S)."""
        scales = self.feature_scale.to(perms.device)
        stacked = {}
        for i, m in enumerate(self.ctx.modalities):
            rows = self.stacked_rows(m, features[m], perms[i])
            stacked[m] = with_gradient_scale(rows, scales[:, i, None, None].to(rows.dtype))
        return stacked

    def stacked_rows(self, m: str, z: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
        """(n_sets, N * B, ...): the B rows ``z`` of modality ``m`` for every permuted set, under its N
        permutations ``perms`` (N, B) where the set holds ``m``, repeated N times otherwise."""
        n, b = perms.shape
        permuted, repeated = permute_rows(z, perms), z.expand(n, *z.shape)
        return torch.stack([permuted if m in s else repeated for s in self.sets]).view(len(self.sets), n * b,
                                                                                           *z.shape[1:])

    def permuted_logits(self, fusion: nn.Module, features, perms, share: float) -> torch.Tensor:
        """The fused logits (n_sets, N * B, C) of every permuted set, routed as ``game_head`` says; ``share``
        multiplies the head parameters' gradient (1 / world size: see :meth:`game`)."""
        n_sets = len(self.sets)
        flat = lambda rows: {m: r.reshape(-1, r.shape[-1]) for m, r in rows.items()}  # noqa: E731
        if getattr(fusion, "additive", False):
            # each modality's logit contribution (its head slice and bias share; frozen: a detached head)
            # carries g(m, S). The head is row-wise, so the contribution of permuted features is the
            # permuted contribution: the head runs once on the B rows and only the (B, C) contributions
            # are permuted and stacked, not the (N * B, d_m) features
            scale = share if self.cfg.game_head == "player" else 0.0
            _, parts = functional_call(fusion, head_parameters(fusion, scale), (features,))
            stacked = torch.stack([self.stacked_rows(m, parts[m], perms[i])
                                   for i, m in enumerate(self.ctx.modalities)])   # (M, n_sets, N * B, C)
            scales = self.feature_scale.to(perms.device).T[:, :, None, None].to(stacked.dtype)  # (M, n_sets, 1, 1)
            return with_gradient_scale(stacked, scales).sum(0)
        stacked = self.stacked_features(features, perms)
        if self.cfg.game_head == "frozen" or all(c == 0 for c in self.set_coefficients):
            logits, _ = functional_call(fusion, head_parameters(fusion, 0.0), (flat(stacked),))
            return logits.view(n_sets, -1, logits.shape[-1])
        # a non-additive head in every block: its parameters carry c_S, one head call per set
        return torch.stack([functional_call(fusion, head_parameters(fusion, c * share),
                                            ({m: r[k] for m, r in stacked.items()},))[0]
                            for k, c in enumerate(self.set_coefficients)])

    def game(self, model, features, fused, perms, y) -> GameResult:
        """L_MIPD and its per-set J values and accuracies (module docstring: routing, dropout)."""
        n_sets, (n, b) = len(self.sets), perms.shape[1:]
        fusion = model.fusion
        # in a multi-process run every rank evaluates the head on the whole (gathered) batch, so the head
        # parameters' gradient is already the global one on each rank: 1 / world size undoes the factor
        # of dist.global_batch_term, which is meant for gradients that reach only this rank's rows
        share = 1.0 / collectives.world_size()
        recompute = has_active_dropout(fusion)
        with dropout_off(fusion):
            if recompute:  # the reference without dropout, like the permuted predictions
                fused = functional_call(fusion, head_parameters(fusion, share), (features,))[0]
            logits = self.permuted_logits(fusion, features, perms, share).view(n_sets, n, b, -1)
        c = self.value_scale.to(logits.device)
        if self.cfg.reference_gradient:
            reference = with_gradient_scale(fused, c[:, None, None, None].to(fused.dtype))
        else:
            reference = fused.detach()
        j = jsd_rows(logits, reference).mean(dim=(1, 2))
        loss = self.cfg.game_weight * ((j - j.detach()).sum() + (c * j.detach()).sum())
        with torch.no_grad():
            acc = (logits.argmax(-1) == y).float().mean(dim=(1, 2))
        return GameResult(loss, j.detach(), acc, fused.detach(), n_sets * n * b)

    def game_live(self, game: GameResult, y: torch.Tensor) -> dict[str, torch.Tensor]:
        live = dict(zip((f"method/J_{set_name(s)}" for s in self.sets), game.j_sets.unbind()))
        live["method/mipd"] = game.loss.detach()
        acc = (game.reference.argmax(-1) == y).float().mean()
        safe = torch.where(acc > 0, acc, torch.ones_like(acc))
        scores = torch.where(acc > 0, game.acc_sets.index_select(0, self._rest_rows) / safe, torch.ones_like(acc))
        live.update(zip((f"score/{m}" for m in self.rest_index), scores.unbind()))
        return live

    # -- L_Con and L_CEB ------------------------------------------------------------------------
    def contrastive(self, features: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        mods = self.ctx.modalities
        base = y if self.cfg.contrastive_labels == "label" else torch.arange(len(y), device=y.device)
        return sup_ntxent([features[m] for m in mods], base.repeat(len(mods)), self.cfg.temperature)

    def bottleneck(self, features: dict[str, torch.Tensor], fused: torch.Tensor) -> torch.Tensor:
        target = torch.cat([features[m].float() for m in self.ctx.modalities], dim=-1)
        return F.mse_loss(target, self.modules["ceb"](fused.detach().float()))

    # -- description ----------------------------------------------------------------------------
    @classmethod
    def live_names(cls, modalities):
        mods = list(modalities)
        sets = permuted_sets(mods, "one_or_rest")
        return ([f"coef/{m}" for m in mods] + [f"score/{m}" for m in mods]
                + [f"method/J_{set_name(s)}" for s in sets]
                + ["method/mipd", "method/contrastive", "method/bottleneck", "method/ce_fused"]
                + [f"method/ce_{m}" for m in mods])
