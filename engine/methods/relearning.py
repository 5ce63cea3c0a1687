"""``relearning``: Diagnosing & Re-learning (Wei, Li, Feng, Hu, "Diagnosing and Re-learning for Balanced
Multimodal Learning", ECCV 2024; release GeWu-Lab/Diagnosing_Relearning_ECCV2024 ``code/ours.py``; BalanceMM
"Relearning").

Instead of comparing modalities' performances, the method diagnoses each modality's *own* learning state
from the separability of its representation space and softly re-initialises its encoder accordingly: a
well-learnt (or over-fitted) modality is pulled back towards its initial weights more, so it stops
dominating and re-learns, while a worse-learnt one keeps most of what it has. The training loss is the
plain fused cross-entropy; the method acts only at epoch boundaries (:meth:`Relearning.on_epoch_end`):

1. **When**: after every ``reinit_epoch`` completed epochs, at most ``reinit_num`` times, i.e. at the end of
   the 0-based epochs e with (e + 1) % reinit_epoch == 0 and (e + 1) / reinit_epoch <= reinit_num. The
   schedule is a function of the epoch alone, so a resumed or extended run re-initialises at the same
   epochs as a planned one (also after the last planned epoch when it falls on the schedule: the
   selected checkpoint is captured before, and an extended run must see the same weights).
2. **Features**: every modality's encoder features z_m over the whole training split D and the whole
   validation split V, in eval mode, in one no-grad pass per split (``ctx.data.eval_batches``), kept on
   the device (N x d_m; no host copy).
3. **Clustering**: per modality and split, min-max scaling of every feature column to [-1, 1] (the
   release's ``MinMaxScaler(feature_range=(-1, 1))``; a constant column becomes -1 as there), then
   k-means with k = number of classes (:func:`kmeans`: ``kmeans_restarts`` runs batched on the device,
   k-means++ seeding, Lloyd iterations until no label changes or ``kmeans_iters``, the lowest-inertia run
   kept).
4. **Purity** P = (1/N) sum over clusters of the count of the cluster's majority class (:func:`purity`;
   the release's ``purity_score``), P_D^m on the training split and P_V^m on the validation split.
5. **Strength**: g^m = |P_D^m - P_V^m| (the learning-state gap: a modality that separates its training
   rows much better than unseen rows has been learnt well, or over-fitted), alpha^m = tanh(lambda g^m)
   with lambda = ``move_lambda`` (paper and release: 3).
6. **Soft re-initialisation**: theta^m <- alpha^m theta^m_init + (1 - alpha^m) theta^m for every parameter
   of modality m's encoder, where theta^m_init are the encoder's weights when the method was set up (the
   release saves them to ``init_para.pkl`` before training; here they are in the method's state). The
   fusion head, the mid-fusion modules and the encoders' buffers (BatchNorm running statistics) are
   left as they are (the paper re-initialises the uni-modal encoders' parameters; the release iterates
   ``named_parameters``). The optimiser's state (momentum, Adam moments) is kept, as in the release.

**Any number of modalities.** Nothing in the rule compares modalities: every modality's strength comes
from its own purity gap (the paper's CMU-MOSI experiments use three), so M >= 2 needs no generalisation.

Deviations from the release, on purpose:

* The release re-initialises after the 0-based epochs 20, 40, 60 (``epoch % reinit_epoch == 0 and
  epoch > 0``), i.e. after 21, 41 and 61 completed epochs; here after 20, 40 and 60 completed epochs, the
  schedule as the method is described ("every reinit_epoch epochs").
* sklearn's ``KMeans(random_state=0)`` on the host is replaced by :func:`kmeans` on the device: plain
  (not greedy) k-means++ seeding drawn from a torch generator seeded with the run seed and the epoch (so
  the diagnosis is reproducible and resume-exact without generator state), Lloyd iterations until no
  label changes (at most ``kmeans_iters``) instead of sklearn's tolerance on the centre shift (at most
  300), and an empty cluster keeps its previous centre instead of being moved to a far point.
  ``kmeans_restarts`` 10 is sklearn's ``n_init`` before version 1.4 (since then 1 for k-means++).
* In a multi-process run every rank diagnoses the whole splits, and rank 0's strengths are broadcast
  so the encoders stay identical everywhere.

The release's defaults are the option defaults: ``move_lambda`` 3, ``reinit_epoch`` 20, ``reinit_num`` 3
(of 90 epochs; BalanceMM uses 15 and 2), SGD with momentum 0.9 and weight decay 1e-4 (lr 2e-3). A run
shorter than ``reinit_epoch`` epochs never re-initialises: set ``reinit_epoch`` for the schedule (the
preset ``presets/avdigits_hard_relearning.toml`` re-initialises after epochs 3, 6 and 9 of 15).

Live values per step (0-d device tensors): ``coef/<m>`` (alpha^m of the last re-initialisation, 0 before
the first) and, once diagnosed, ``score/<m>`` (the last training-split purity P_D^m). Per epoch (logged
with validation, from the first diagnosis on): ``score/<m>``, ``coef/<m>``, ``method/purity_val/<m>``
(P_V^m), ``method/gap/<m>`` (g^m) and ``method/reinits`` (re-initialisations so far). Each
re-initialisation is a ``reinit`` event with every modality's alpha and purities.
Cost vs ``joint``: none per step; per re-initialisation one no-grad encoder pass over the training and
validation splits and 2 M k-means runs of restarts x iterations x N x k distances.

Declared sensitive for ``mmbal advise`` (the registration's ``tune``): ``move_lambda`` 1.5 and 6 (ours, half
and double the paper's 3, its only value in our sources) and ``reinit_epoch`` 15 (BalanceMM, beside the
release's 20).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..collectives import broadcast_tensors
from ..errors import PresetError
from ..schema import opt
from . import METHODS
from .base import Method


@dataclass(frozen=True)
class RelearningConfig:
    move_lambda: float = opt(3.0, ge=0.0, help="lambda in alpha_m = tanh(lambda |P_train - P_val|), the "
                                               "re-initialisation strength from the purity gap (paper and release 3)")
    reinit_epoch: int = opt(20, ge=1, help="diagnose and re-initialise after every reinit_epoch completed epochs "
                                           "(release 20 of 90; BalanceMM 15)")
    reinit_num: int = opt(3, ge=0, help="at most this many re-initialisations (release 3; BalanceMM 2)")
    kmeans_iters: int = opt(100, ge=1, help="at most this many Lloyd iterations per k-means run (each stops once "
                                            "no label changes; sklearn: at most 300)")
    kmeans_restarts: int = opt(10, ge=1, help="k-means runs per clustering, the lowest inertia kept (sklearn's "
                                              "n_init: 10 before version 1.4)")


# -- the algorithm's pieces (pure functions, tested on known values) ----------------------------------
def min_max_scale(z: torch.Tensor) -> torch.Tensor:
    """Every column of ``z`` (N, d) mapped linearly onto [-1, 1] (sklearn's ``MinMaxScaler((-1, 1))``; a
    constant column becomes -1)."""
    lo, hi = z.amin(0), z.amax(0)
    span = hi - lo
    span = torch.where(span > 0, span, torch.ones_like(span))
    return (z - lo) / span * 2.0 - 1.0


def _rows(restarts: int, k: int) -> int:
    """Rows per block of the (restarts x rows x k) distance tensor: at most 2^24 entries."""
    return max(1, (1 << 24) // max(restarts * k, 1))


def assign(z: torch.Tensor, centres: torch.Tensor, z2: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For every run r and row i the nearest of the run's centres and its squared distance: ``z`` (N, d),
    ``centres`` (R, k, d) -> labels (R, N), squared distances (R, N); batched matrix products in row blocks."""
    z2 = (z * z).sum(1) if z2 is None else z2
    c2 = (centres * centres).sum(-1)                   # (R, k)
    ct = centres.transpose(1, 2)                       # (R, d, k)
    labels, dist = [], []
    step = _rows(centres.shape[0], centres.shape[1])
    for i in range(0, z.shape[0], step):
        d = (z2[None, i:i + step, None] - 2.0 * torch.matmul(z[i:i + step], ct) + c2[:, None, :]).clamp_min(0.0)
        best, which = d.min(-1)
        labels.append(which)
        dist.append(best)
    return torch.cat(labels, 1), torch.cat(dist, 1)


