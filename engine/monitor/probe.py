"""Task information per modality, ``mi/<m>``: a variational lower bound on I(Y; Z_m), in nats.

For any conditional distribution q(y | z),

    I(Y; Z) = H(Y) - H(Y | Z) >= H(Y) - E[-log q(Y | Z)]

because the cross-entropy of q upper-bounds the conditional entropy (Barber & Agakov, "The IM
algorithm", NeurIPS 2003; the "probe" reading of representations in e.g. Pimentel et al., ACL 2020).
The bound is tight when q is the true posterior, so a better q gives a tighter (larger) value. Two
q's are available for modality m, and the larger of their bounds is reported (the maximum of
valid lower bounds is a valid lower bound):

* the modality's own logits from the model (its unimodal head, or its slice of an additive head);
  these are trained only by some methods and fusions, and for an additive head they are one
  summand of the fused logits, not a calibrated classifier, so their bound is often loose;
* a linear probe ``Linear(d_m -> C)`` on the detached features, trained online by the monitors'
  own Adam optimiser (learning rate ``probe_lr``) every ``update_every`` steps. It starts at zero
  weights and bias log(prior), i.e. exactly the prior, whose bound is 0.

The reported value is clamped at 0 (the bound of the prior-only predictor), so it is never
negative. Biases: a lower bound, loose while the probe lags behind the features and for
information a linear probe cannot read; at evaluation it is computed on held-out rows, so it does
not reward over-fitting. The running training value is computed on each training batch before
the probe's step on it, but the model's own logits were fitted to those rows, so, like training
accuracy, it is optimistic. H(Y) is the empirical label entropy of the rows the cross-entropy is
averaged over (the training prior for the running training value).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PRIOR_FLOOR = 1e-8


def entropy(p: torch.Tensor) -> torch.Tensor:
    """H(p) in nats of a probability vector (0 log 0 = 0), as a 0-d tensor."""
    p = p.double()
    return -(p * p.clamp_min(PRIOR_FLOOR).log()).sum()


def label_entropy(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Empirical entropy of integer labels ``y`` (on their device; a scatter-add, because CUDA's
    ``bincount`` reads the largest label back to the host)."""
    counts = torch.zeros(n_classes, dtype=torch.float64, device=y.device)
    counts.scatter_add_(0, y, torch.ones_like(y, dtype=torch.float64))
    return entropy(counts / counts.sum().clamp_min(1))


def information_bound(h_y: torch.Tensor, cross_entropies: list[torch.Tensor]) -> torch.Tensor:
    """max(0, H(Y) - min CE): the tightest of the variational bounds (and of the prior's, 0)."""
    ce = torch.stack([c.double().reshape(()) for c in cross_entropies]).min()
    return (h_y.double() - ce).clamp_min(0.0)


def information_bounds(h_y: torch.Tensor, probe_ces: torch.Tensor, own_ces: torch.Tensor | None) -> torch.Tensor:
    """(M,) :func:`information_bound` of every modality at once from (M,) cross-entropies of the probes and,
    when given, of the modalities' own logits."""
    ce = probe_ces.double() if own_ces is None else torch.minimum(probe_ces.double(), own_ces.double())
    return (h_y.double() - ce).clamp_min(0.0)


def mean_cross_entropies(logits: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """(M,) mean cross-entropy of each of M logit tensors (each (B, C)) against ``y``: one batched call when
    they share a shape (the usual case), else one per tensor."""
    if len({tuple(z.shape) for z in logits}) > 1:
        return torch.stack([F.cross_entropy(z.float(), y) for z in logits])
    rows = F.cross_entropy(torch.stack(logits).float().flatten(0, 1), y.repeat(len(logits)), reduction="none")
    return rows.view(len(logits), -1).mean(1)


class LinearProbes(nn.Module):
    """One linear classifier per modality on detached features, initialised to the class prior
    (``class_prior``: probabilities or counts per class)."""

    def __init__(self, feature_dims: dict[str, int], class_prior: torch.Tensor):
        super().__init__()
        prior = class_prior.double().cpu()
        log_prior = (prior / prior.sum()).clamp_min(PRIOR_FLOOR).log().float()
        self.linears = nn.ModuleDict()
        for m, d in feature_dims.items():
            linear = nn.Linear(d, log_prior.numel())
            with torch.no_grad():
                linear.weight.zero_()
                linear.bias.copy_(log_prior)
            self.linears[m] = linear

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: lin(features[m].detach().float()) for m, lin in self.linears.items()}

    def cross_entropies(self, features: dict[str, torch.Tensor], y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean cross-entropy of each modality's probe on (features, y)."""
        return {m: F.cross_entropy(z, y) for m, z in self(features).items()}
