"""Small statistics for comparing runs over seeds, without scipy.

The two-sided p-value of Student's t with ``df`` degrees of freedom is
``I_{df/(df+t^2)}(df/2, 1/2)`` (Abramowitz & Stegun 26.7.1 with 26.5.27), with the regularised
incomplete beta function evaluated by the continued fraction of Numerical Recipes 6.4. When all
paired differences are equal the p-value is 0 (nonzero difference) or 1 (zero difference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MARKS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); std is None for fewer than 2 values."""
    n = len(values)
    if n == 0:
        return None, None
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (Numerical Recipes 6.4, modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


@dataclass(frozen=True)
class PairedTest:
    n: int
    mean_diff: float
    t: float | None
    p: float | None


def paired_t_test(a: list[float], b: list[float]) -> PairedTest:
    """Two-sided paired t-test of ``a - b`` (same length, paired by position); p None for n < 2."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    mean, sd = mean_std(diffs)
    if n < 2:
        return PairedTest(n, mean if mean is not None else math.nan, None, None)
    if sd == 0.0:
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        return PairedTest(n, mean, t, 1.0 if mean == 0.0 else 0.0)
    t = mean / (sd / math.sqrt(n))
    return PairedTest(n, mean, t, t_two_sided_p(t, n - 1))


def significance_mark(p: float | None) -> str:
    if p is None:
        return ""
    return next((mark for limit, mark in MARKS if p < limit), "")