def cluster_means(z: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Every run's cluster means (R, k, d) from its labels (R, N); an empty cluster keeps its centre.
    One-hot products in row blocks (deterministic on every device, unlike an atomic ``index_add_``)."""
    r, k, _ = centres.shape
    sums = torch.zeros_like(centres)
    counts = torch.zeros(r, k, dtype=z.dtype, device=z.device)
    step = _rows(r, k)
    for i in range(0, z.shape[0], step):
        onehot = F.one_hot(labels[:, i:i + step], k).to(z.dtype)     # (R, rows, k)
        sums += torch.matmul(onehot.transpose(1, 2), z[i:i + step])
        counts += onehot.sum(1)
    return torch.where(counts[..., None] > 0, sums / counts.clamp_min(1.0)[..., None], centres)


def kmeans_pp(z: torch.Tensor, k: int, restarts: int, generator: torch.Generator,
              z2: torch.Tensor | None = None) -> torch.Tensor:
    """k-means++ seeding of ``restarts`` independent runs at once, (R, k, d): each run's first centre a
    uniform row, each next one a row drawn with probability proportional to its squared distance to the
    run's nearest centre so far (uniformly if every row sits on a centre)."""
    n = z.shape[0]
    z2 = (z * z).sum(1) if z2 is None else z2
    pick = torch.randint(n, (restarts,), generator=generator, device=z.device)
    centres = [z[pick].unsqueeze(1)]                   # (R, 1, d)
    d2 = assign(z, centres[0], z2)[1]                  # (R, N)
    for _ in range(1, k):
        weights = torch.where(d2.sum(1, keepdim=True) > 0, d2, torch.ones_like(d2))
        pick = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        centre = z[pick].unsqueeze(1)
        centres.append(centre)
        d2 = torch.minimum(d2, assign(z, centre, z2)[1])
    return torch.cat(centres, 1)


def lloyd(z: torch.Tensor, centres: torch.Tensor, iters: int,
          z2: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's iterations from ``centres`` (R, k, d), all runs at once: the final labels (R, N) and each run's
    inertia (R,), the sum of squared distances to its centres. At most ``iters`` iterations; it stops as soon
    as no label changes in any run (one host read per iteration), after which further iterations would
    change nothing, so the result is that of exactly ``iters`` iterations."""
    z2 = (z * z).sum(1) if z2 is None else z2
    labels = assign(z, centres, z2)[0]
    for _ in range(iters):
        centres = cluster_means(z, labels, centres)
        new = assign(z, centres, z2)[0]
        if torch.equal(new, labels):
            break
        labels = new
    labels, d2 = assign(z, centres, z2)
    return labels, d2.sum(1)


def kmeans(z: torch.Tensor, k: int, iters: int, restarts: int,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster labels (N,) of the lowest-inertia of ``restarts`` k-means runs (k-means++ seeding, at most
    ``iters`` Lloyd iterations each, all runs batched) and that inertia (0-d)."""
    z = z.float()
    z2 = (z * z).sum(1)
    labels, inertia = lloyd(z, kmeans_pp(z, k, restarts, generator, z2), iters, z2)
    best = inertia.argmin()
    return labels[best], inertia[best]


def purity(clusters: torch.Tensor, y: torch.Tensor, k: int, n_classes: int) -> torch.Tensor:
    """(1/N) sum over clusters of the count of its most frequent class (0-d float)."""
    table = torch.bincount(clusters * n_classes + y, minlength=k * n_classes).view(k, n_classes)
    return table.amax(1).sum().float() / max(y.numel(), 1)


def strengths(purity_train: torch.Tensor, purity_val: torch.Tensor, move_lambda: float) -> torch.Tensor:
    """alpha = tanh(lambda |P_train - P_val|), elementwise."""
    return torch.tanh(move_lambda * (purity_train - purity_val).abs())


# -- the method ---------------------------------------------------------------------------------------
@METHODS.register("relearning", config=RelearningConfig,
                  help="diagnosing & re-learning: every reinit_epoch epochs, k-means purity gap between training "
                       "and validation features gives each encoder a soft re-initialisation towards its initial "
                       "weights (Wei et al. 2024)",
                  paper="Wei, Li, Feng, Hu: Diagnosing and Re-learning for Balanced Multimodal Learning, ECCV 2024",
                  optimizer="sgd",
                  cost="1F + 1B; every reinit_epoch epochs a no-grad encoder pass over train + val and 2M k-means "
                       "runs on the device",
                  live={"coef/<m>": "re-initialisation strength alpha_m = tanh(lambda |P_train - P_val|) of the last "
                                    "re-initialisation (theta_m <- alpha_m theta_init + (1 - alpha_m) theta_m); 0 "
                                    "before the first",
                        "score/<m>": "k-means purity of modality m's encoder features on the training split at the "
                                     "last diagnosis (k = number of classes)",
                        "method/purity_val/<m>": "k-means purity of modality m's features on the validation split "
                                                 "at the last diagnosis",
                        "method/gap/<m>": "learning-state gap |P_train - P_val| of modality m at the last diagnosis",
                        "method/reinits": "re-initialisations so far",
                        "method/head_ce": "cross-entropy training the per-modality heads on detached features "
                                          "(non-additive fusions)"},
                  tune={"move_lambda": (1.5, 6.0), "reinit_epoch": (15,)})
class Relearning(Method):
    """Diagnosing & Re-learning; see the module docstring."""

    def __init__(self, cfg: RelearningConfig, ctx):
        super().__init__(cfg, ctx)
        mods = ctx.modalities
        self.require_modalities("balances the modalities of a multimodal model")
        if ctx.data is not None and ctx.data.split_size("val") == 0:
            raise PresetError("method", ["method.name: relearning diagnoses each modality by the purity gap between "
                                         "the training and the validation split, and this dataset has no "
                                         "validation rows; give it a validation split"])
        self.init: dict[str, list[torch.Tensor]] = {}   # modality -> its encoder's initial parameters
        zeros = torch.zeros(len(mods), device=ctx.device)
        self.alpha = zeros.clone()          # strengths of the last re-initialisation
        self.purity_train = zeros.clone()   # purities of the last diagnosis
        self.purity_val = zeros.clone()
        self.reinits = 0

    def setup(self, model):
        self.init = {m: [p.detach().clone() for p in model.encoder_parameters(m)] for m in self.ctx.modalities}

    # -- one step: the fused cross-entropy; the live values of the last diagnosis -------------------
    def loss(self, out, y, step):
        live = {f"coef/{m}": self.alpha[i] for i, m in enumerate(self.ctx.modalities)}
        if self.reinits:
            live.update({f"score/{m}": self.purity_train[i] for i, m in enumerate(self.ctx.modalities)})
        return F.cross_entropy(out.fused.float(), y), live

    # -- per epoch ------------------------------------------------------------------------------
    def scheduled(self, epoch: int) -> bool:
        """Whether the end of 0-based ``epoch`` is a re-initialisation (every reinit_epoch, reinit_num times)."""
        done, every = epoch + 1, self.cfg.reinit_epoch
        return done % every == 0 and done // every <= self.cfg.reinit_num

    def on_epoch_end(self, epoch, model, val):
        if not self.scheduled(epoch):
            return []
        self.purity_train, self.purity_val = self.diagnose(model, epoch)
        self.alpha = strengths(self.purity_train, self.purity_val, self.cfg.move_lambda)
        stats = torch.stack([self.alpha, self.purity_train, self.purity_val])
        broadcast_tensors([stats])   # rank 0's strengths everywhere (no-op in one process)
        self.alpha, self.purity_train, self.purity_val = stats.unbind()
        self.reinitialise(model, self.alpha)
        self.reinits += 1
        event = {"name": "reinit", "reinit": self.reinits}
        host = stats.tolist()   # once per re-initialisation
        for i, m in enumerate(self.ctx.modalities):
            event[f"alpha_{m}"] = host[0][i]
            event[f"purity_train_{m}"] = host[1][i]
            event[f"purity_val_{m}"] = host[2][i]
        return [event]

    @torch.no_grad()
    def features(self, model, split: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Every row's encoder features (eval mode, float32, on the device) and labels of ``split``."""
        was_training = model.training
        model.eval()
        parts: dict[str, list[torch.Tensor]] = {m: [] for m in self.ctx.modalities}
        labels = []
        for x, y in self.ctx.data.eval_batches(split, self.ctx.eval_batch_size):
            z = model.encode(x)
            for m in self.ctx.modalities:
                parts[m].append(z[m].float().flatten(1))
            labels.append(y)
        model.train(was_training)
        return {m: torch.cat(v) for m, v in parts.items()}, torch.cat(labels)

    @torch.no_grad()
    def diagnose(self, model, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(P_train, P_val), (M,) each: k-means purity of every modality's min-max-scaled features per split.
        The k-means seeding is drawn from a generator seeded with the run seed and the epoch."""
        k = self.ctx.n_classes
        generator = torch.Generator(device=self.ctx.device)
        generator.manual_seed(self.ctx.seed * 1_000_003 + epoch)
        result = []
        for split in ("train", "val"):
            z, y = self.features(model, split)
            result.append(torch.stack([
                purity(kmeans(min_max_scale(z[m]), k, self.cfg.kmeans_iters, self.cfg.kmeans_restarts,
                              generator)[0], y, k, k)
                for m in self.ctx.modalities]))
        return result[0], result[1]

    @torch.no_grad()
    def reinitialise(self, model, alpha: torch.Tensor) -> None:
        """theta <- alpha_m theta_init + (1 - alpha_m) theta for every parameter of every encoder m."""
        for i, m in enumerate(self.ctx.modalities):
            a = alpha[i]
            for p, p0 in zip(model.encoder_parameters(m), self.init[m]):
                p.copy_(a * p0 + (1.0 - a) * p)

    def epoch_values(self):
        if not self.reinits:
            return {}
        values: dict = {"method/reinits": float(self.reinits)}
        for i, m in enumerate(self.ctx.modalities):
            values[f"score/{m}"] = self.purity_train[i]
            values[f"coef/{m}"] = self.alpha[i]
            values[f"method/purity_val/{m}"] = self.purity_val[i]
            values[f"method/gap/{m}"] = (self.purity_train[i] - self.purity_val[i]).abs()
        return values

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        state = super().state_dict()
        state["init"] = {m: [p.clone() for p in ps] for m, ps in self.init.items()}
        state["alpha"] = self.alpha.clone()
        state["purity_train"] = self.purity_train.clone()
        state["purity_val"] = self.purity_val.clone()
        state["reinits"] = self.reinits
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        device = self.ctx.device
        self.init = {m: [p.to(device) for p in ps] for m, ps in state["init"].items()}
        self.alpha = state["alpha"].to(device)
        self.purity_train = state["purity_train"].to(device)
        self.purity_val = state["purity_val"].to(device)
        self.reinits = int(state["reinits"])
