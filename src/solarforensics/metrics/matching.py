"""Matching units of two models by linear assignment, and the null of a matching's rank correlation with the identity.

Under a symmetry that makes B's units exchangeable (expert order, MLP hidden units, residual dimensions of
independently initialised models), the matched order is a uniformly random permutation, so Spearman's rho of
(index in A, matched index in B) has the permutation distribution whatever the weights (Zhu et al., 2025).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

EXACT_MAX_UNITS = 9  # enumerate all n! orders up to here (362,880); the Student-t approximation beyond


@dataclass(frozen=True)
class RankTest:
    """Spearman's rho of a matching against the identity and its one-sided p-value (P[rho >= observed])."""

    rho: float | None
    p_value: float | None
    log10_p_value: float | None
    units: int
    method: str

    def as_dict(self) -> dict:
        return {"rho": self.rho, "p_value": self.p_value, "log10_p_value": self.log10_p_value,
                "units": self.units, "method": self.method}


def assign(similarity: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the assignment maximising total similarity (rectangular allowed: min(rows, cols) pairs)."""
    from scipy.optimize import linear_sum_assignment

    values = similarity.detach().to("cpu", torch.float64).numpy()
    values = np.where(np.isfinite(values), values, -1e9)  # undefined similarities are never preferred
    rows, cols = linear_sum_assignment(values, maximize=True)
    return rows, cols


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = np.arange(len(values))
    return ranks


@functools.lru_cache(maxsize=None)
def _exact_null(n: int) -> np.ndarray:
    """sum(i * pi(i)) over every permutation pi of n ranks, sorted (Spearman's rho is increasing in it)."""
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
    return np.sort(perms @ np.arange(n, dtype=np.int64))


def _log10_min_p(n: int) -> float:
    return -math.lgamma(n + 1) / math.log(10)  # one order of n! reaches rho = 1


def rank_test(index_a, index_b) -> RankTest:
    """Spearman's rho of matched pairs (index in A, index in B) and its one-sided p-value under exchangeable units."""
    a, b = np.asarray(index_a, dtype=np.int64), np.asarray(index_b, dtype=np.int64)
    n = len(a)
    if n < 3:
        return RankTest(None, None, None, n, "fewer than 3 matched units")
    ra, rb = _ranks(a), _ranks(b)
    mean = (n - 1) / 2
    rho = float(((ra - mean) * (rb - mean)).sum() / (n * (n * n - 1) / 12))
    if n <= EXACT_MAX_UNITS:
        null = _exact_null(n)
        observed = int((ra * rb).sum())
        hits = len(null) - int(np.searchsorted(null, observed, side="left"))
        p = hits / len(null)
        return RankTest(rho, p, math.log10(p), n, f"exact over all {len(null):,} orders")
    floor = _log10_min_p(n)
    if rho >= 1 - 1e-12:
        log10_p = floor
    else:
        statistic = rho * math.sqrt((n - 2) / max(1e-300, 1 - rho * rho))
        log10_p = float(max(_log_t_sf(statistic, n - 2) / math.log(10), floor))
    return RankTest(rho, 10.0**log10_p, log10_p, n, "Student-t approximation of the permutation null, floored at 1/n!")


def _log_t_sf(t: float, df: int) -> float:
    """Natural log of Student-t's survival function; beyond float range, the tail bound
    sf(t) <= f(t) (nu + t^2) / ((nu - 1) t), i.e. never smaller than the truth."""
    from scipy.special import gammaln
    from scipy.stats import t as student_t

    value = float(student_t.logsf(t, df))  # accurate while representable
    if math.isfinite(value) and value > -600:
        return value
    log_density_constant = gammaln((df + 1) / 2) - gammaln(df / 2) - 0.5 * math.log(df * math.pi)
    return float(log_density_constant - math.log(t) + math.log(df / (df - 1))
            - (df - 1) / 2 * math.log1p(t * t / df))
