"""Which names can name a modality.

A modality's name is part of every metric about it (``val/acc/<m>``, ``coef/<m>``, ``mi/<a>;<b>``;
docs/metrics.md), so it must be non-empty, must not be ``fused`` (the fused model's own metrics) and must
not hold a separator of a metric name's parts. The preset's check (engine/config.py) and
``mmbal data import`` (engine/data/importer.py) both ask here.
"""

from __future__ import annotations

METRIC_SEPARATORS = ("/", ";")   # val/acc/<m>, mi/<a>;<b>


def modality_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a modality (None when it can): it appears inside metric names, so it must
    be non-empty, not ``fused`` (the fused model's own metrics, ``val/acc/fused``) and without the
    separators of a metric name's parts."""
    if not name:
        return "a modality needs a non-empty name"
    if name == "fused":
        return "'fused' is the fused model's name in every metric (val/acc/fused), so a modality of that name " \
               "would overwrite its figures"
    used = [c for c in METRIC_SEPARATORS if c in name]
    if used:
        return (f"'{name}' contains '{used[0]}', which separates the parts of metric names (val/acc/<m>, "
                f"mi/<a>;<b>)")
    return None
