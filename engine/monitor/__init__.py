"""Live imbalance and information monitors, reported by every run whatever its method (their names
and when they are logged: ``docs/metrics.md``).

=====================  =========================================================  ======================
name                   estimator                                                  module
=====================  =========================================================  ======================
``mi/<m>``             I(Y; Z_m) >= H(Y) - CE of the modality's logits or an       :mod:`.probe`
                       online linear probe (nats)
``cmi/<m>``            I(Y; Z_m | Z_others) by (conditional) latent permutation,   :mod:`.permutation`
                       MCR's estimator made a log-ratio in nats
``mi/<a>;<b>``         InfoNCE lower bound with an online separable critic         :mod:`.infonce`
                       (capped at log of the rows scored together)
``shapley/<m>``,       exact Shapley value of accuracy over modality coalitions    :mod:`.shapley`
``imbalance``          (BalanceBenchmark), and max - min of it
``grad/<m>``           L2 norm of encoder m's gradients                            :mod:`.gradnorm`
=====================  =========================================================  ======================

:class:`Monitors` (:mod:`.monitors`) combines them behind the trainer's calls; :class:`MonitorConfig`
is the preset's ``[monitor]`` table. Head passes over permuted copies and coalitions are batched
along the rows (:mod:`.passes`).
"""

from .config import MonitorConfig
from .gradnorm import encoder_grad_norms, grad_name
from .infonce import PairCritics, modality_pairs, pair_name
from .monitors import IMBALANCE, Monitors, cmi_name, mi_name, shapley_name
from .shapley import coalition_masks, shapley_matrix, shapley_values

__all__ = ["MonitorConfig", "Monitors", "IMBALANCE", "mi_name", "cmi_name", "shapley_name", "pair_name", "grad_name",
           "modality_pairs", "encoder_grad_norms", "PairCritics", "coalition_masks", "shapley_matrix",
           "shapley_values"]
