"""Options of the live imbalance / information monitors: the preset's ``[monitor]`` table.

Every monitor is on by default; each can be switched off on its own and ``enabled = false`` turns
them all off. The estimators are described in :mod:`engine.monitor` and in their modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..schema import opt

MAX_SHAPLEY_MODALITIES = 6


@dataclass(frozen=True)
class MonitorConfig:
    """The preset table ``[monitor]``: which estimators run and how (see :mod:`engine.monitor`)."""

    enabled: bool = opt(True, help="master switch: false turns every monitor off")
    mi: bool = opt(True, help="task information mi/<m>: H(Y) minus the cross-entropy of the modality's own "
                              "logits or of an online linear probe (the tighter bound)")
    cmi: bool = opt(True, help="unique task information cmi/<m>: change of the fused prediction when modality "
                               "m's features are permuted (among neighbours in the other modalities)")
    pairwise: bool = opt(True, help="information between modalities mi/<a>;<b>: InfoNCE bound with an online critic")
    shapley: bool = opt(True, help="exact Shapley value of accuracy per modality shapley/<m>, and imbalance")
    grad: bool = opt(True, help="per-encoder gradient norms grad/<m> every logging interval")

    update_every: int = opt(5, ge=1, help="train the online probes and critics every this many steps")
    probe_lr: float = opt(1e-2, gt=0, help="Adam learning rate of the online linear probes")
    critic_hidden: int = opt(128, ge=1, help="hidden width of each modality's InfoNCE critic network")
    critic_embed: int = opt(32, ge=1, help="embedding width of the separable InfoNCE critic")
    critic_lr: float = opt(1e-3, gt=0, help="Adam learning rate of the InfoNCE critics")
    critic_batch: int = opt(256, ge=2, help="at most this many rows of a training batch train the critics")

    cmi_permutations: int = opt(16, ge=1, help="permuted copies of a modality's features per row for cmi/<m> "
                                               "(more: less upward bias, more head rows)")
    cmi_conditional: bool = opt(True, help="draw the replacement features from the row's nearest neighbours in "
                                           "the other modalities' features (false: any row, as MCR's plain "
                                           "permutation, which counts redundant information as unique)")
    shapley_fill: Literal["zero", "mean"] = opt("zero", help="features given to absent modalities: zeros "
                                                             "(BalanceBenchmark) or the split's mean feature")
    shapley_max_modalities: int = opt(MAX_SHAPLEY_MODALITIES, ge=2, le=MAX_SHAPLEY_MODALITIES,
                                      help="exact Shapley values (2^M coalitions) up to this many modalities; "
                                           "above, sampled (shapley_permutations) or skipped")
    shapley_permutations: int = opt(0, ge=0, le=65536,
                                    help="above shapley_max_modalities: estimate the Shapley values from this many "
                                         "random orders of the modalities (error <= 2.72/sqrt(K) at 95%); 0 skips them")
    eval_time_budget: float = opt(0.0, ge=0.0, help="seconds the evaluation-time monitors may take per evaluation: "
                                                    "their rows shrink (never below 256) to fit, so their values "
                                                    "depend on the machine's speed; 0: no limit (deterministic)")
    max_overhead: float = opt(0.05, ge=0.0, le=1.0,
                              help="the monitors' updates and evaluations run only while each kind's time is at most "
                                   "half this fraction of the rest of the run's (the first of each always runs), so "
                                   "which epochs carry their values depends on the machine's speed; 0: every "
                                   "one, reproducible (off in multi-process runs)")
    eval_max_samples: int = opt(4096, ge=16, help="evaluation rows scored by the probes and critics (an evenly "
                                                  "spaced subset when the split is larger)")
    eval_head_rows: int = opt(65536, ge=1024, help="rows the head runs on per evaluation over all permuted copies "
                                                   "and coalitions, at most per call; cmi and shapley use an evenly "
                                                   "spaced subset of the split small enough to fit (256 rows at least)")
    seed: int = opt(0, ge=0, help="seed of the monitors' own random numbers (never the training RNG)")
