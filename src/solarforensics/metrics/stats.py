"""p-values kept in log space: empirical p-values, Fisher's combination, formatting, summaries."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

# Smallest positive double: the floor that keeps log10 p finite when a p-value underflows.
_TINY = math.ulp(0.0)
# Null values within this relative distance of the observed value count as ties (rounding, not chance).
_TIE_TOLERANCE = 1e-12


def log10_p(p: float, resolution: float | None = None) -> float:
    """log10 of a p-value, floored at `resolution` (default: the smallest positive double), so never -inf."""
    return math.log10(max(p, resolution if resolution is not None else _TINY))


def _finite_values(values) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        t = values.detach().to("cpu", torch.float64).reshape(-1)
    else:
        t = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float64)
    return t[~torch.isnan(t)]


def empirical_p(observed: float, null_values, greater: bool = True) -> float:
    """(1 + #{null at least as extreme}) / (B + 1), extreme = large if `greater` else small; NaN/None nulls dropped.
    Null values within 1e-12 (relative) of the observed one are ties and count."""
    null = _finite_values(null_values)
    slack = _TIE_TOLERANCE * abs(observed)
    hits = (null >= observed - slack) if greater else (null <= observed + slack)
    return (1 + int(hits.sum())) / (null.numel() + 1)


def _log_chi2_sf_even(x: float, dof: int) -> float:
    """Natural log of the chi-square survival function for even `dof`, exact: a Poisson(x/2) CDF at dof/2 - 1."""
    if x <= 0:
        return 0.0
    half = x / 2
    terms = [j * math.log(half) - math.lgamma(j + 1) for j in range(dof // 2)]
    top = max(terms)
    return -half + top + math.log(sum(math.exp(t - top) for t in terms))


def fisher_combine(pvalues: Iterable[float], *, log10: bool = False) -> tuple[float, float]:
    """Fisher's method over p-values of INDEPENDENT symmetries -> (p, log10 p), in log space: p may underflow to 0.0,
    log10 p stays finite. `log10=True`: the inputs are log10 p-values (for p below the double range)."""
    logs = [v * math.log(10) if log10 else math.log(max(v, _TINY)) for v in pvalues]
    if not logs:
        raise ValueError("fisher_combine needs at least one p-value")
    if any(v > 1e-12 or math.isnan(v) for v in logs):
        raise ValueError("p-values must lie in (0, 1]")
    statistic = -2.0 * sum(min(v, 0.0) for v in logs)
    log_p = _log_chi2_sf_even(statistic, 2 * len(logs))
    return math.exp(log_p), log_p / math.log(10)


def format_p(p: float | None, log10p: float | None = None, permutations: int | None = None) -> str:
    """`p = 0.0010 (1/1001)`, `p = 3.2e-07`, `p < 1e-300 (log10 p = -412.3)`: never prints a p of 0."""
    if p is None and log10p is None:
        return "p = n/a"
    lp = log10p if log10p is not None else log10_p(p)
    if lp < -300:
        return f"p < 1e-300 (log10 p = {lp:.1f})"
    value = p if p is not None and p > 0 else 10.0**lp
    text = f"p = {value:.4f}" if value >= 1e-4 else f"p = {value:.2g}"
    if permutations:
        hits = value * (permutations + 1)
        if abs(hits - round(hits)) < 1e-6 * max(hits, 1.0):
            text += f" ({round(hits)}/{permutations + 1})"
    return text


def summarize(values: Iterable[float | None]) -> dict:
    """mean, population std, min, max and n of the values that are not None or NaN (all None when n = 0)."""
    t = _finite_values(list(values))
    if not t.numel():
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": float(t.mean()),
        "std": float(t.std(correction=0)),
        "min": float(t.min()),
        "max": float(t.max()),
        "n": int(t.numel()),
    }
